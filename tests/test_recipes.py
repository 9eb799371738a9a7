"""Each published recipe against its authors' format: `arc-submit prompt` (the command a competitor runs) must give,
character for character, the text tests/author_formats.py builds from an independent reading of the authors' code,
on real ARC-AGI-2 evaluation tasks, multi-test ones included; NVARC also id for id through a 16-token WordLevel
tokenizer built the way NVARC's is. Training texts, answers and the parsing of a model's continuation too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import author_formats as af
from arc_submit.cli import main
from arc_submit.llm import prompts
from arc_submit.llm.recipes import RECIPES, recipe
from arc_submit.llm.tiny import resolve_model
from arc_submit.llm.tokenizers import load_tokenizer

DATASET = "arc-agi-2/evaluation"


@pytest.fixture(scope="module")
def sample(arc2_eval):
    """6 tasks and 4 with several test inputs, as Kaggle JSON (what the authors' code reads)."""
    ids = list(arc2_eval)[:6] + [tid for tid, t in arc2_eval.items() if len(t.test) > 1][:4]
    return {tid: arc2_eval[tid] for tid in dict.fromkeys(ids)}


def shown(name: str, task_id: str, test_index: int, capsys, model: str | None = None) -> dict:
    """`arc-submit prompt --json`, as a competitor runs it."""
    argv = ["prompt", "--preset", name, "--challenges", DATASET, "--task", task_id, "--test-index", str(test_index),
            "--json"] + (["--model", model] if model else [])
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_every_test_input_of_the_sample_is_covered(sample):
    assert sum(len(t.test) > 1 for t in sample.values()) == 4


def test_nvarc_prompt_text_and_ids(sample, capsys):
    model = resolve_model("tiny-nvarc")  # NVARC's 16 ids, its pre-tokenizer, its special tokens
    for task in sample.values():
        for i in range(len(task.test)):
            view = shown("nvarc", task.id, i, capsys, model)
            expected = af.nvarc_prompt_text(task.to_json(), i)
            assert view["text"] == expected, task.id
            assert view["ids"] == af.nvarc_ids(expected), task.id
            # One user turn per input, one assistant turn per output, no system message.
            assert [m["role"] for m in view["messages"]] == ["user", "assistant"] * len(task.train) + ["user"]
    # Without a model the text is the same (NVARC wrote its tokens out by hand); there are no ids.
    task = next(iter(sample.values()))
    assert shown("nvarc", task.id, 0, capsys) == {**shown("nvarc", task.id, 0, capsys, model), "ids": None}


def test_nvarc_training_text_answer_and_parsing(sample):
    r, tok = RECIPES["nvarc"], load_tokenizer(resolve_model("tiny-nvarc"))
    for task in sample.values():
        text = prompts.full_sequence_text(r, task.train, tok)
        joined = "".join(s for s, _ in text.segments)
        assert joined == af.nvarc_training_text(task.to_json())
        spans, at = [], 0
        for segment, trained in text.segments:
            if trained:
                spans.append((at, at + len(segment)))
            at += len(segment)
        assert spans == af.nvarc_trained_spans(task.to_json()), task.id
        out = task.train[0].output
        assert prompts.transduction_target(r, out, tok) == af.nvarc_answer(out.tolist())
        assert np.array_equal(prompts.grid_from_completion(r, af.nvarc_grid(out.tolist())), out)


def test_architects_prompt_text(sample, capsys):
    model = resolve_model("tiny")  # any tokenizer: the text takes its end-of-sequence token
    eos = load_tokenizer(model).eos_token
    for task in sample.values():
        for i in range(len(task.test)):
            view = shown("architects-2024", task.id, i, capsys, model)
            assert view["messages"] is None  # plain text, no roles
            assert view["text"] == af.architects_prompt_text(task.to_json(), i, eos), task.id
    task = next(iter(sample.values()))
    assert shown("architects-2024", task.id, 0, capsys)["text"] is None  # the EOS is the model's: needs --model


def test_architects_training_text_and_answer(sample):
    r = RECIPES["architects-2024"]
    tok = load_tokenizer(resolve_model("tiny"))
    for task in sample.values():
        text = prompts.full_sequence_text(r, task.train, tok)
        assert "".join(s for s, _ in text.segments) == af.architects_training_text(task.to_json(), tok.eos_token)
        trained = [s for s, t in text.segments if t]
        assert trained == [af.architects_answer(ex.output.tolist(), tok.eos_token) for ex in task.train]
        out = task.train[-1].output
        assert prompts.transduction_target(r, out, tok) == af.architects_answer(out.tolist(), tok.eos_token)
        assert np.array_equal(prompts.grid_from_completion(r, af.architects_grid(out.tolist()) + "\n"), out)


def test_barc_induction_messages(sample, capsys):
    model = resolve_model("tiny-llama3")  # a Llama-3.1-style chat template
    tok = load_tokenizer(model)
    for task in sample.values():
        for i in range(len(task.test)):
            view = shown("barc-induction", task.id, i, capsys, model)
            system, user, prefill = af.barc_induction_messages(task.to_json(), i)
            assert view["messages"] == [system, user], task.id  # one test input per prompt
            assert view["test_indices"] == [i]
            # The model's template, then the preamble as it was trained (its final newline kept).
            assert view["text"] == tok.apply_chat_template([system, user], tokenize=False,
                                                           add_generation_prompt=True) + prefill["content"]
            assert view["text"].endswith("how to solve the problem:\n")
    task = next(iter(sample.values()))
    assert shown("barc-induction", task.id, 0, capsys)["text"] is None  # the chat template is the model's


def test_barc_answer_and_program_extraction():
    r, tok = RECIPES["barc-induction"], load_tokenizer(resolve_model("tiny-llama3"))
    code = "from common import *\n\ndef transform(input_grid):\n    return input_grid"
    trained = af.barc_training_answer(code)
    prefill = r.induction.prefill
    assert prompts.induction_target(r, code, tok) == trained[len(prefill):] + tok.eos_token
    assert prompts.code_from_completion(r, trained[len(prefill):]) == af.barc_python_block(trained)
    assert r.induction.max_tokens >= 1500  # BARC's answers run to about 1500 tokens


def test_arc24_messages_text_and_answer(sample, capsys):
    model = resolve_model("tiny")  # a ChatML template, as Qwen2.5's renders these messages
    tok = load_tokenizer(model)
    for task in sample.values():
        for i in range(len(task.test)):
            view = shown("arc24", task.id, i, capsys, model)
            expected = af.arc24_messages(task.to_json(), i)  # system, user, then the assistant's prefill
            assert view["messages"] == expected[:-1], task.id
            assert view["text"] == af.qwen25_chat_text(expected, open_last=True), task.id
    r = RECIPES["arc24"]
    out = next(iter(sample.values())).train[0].output
    assert prompts.transduction_target(r, out, tok) == af.arc24_continuation(out.tolist()) + tok.eos_token
    assert np.array_equal(prompts.grid_from_completion(r, af.arc24_continuation(out.tolist())), out)
    assert af.arc24_parse(af.arc24_continuation(out.tolist())) == out.tolist()


def test_the_readable_view_and_its_errors(sample, capsys):
    task = next(t for t in sample.values() if len(t.test) > 1)
    assert main(["prompt", "--preset", "nvarc", "--challenges", DATASET, "--task", task.id, "--test-index", "1"]) == 0
    out = capsys.readouterr().out
    assert "--- user ---" in out and "--- assistant ---" in out and "<|im_start|>assistant⏎" in out
    assert main(["prompt", "--preset", "nvarc", "--challenges", DATASET, "--task", task.id, "--test-index", "9"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["prompt", "--preset", "nvarc", "--challenges", DATASET, "--task", "nope"]) == 1
    assert "--task 'nope' is not in" in capsys.readouterr().err
    assert main(["prompt", "--preset", "qwen", "--challenges", DATASET, "--task", task.id]) == 2
    assert "--preset: recipe 'qwen'" in capsys.readouterr().err
    assert main(["prompt", "--preset", "nvarc", "--challenges", DATASET, "--task", task.id, "--solver", "induction"]) == 1
    assert "recipe nvarc has no induction layout" in capsys.readouterr().err


def test_a_users_own_recipe_is_a_dict_or_module_attribute():
    own = recipe({"preset": "nvarc", "lora": {"rank": 64}})
    assert own.lora.rank == 64 and own.lora.alpha == 32 and own.turn == RECIPES["nvarc"].turn
    assert recipe("arc_submit.llm.recipes:NVARC") is RECIPES["nvarc"]
