"""Tokenizers keep the ids of their files (NVARC's 16-token WordLevel vocabulary above all), and
round_trip_problems names the text a vocabulary cannot hold.

The NVARC-style tokenizer is the one llm.tiny writes with the `tokenizers` library; the expected ids below are
written out by hand from NVARC's vocabulary (ARChitects/qwen3_configs/tokenizer.json in 1ytic/NVARC): digits 0-9
are ids 0-9, the newline token "Ċ" 10, `user` 11, `assistant` 12, <|endoftext|> 13, <|im_start|> 14, <|im_end|> 15.
"""

from __future__ import annotations

import json
import shutil

import pytest
from tokenizers import Tokenizer

from arc_submit.llm import tiny
from arc_submit.llm.tokenizers import ids_difference, load_tokenizer, round_trip_problems

NVARC_IDS = {**{str(d): d for d in range(10)}, "\n": 10, "user": 11, "assistant": 12, "<|endoftext|>": 13,
             "<|im_start|>": 14, "<|im_end|>": 15}


@pytest.fixture(scope="module")
def nvarc_folder(tmp_path_factory):
    return tiny.write_tokenizer(tmp_path_factory.mktemp("nvarc-tokenizer"), style=tiny.NVARC)


@pytest.fixture(scope="module")
def nvarc(nvarc_folder):
    return load_tokenizer(nvarc_folder)


def grid_text(grid) -> str:
    """NVARC's grid text: a row's digits, rows joined by newlines, nothing after the last row."""
    return "\n".join("".join(str(int(c)) for c in row) for row in grid)


def nvarc_text(task, test_index: int) -> str:
    """One user/assistant turn per train example, then the test input's user turn and the assistant prefix: the
    layout of NVARC's QwenFormatter (ARC-AGI1/002_ivan_arc1.ipynb), written here from reading it."""
    turns = "".join(f"<|im_start|>user\n{grid_text(ex.input)}<|im_end|><|im_start|>assistant\n"
                    f"{grid_text(ex.output)}<|im_end|>" for ex in task.train)
    return turns + f"<|im_start|>user\n{grid_text(task.test[test_index].input)}<|im_end|><|im_start|>assistant\n"


def hand_ids(text: str) -> list[int]:
    """NVARC's ids for text made of its markers, the two role words, digits and single newlines."""
    ids, at = [], 0
    words = sorted(NVARC_IDS, key=len, reverse=True)
    while at < len(text):
        word = next(w for w in words if text.startswith(w, at))
        ids.append(NVARC_IDS[word])
        at += len(word)
    return ids


def test_a_short_nvarc_string_gets_nvarcs_ids(nvarc):
    text = "<|im_start|>user\n012\n340<|im_end|><|im_start|>assistant\n56\n78<|im_end|>"
    expected = [14, 11, 10, 0, 1, 2, 10, 3, 4, 0, 15, 14, 12, 10, 5, 6, 10, 7, 8, 15]
    assert nvarc(text, add_special_tokens=False)["input_ids"] == expected
    assert nvarc(text)["input_ids"] == expected  # the post-processor adds nothing: no BOS in NVARC's files
    assert nvarc.decode(expected) == text
    assert round_trip_problems(nvarc, text) == []


def test_real_arc2_tasks_in_nvarcs_layout_get_nvarcs_ids_and_round_trip(nvarc, arc2_sample):
    multi = [t for t in arc2_sample.values() if len(t.test) > 1]
    assert multi  # the sample holds tasks with several test inputs: each gets its own prompt
    for task in arc2_sample.values():
        for i in range(len(task.test)):
            text = nvarc_text(task, i)
            ids = nvarc(text, add_special_tokens=False)["input_ids"]
            assert ids == hand_ids(text), task.id
            assert nvarc.decode(ids) == text
            assert round_trip_problems(nvarc, text) == [], task.id


def test_the_chat_template_renders_nvarcs_turns(nvarc):
    """From chat_template.j2 beside the files (transformers reads only chat_template.jinja by itself)."""
    messages = [{"role": "user", "content": "01\n23"}, {"role": "assistant", "content": "32\n10"},
                {"role": "user", "content": "5"}]
    text = nvarc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>user\n01\n23<|im_end|><|im_start|>assistant\n32\n10<|im_end|>"
                    "<|im_start|>user\n5<|im_end|><|im_start|>assistant\n")
    assert (nvarc.eos_token, nvarc.eos_token_id, nvarc.pad_token, nvarc.pad_token_id) == (
        "<|im_end|>", 15, "<|endoftext|>", 13)
    assert nvarc.bos_token is None and len(nvarc) == 16


def test_a_blank_line_cannot_be_encoded_and_is_named(nvarc):
    """ "\\n\\n" is one pre-token NVARC's vocabulary has no entry for: the file raises, and the problem names it."""
    text = "<|im_start|>assistant\n12\n34\n\n"
    with pytest.raises(Exception, match="WordLevel"):
        nvarc(text, add_special_tokens=False)
    problems = round_trip_problems(nvarc, text)
    assert problems[0].startswith("encoding raises")
    assert any(p.startswith("'\\n\\n' at character 27 (line 3, column 3)") and "no entry in the vocabulary" in p
               for p in problems), problems


def test_every_fragment_the_vocabulary_lacks_is_named_once_with_its_count(nvarc):
    text = "Input:\n12\n\n34\n\n56"
    problems = round_trip_problems(nvarc, text)
    lines = [p for p in problems if not p.startswith("encoding raises")]
    assert lines[0].startswith("'Input' at character 0 (line 1, column 1)")
    assert lines[1].startswith("':\\n' at character 5")  # punctuation with its newline: one pre-token
    assert lines[2].startswith("'\\n\\n' at character 9 (line 2, column 3), and 1 more time(s)")
    assert len(lines) == 3


def test_auto_tokenizer_loses_the_role_words_where_load_tokenizer_keeps_them(nvarc_folder, nvarc):
    """As seen under transformers 5.24 (and 5.17, the GPU machines'): AutoTokenizer builds the Qwen2Tokenizer that tokenizer_config.json names,
    which remakes the WordLevel vocabulary as a BPE without merges; `user` and `assistant` then encode to nothing,
    "\\n\\n" silently becomes two newlines, and the chat_template.j2 file is not read."""
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(nvarc_folder))
    text = "<|im_start|>user\n012<|im_end|><|im_start|>assistant\n"
    assert nvarc(text)["input_ids"] == [14, 11, 10, 0, 1, 2, 15, 14, 12, 10]
    assert auto(text)["input_ids"] == [14, 10, 0, 1, 2, 15, 14, 10]
    assert auto("1\n\n2")["input_ids"] == [1, 10, 10, 2]
    assert auto.chat_template is None and nvarc.chat_template
    problems = round_trip_problems(auto, text)
    assert problems[0].startswith("'user' at character 12 (line 1, column 13): is lost")
    assert problems[1].startswith("'assistant' at character")
    assert "decode(encode(text)) differs from the text at character 12" in problems[2]
    difference = ids_difference(auto, Tokenizer.from_file(str(nvarc_folder / "tokenizer.json")))
    assert difference is not None and "the file gives" in difference


def test_autotokenizer_is_kept_where_it_gives_the_files_ids(caplog):
    """The default tiny model (a BPE, tokenizer_class TokenizersBackend): AutoTokenizer's, with its ids. (A BPE is
    built from the file only after a warning, so no warning means AutoTokenizer's was kept.)"""
    from transformers import AutoTokenizer

    folder = tiny.tiny_model_path()
    with caplog.at_level("WARNING", logger="arc_submit.llm.tokenizers"):
        ours = load_tokenizer(folder)
    assert caplog.text == ""
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert type(ours) is type(auto)
    text = "<|im_start|>user\nExample 1\n0 1 2\n\ndef transform(grid):\n    return grid<|im_end|>\n"
    assert ours(text)["input_ids"] == auto(text)["input_ids"]
    assert ours.chat_template == auto.chat_template == tiny.CHAT_TEMPLATE


def test_a_bpe_whose_autotokenizer_disagrees_is_built_from_the_file(tmp_path, caplog):
    """The tiny BPE with tokenizer_config naming Qwen2Tokenizer: transformers rebuilds it with Qwen's split pattern,
    which cuts " return" otherwise than tokenizer.json does."""
    from transformers import AutoTokenizer

    folder = tmp_path / "renamed"
    shutil.copytree(tiny.tiny_model_path(), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "def transform(grid):\n    return [row[::-1] for row in grid]\n"
    assert AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"] != raw.encode(text).ids
    with caplog.at_level("WARNING", logger="arc_submit.llm.tokenizers"):
        ours = load_tokenizer(folder)
    assert ours(text)["input_ids"] == raw.encode(text).ids
    assert "does not give tokenizer.json's ids" in caplog.text and str(folder) in caplog.text
    assert (ours.eos_token, ours.pad_token) == ("<|im_end|>", "<|endoftext|>")


def test_a_special_token_transformers_appends_keeps_the_files_ids(tmp_path):
    """A pad token only tokenizer_config.json names (tokenizer.json lacks it): AutoTokenizer appends it after the
    file's ids, which stay as they are, so its tokenizer is kept. (Many models have embedding rows to spare.)"""
    folder = tmp_path / "appended-pad"
    shutil.copytree(tiny.tiny_model_path(), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<pad>"}))
    file_vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    tokenizer = load_tokenizer(folder)
    assert tokenizer.pad_token_id == len(file_vocab)
    assert all(tokenizer.get_vocab()[t] == i for t, i in file_vocab.items())


def test_an_unknown_token_is_named(tmp_path):
    """A WordLevel vocabulary that holds its unknown token: encoding succeeds, and the fragment is named."""
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    problems = round_trip_problems(tokenizer, "a b zz b")
    assert problems[0] == "'zz' at character 4 (line 1, column 5): becomes the unknown token"
    assert any(p.startswith("decode(encode(text)) differs") for p in problems)
    assert round_trip_problems(tokenizer, "a b") == []
    # Whitespace drops the spaces and decoding puts one back between tokens: two spaces come back as one, with no
    # fragment to blame, and the difference is named by position.
    assert round_trip_problems(tokenizer, "a  b") == [
        "decode(encode(text)) differs from the text at character 2 (line 1, column 3): the text has 'a  b', the "
        "decoding 'a b' (4 vs 3 characters)"]


def test_missing_folders_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-folder: no such folder"):
        load_tokenizer(tmp_path / "no-such-folder")
    (tmp_path / "weights-only").mkdir()
    (tmp_path / "weights-only" / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="weights-only: no tokenizer.json.*it holds model.safetensors"):
        load_tokenizer(tmp_path / "weights-only")


def test_a_special_token_the_vocabulary_lacks_is_refused(tmp_path, nvarc_folder):
    folder = tmp_path / "bad-eos"
    shutil.copytree(nvarc_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "</s>"}))
    with pytest.raises(ValueError, match="tokenizer_config.json names eos_token '</s>'.*as id 16"):
        load_tokenizer(folder)


def test_special_tokens_map_fills_what_the_config_lacks(tmp_path, nvarc_folder):
    folder = tmp_path / "map-only"
    shutil.copytree(nvarc_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["eos_token"], config["pad_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    token_map = {"eos_token": {"content": "<|im_end|>", "lstrip": False}, "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(token_map))
    tokenizer = load_tokenizer(folder)
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (15, 13)


def test_the_chat_template_comes_from_the_config_before_any_file(tmp_path, nvarc_folder):
    folder = tmp_path / "templates"
    shutil.copytree(nvarc_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ 'from config' }}"}]
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": named}))
    assert load_tokenizer(folder).chat_template == "{{ 'from config' }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.j2").unlink()
    assert not load_tokenizer(folder).chat_template
    (folder / "chat_template.jinja").write_text("{{ 'from jinja' }}")
    assert load_tokenizer(folder).chat_template == "{{ 'from jinja' }}"


# --- the tiny models built on these tokenizers ----------------------------------------------------------------


def test_the_nvarc_pre_tokenizer_cuts_as_qwens(nvarc_folder):
    """Qwen's split pattern then byte-level: letters with one leading non-letter, single digits, newline runs."""
    backend = Tokenizer.from_file(str(nvarc_folder / "tokenizer.json"))
    pieces = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str("user\n012\n\n3 ab's")]
    assert pieces == ["user", "\u010a", "0", "1", "2", "\u010a\u010a", "3", "\u0120ab", "'s"]
    spec = json.loads((nvarc_folder / "tokenizer.json").read_text())
    assert (spec["model"]["type"], spec["model"]["unk_token"], spec["normalizer"]) == (
        "WordLevel", "<|endoftext|>", {"type": "NFC"})
    assert [(t["id"], t["content"], t["special"]) for t in spec["added_tokens"]] == [
        (13, "<|endoftext|>", True), (14, "<|im_start|>", True), (15, "<|im_end|>", True)]
    config = json.loads((nvarc_folder / "tokenizer_config.json").read_text())
    assert (config["tokenizer_class"], config["eos_token"], config["pad_token"], config["bos_token"]) == (
        "Qwen2Tokenizer", "<|im_end|>", "<|endoftext|>", None)


@pytest.fixture(scope="module")
def nvarc_engine():
    from arc_submit.llm import make_engine

    engine = make_engine("hf", "tiny-nvarc", device="cpu", max_batch_sequences=8)
    yield engine
    engine.close()


def test_the_tiny_nvarc_model_is_a_qwen3_of_16_tokens(nvarc_engine):
    config = nvarc_engine.model.config
    assert (config.model_type, config.vocab_size, config.eos_token_id, config.pad_token_id) == ("qwen3", 16, 15, 13)
    assert nvarc_engine.model.get_input_embeddings().weight.shape[0] == 16


def test_the_tiny_nvarc_model_trains_and_samples_in_the_hf_engine(nvarc_engine):
    """Leave-one-out pairs of a real task in NVARC's layout (the smallest ARC-AGI-2 training task: short sequences
    on CPU): the LoRA's loss falls; every sampled id is one of the 16, and each sample's text is exactly its ids'
    characters (special tokens left out)."""
    from arc_submit.llm import Sampling, TrainSettings
    from arc_submit.llm.engine import TrainingText
    from arc_submit.tasks import Task, load_tasks

    task = min(load_tasks("arc-agi-2/training").values(), key=lambda t: t.cost_estimate())
    pairs = []
    for k, held_out in enumerate(task.train):
        rest = Task(task.id, [ex for j, ex in enumerate(task.train) if j != k], [held_out])
        pairs.append(TrainingText.pair(nvarc_text(rest, 0), grid_text(held_out.output) + "<|im_end|>"))
    prompt = nvarc_text(task, 0)
    assert nvarc_engine.count_tokens(prompt) == len(hand_ids(prompt))
    adapter = nvarc_engine.train_adapter("nvarc", pairs, TrainSettings(epochs=4, lora_rank=4, lora_alpha=8,
                                                                        learning_rate=1e-2,
                                                                        gradient_checkpointing=False))
    assert adapter.steps > 0 and adapter.last_loss < adapter.first_loss
    samples = nvarc_engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=24, seed=0), adapter)[0]
    text_of = {i: t for t, i in NVARC_IDS.items()}
    for sample in samples:
        assert sample.token_ids and set(sample.token_ids) <= set(range(16))
        assert sample.text == "".join(text_of[i] for i in sample.token_ids if i < 13)
    score = nvarc_engine.score([TrainingText.pair(prompt, grid_text(task.test[0].output) + "<|im_end|>")], adapter)[0]
    assert score < 0


def test_the_tiny_llama3_model_writes_headers_and_one_bos():
    """BARC's model is a Llama-3.1: system and user turns under headers, BOS once, EOS <|eot_id|>, no pad token (the
    engine pads with EOS), and colour-name grids survive the tokenizer."""
    from arc_submit.llm import TrainSettings, make_engine
    from arc_submit.llm.engine import TrainingText
    from arc_submit.llm.training import prompt_ids, tokenize_text

    engine = make_engine("hf", "tiny-llama3", device="cpu", max_batch_sequences=8)
    try:
        tok = engine.tokenizer
        messages = [{"role": "system", "content": "You are a world-class puzzle solver."},
                    {"role": "user", "content": "Black Blue Red\nGreen Yellow Gray\n"}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a world-class puzzle "
                        "solver.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBlack Blue Red\nGreen Yellow "
                        "Gray<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        ids = prompt_ids(tok, text)
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert prompt_ids(tok, "Black")[0] == tok.bos_token_id  # plain text gets the BOS from the post-processor
        assert round_trip_problems(tok, text) == []
        assert (tok.eos_token, tok.pad_token_id) == ("<|eot_id|>", tok.eos_token_id)
        pair = tokenize_text(tok, TrainingText.pair(text, "Pink<|eot_id|>"))
        assert pair.input_ids[-1] == tok.eos_token_id and pair.input_ids.count(tok.bos_token_id) == 1
        adapter = engine.train_adapter("barc", [TrainingText.pair(text, "Pink Orange<|eot_id|>"),
                                                TrainingText.pair(text, "Purple Brown<|eot_id|>")],
                                       TrainSettings(epochs=6, lora_rank=4, lora_alpha=8, learning_rate=1e-2,
                                                     gradient_checkpointing=False))
        assert adapter.last_loss < adapter.first_loss
        assert engine.model.config.model_type == "llama"
    finally:
        engine.close()


def test_each_tiny_style_has_its_own_cached_folder(tmp_path):
    from pathlib import Path

    paths = {name: Path(tiny.resolve_model(name, cache_dir=tmp_path)) for name in tiny.TINY_STYLES}
    assert sorted(p.name.rsplit("-", 1)[0] for p in paths.values()) == ["tiny", "tiny-llama3", "tiny-nvarc"]
    assert all(p.parent == tmp_path for p in paths.values())
    stamp = (paths["tiny-nvarc"] / "model.safetensors").stat().st_mtime_ns
    assert Path(tiny.resolve_model("tiny-nvarc", cache_dir=tmp_path)) == paths["tiny-nvarc"]
    assert (paths["tiny-nvarc"] / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert (paths["tiny-nvarc"] / "chat_template.j2").is_file()


def test_the_vllm_engine_warns_when_vllms_tokenizer_is_not_the_files(nvarc_folder, caplog):
    """vLLM loads with AutoTokenizer; prompts go to it as our ids, and the engine says when its own tokenizer
    (which decodes samples taken with stop strings) differs. AutoTokenizer stands in for vLLM's here: vLLM's
    CachedHfTokenizer is AutoTokenizer.from_pretrained with cached properties."""
    from transformers import AutoTokenizer

    from arc_submit.llm.vllm_engine import warn_if_tokenizers_differ

    with caplog.at_level("WARNING", logger="arc_submit.llm.vllm_engine"):
        warn_if_tokenizers_differ(load_tokenizer(nvarc_folder), str(nvarc_folder))
        assert caplog.text == ""
        warn_if_tokenizers_differ(AutoTokenizer.from_pretrained(str(nvarc_folder)), str(nvarc_folder))
    assert "does not give tokenizer.json's ids" in caplog.text and str(nvarc_folder) in caplog.text
    assert "'assistant\\n': the file gives [12, 10], this tokenizer [10]" in caplog.text  # the BPE drops the word
