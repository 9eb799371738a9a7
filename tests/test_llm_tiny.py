"""The offline tiny model: tokenizer that round-trips our text, digits as single tokens, deterministic build."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from arc_submit.llm import prompts, tiny
from arc_submit.llm.recipes import recipe


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


def test_tokenizer_round_trips_prompts_grids_and_code(tokenizer, arc2_sample):
    task = next(iter(arc2_sample.values()))
    texts = [prompts.transduction_prompt(recipe("arc-submit", grid), task.train, task.test[0].input).messages[-1]["content"]
             for grid in ("plain", "row_numbers", "shape_header")]
    texts.append(prompts.induction_target(recipe("arc-submit"), "def transform(grid):\n\treturn [[c or 5 for c in r] for r in grid]  # ok",
                                          tokenizer))
    texts.append("unicode survives: é ü 漢字 ✓")
    for text in texts:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_every_digit_is_its_own_token(tokenizer):
    row = "0123456789" * 3
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(row)["input_ids"])
    assert tokens == list(row)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    small = tiny.TinyShape(hidden_size=64, intermediate_size=64, num_hidden_layers=1, vocab_size=300)
    a = tiny.build_tiny_model(tmp_path / "a", small, seed=3)
    b = tiny.build_tiny_model(tmp_path / "b", small, seed=3)
    c = tiny.build_tiny_model(tmp_path / "c", small, seed=4)
    wa, wb, wc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert json.loads((a / "config.json").read_text())["model_type"] == "llama"


def test_cache_dir_is_configurable_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ARC_SUBMIT_CACHE", str(tmp_path))
    first = tiny.tiny_model_path()
    assert first.parent == tmp_path and (first / "config.json").exists()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny.tiny_model_path() == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


def test_resolve_model_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        tiny.resolve_model(str(tmp_path / "no-such-model"))
