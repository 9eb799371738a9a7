"""What each vLLM version does with GPU memory outside its share, the settings chosen for it, and what the memory
plan counts. vLLM is not installed here: the choice is a pure function of the version string, the environment and
vllm_options. The behaviours were read in vLLM's source (the 0.19.1 and 0.25.1 wheels): 0.19.1's V1 model runner
builds the logits of a step's prompt positions at once and its profiler leaves CUDA graphs out of the share unless
VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1; 0.25.1 (model runner V2) scores in chunks of 1024 and counts graphs."""

import json
from pathlib import Path

import pytest

from arc_submit.llm.engine import ModelSettings, VLLMSettings
from arc_submit.llm.memory import (ESTIMATE_GRAPHS, GIB, GRAPHS_OUTSIDE_GIB, PROMPT_LOGIT_BYTES, V1_MAX_BATCHED_TOKENS,
                                   MemoryPlanError, ModelShape, make_plan, vllm_behaviour)
from arc_submit.llm.vllm_engine import llm_kwargs

SHAPES = Path(__file__).parent / "data" / "model_shapes"
L4_FREE, H200_TOTAL = int(21.3 * GIB), int(139.8 * GIB)
NVARC = dict(max_model_len=8192, train_seq_len=8192, lora_rank=32)


def shape(name):
    return ModelShape.from_config(json.loads((SHAPES / f"{name}.json").read_text()))


def test_kaggle_stack_0_19_caps_the_step_and_has_graphs_counted():
    b = vllm_behaviour("0.19.1")
    assert not b.v2_runner
    assert b.engine_args == {"max_num_batched_tokens": V1_MAX_BATCHED_TOKENS}
    assert b.prompt_logit_positions == V1_MAX_BATCHED_TOKENS
    assert b.env == {ESTIMATE_GRAPHS: "1"} and not b.graphs_outside_share
    assert vllm_behaviour("0.19.1+cu128").engine_args == b.engine_args  # local version labels read the same


def test_current_stack_0_25_needs_no_setting():
    b = vllm_behaviour("0.25.1")
    assert b.v2_runner and b.prompt_logit_positions == 1024
    assert b.env == {} and b.engine_args == {} and not b.graphs_outside_share


def test_the_users_own_settings_win_and_are_counted():
    own_step = vllm_behaviour("0.19.1", options={"max_num_batched_tokens": 16384})
    assert own_step.engine_args == {} and own_step.prompt_logit_positions == 16384
    graphs_off = vllm_behaviour("0.19.1", environ={ESTIMATE_GRAPHS: "0"})
    assert graphs_off.env == {} and graphs_off.graphs_outside_share
    assert vllm_behaviour("0.25.1", environ={ESTIMATE_GRAPHS: "0"}).graphs_outside_share
    assert not vllm_behaviour("0.19.1", environ={ESTIMATE_GRAPHS: "0"}, enforce_eager=True).graphs_outside_share
    v1_forced = vllm_behaviour("0.25.1", environ={"VLLM_USE_V2_MODEL_RUNNER": "0"})
    assert not v1_forced.v2_runner and v1_forced.engine_args == {"max_num_batched_tokens": V1_MAX_BATCHED_TOKENS}


def test_versions_not_read_get_the_larger_reservation():
    between = vllm_behaviour("0.22.0")
    assert not between.v2_runner and between.env == {ESTIMATE_GRAPHS: "1"}
    older = vllm_behaviour("0.11.0")
    assert older.graphs_outside_share and older.env == {}  # the variable was not read there: nothing is set


def test_bad_values_fail_naming_the_variable():
    with pytest.raises(ValueError, match=f"{ESTIMATE_GRAPHS}='yes'.*set it to 0 or 1"):
        vllm_behaviour("0.19.1", environ={ESTIMATE_GRAPHS: "yes"})
    with pytest.raises(ValueError, match="vllm version 'banana' cannot be read"):
        vllm_behaviour("banana")


def test_vllm_options_override_what_the_version_needs():
    accepted = {"model", "max_num_batched_tokens"}
    args = vllm_behaviour("0.19.1").engine_args
    assert llm_kwargs(ModelSettings(), VLLMSettings(), "/m", accepted, args)["max_num_batched_tokens"] == 2048
    own = VLLMSettings(vllm_options={"max_num_batched_tokens": 4096})
    assert llm_kwargs(ModelSettings(), own, "/m", accepted, args)["max_num_batched_tokens"] == 4096
    assert "max_num_batched_tokens" not in llm_kwargs(ModelSettings(), VLLMSettings(), "/m", accepted, {})


def test_plan_counts_scoring_or_training_whichever_is_larger():
    """4B on an L4 at NVARC's settings: 0.19.1's capped step (1.74 GiB of logits) hides under training's 5.04 GiB
    peak; vLLM's own step on a card over 70 GiB (16384 positions, 13.9 GiB) does not fit beside vLLM."""
    qwen = shape("qwen3-4b")
    none = make_plan("vllm", qwen, L4_FREE, H200_TOTAL, **NVARC)
    kaggle = make_plan("vllm", qwen, L4_FREE, H200_TOTAL, vllm=vllm_behaviour("0.19.1"), **NVARC)
    assert kaggle.scoring_gib == pytest.approx(PROMPT_LOGIT_BYTES * qwen.vocab * 2048 / GIB)
    assert kaggle.scoring_gib < kaggle.training_gib and kaggle.vllm_share_gib == pytest.approx(none.vllm_share_gib)
    current = make_plan("vllm", qwen, L4_FREE, H200_TOTAL, vllm=vllm_behaviour("0.25.1"), **NVARC)
    assert current.scoring_gib == pytest.approx(kaggle.scoring_gib / 2)
    with pytest.raises(MemoryPlanError, match="scoring's prompt logits 13.91 GiB.*smaller max_num_batched_tokens"):
        make_plan("vllm", qwen, L4_FREE, H200_TOTAL,
                  vllm=vllm_behaviour("0.19.1", options={"max_num_batched_tokens": 16384}), **NVARC)


def test_scoring_larger_than_training_shrinks_vllms_share():
    """0.5B: training at 2k tokens is small, so an 8192-position step of logits (6.96 GiB) is what is reserved."""
    small = shape("qwen2.5-0.5b")
    settings = dict(max_model_len=8192, train_seq_len=2048, lora_rank=32)
    step = vllm_behaviour("0.19.1", options={"max_num_batched_tokens": 8192})
    plan = make_plan("vllm", small, L4_FREE, H200_TOTAL, vllm=step, **settings)
    without = make_plan("vllm", small, L4_FREE, H200_TOTAL, **settings)
    assert plan.scoring_gib == pytest.approx(6.96, abs=0.01) and plan.scoring_gib > plan.training_gib
    assert without.vllm_share_gib - plan.vllm_share_gib == pytest.approx(plan.scoring_gib - plan.training_gib)
    assert plan.needed_gib == pytest.approx(21.3)


def test_graphs_left_outside_the_share_are_reserved():
    qwen = shape("qwen3-4b")
    inside = make_plan("vllm", qwen, L4_FREE, H200_TOTAL, vllm=vllm_behaviour("0.19.1"), **NVARC)
    outside = make_plan("vllm", qwen, L4_FREE, H200_TOTAL, vllm=vllm_behaviour("0.19.1", {ESTIMATE_GRAPHS: "0"}),
                        **NVARC)
    assert outside.graphs_outside_gib == GRAPHS_OUTSIDE_GIB and inside.graphs_outside_gib == 0
    assert inside.vllm_share_gib - outside.vllm_share_gib == pytest.approx(GRAPHS_OUTSIDE_GIB)
    assert "CUDA graphs outside vLLM's share 1.20 GiB" in outside.describe()
