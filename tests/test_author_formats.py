"""Self-tests of the reference builders in tests/author_formats.py, on real ARC-AGI-2 evaluation tasks.

Each assertion is a fact read in the authors' code (AUTHOR_FORMATS.md says where), so a builder cannot drift.
"""

from __future__ import annotations

import re

import pytest

import author_formats as af

TINY = {"train": [{"input": [[0, 1], [2, 3]], "output": [[4, 5], [6, 7]]}],
        "test": [{"input": [[8, 9], [0, 0]]}]}


@pytest.fixture(scope="module")
def tasks(arc2_eval):
    """Kaggle JSON dicts with the test outputs kept (the builders ignore them where a prompt must not see them)."""
    return {tid: t.to_json(with_solutions=True) for tid, t in arc2_eval.items()}


@pytest.fixture(scope="module")
def sample(tasks):
    ids = list(tasks)[:6] + [tid for tid, t in tasks.items() if len(t["test"]) > 1][:6]
    return {tid: tasks[tid] for tid in dict.fromkeys(ids)}


@pytest.fixture(scope="module")
def multi(tasks):
    tid = next(tid for tid, t in tasks.items() if len(t["test"]) >= 2)
    return tasks[tid]


def _no_test_output(task):
    return {"train": task["train"], "test": [{"input": t["input"]} for t in task["test"]]}


def test_sample_has_multi_test_tasks(sample):
    assert sum(len(t["test"]) > 1 for t in sample.values()) >= 4


# ---------------------------------------------------------------------------------------------------- NVARC

def test_nvarc_tiny_exact():
    assert af.nvarc_prompt_text(TINY, 0) == (
        "<|im_start|>user\n01\n23<|im_end|><|im_start|>assistant\n45\n67<|im_end|>"
        "<|im_start|>user\n89\n00<|im_end|><|im_start|>assistant\n")
    assert af.nvarc_answer([[8, 9], [0, 0]]) == "89\n00<|im_end|>"
    assert af.nvarc_training_text(TINY) == "<|im_start|>user\n01\n23<|im_end|><|im_start|>assistant\n45\n67<|im_end|>"
    assert af.nvarc_ids(af.nvarc_prompt_text(TINY, 0)) == [
        14, 11, 10, 0, 1, 10, 2, 3, 15, 14, 12, 10, 4, 5, 10, 6, 7, 15, 14, 11, 10, 8, 9, 10, 0, 0, 15, 14, 12, 10]


def test_nvarc_prompt_layout(sample):
    for tid, task in sample.items():
        for i in range(len(task["test"])):
            p = af.nvarc_prompt_text(task, i)
            assert p.startswith("<|im_start|>user\n") and p.endswith("<|im_end|><|im_start|>assistant\n"), tid
            assert p.count("<|im_start|>user\n") == len(task["train"]) + 1  # one user turn per example + the test
            assert p.count("<|im_start|>assistant\n") == len(task["train"]) + 1
            assert "\n\n" not in p and "system" not in p and "<|endoftext|>" not in p and "<|im_end|>\n" not in p
            last_user = p.rsplit("<|im_start|>user\n", 1)[1]
            assert last_user == af.nvarc_grid(task["test"][i]["input"]) + "<|im_end|><|im_start|>assistant\n"
            assert p == af.nvarc_prompt_text(_no_test_output(task), i)  # the answer never leaks into the prompt


def test_nvarc_multi_test_prompts_share_the_train_part(multi):
    prompts = [af.nvarc_prompt_text(multi, i) for i in range(len(multi["test"]))]
    assert len(set(prompts)) == len(prompts)
    train = af.nvarc_training_text(multi)
    assert all(p.startswith(train) for p in prompts)  # train turns, then exactly one test input


def test_nvarc_grid_rows():
    assert af.nvarc_grid([[1, 2, 3]]) == "123"
    assert af.nvarc_grid([[1], [2]]) == "1\n2"  # no trailing newline


def test_nvarc_training_spans(sample):
    for task in sample.values():
        text = af.nvarc_training_text(task)
        spans = af.nvarc_trained_spans(task)
        assert len(spans) == len(task["train"])
        for (a, b), ex in zip(spans, task["train"]):
            assert text[a:b] == af.nvarc_grid(ex["output"]) + "<|im_end|>"
            assert text[:a].endswith("<|im_start|>assistant\n")
        assert spans[-1][1] == len(text)  # the sequence ends with the last trained <|im_end|>
        # every character outside the spans is a user turn or an assistant header
        outside = "".join(text[b:a] for (_, b), (a, _) in zip([(0, 0)] + spans[:-1], spans))
        assert outside.count("<|im_start|>assistant\n") == len(task["train"])


def _nvarc_wordlevel_tokenizer():
    """A 16-token WordLevel tokenizer built the way NVARC's ARChitects/qwen3_configs/tokenizer.json is: Qwen's
    split regex then ByteLevel (no regex) as pre-tokenizer, WordLevel over the 13 base entries ("\\n" is byte-level
    "Ċ"), unk "<|endoftext|>" (absent from the model vocab), three added special tokens."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, models, pre_tokenizers

    vocab = {**{str(d): d for d in range(10)}, "Ċ": 10, "user": 11, "assistant": 12}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False)
                            for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    return tok


def test_nvarc_ids_match_a_wordlevel_tokenizer(sample):
    tok = _nvarc_wordlevel_tokenizer()
    assert tok.get_vocab_size() == 16
    assert [tok.token_to_id(s) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [13, 14, 15]
    for task in sample.values():
        for text in [af.nvarc_prompt_text(task, i) for i in range(len(task["test"]))] + [af.nvarc_training_text(task)]:
            ids = tok.encode(text).ids
            assert ids == af.nvarc_ids(text)
            assert 13 not in ids and max(ids) <= 15
            assert tok.decode(ids, skip_special_tokens=False) == text
        answer = af.nvarc_answer(task["test"][0]["output"])
        assert tok.encode(answer).ids[-1] == af.NVARC_EOS_ID


def test_nvarc_double_newline_is_not_encodable():
    with pytest.raises(Exception):
        _nvarc_wordlevel_tokenizer().encode("12\n\n")
    with pytest.raises(KeyError):
        af.nvarc_ids("12\n\n")


# ---------------------------------------------------------------------------------------------------- ARChitects

EOS = "<|eot_id|>"


def test_architects_tiny_exact():
    assert af.architects_prompt_text(TINY, 0, EOS) == (
        "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjklmnpqrstuvwxyz"
        "I01\n23\n+/-=O45\n67\n<|eot_id|>"
        "I89\n00\n+/-=O")
    assert af.architects_answer([[8, 9], [0, 0]], EOS) == "89\n00\n<|eot_id|>"
    assert af.architects_training_text(TINY, "</s>") == "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjklmnpqrstuvwxyz" \
                                                       "I01\n23\n+/-=O45\n67\n</s>"


def test_architects_preprompt_has_no_query_or_reply_letters():
    assert not set("IOio") & set(af.ARCHITECTS_PREPROMPT)
    assert len(af.ARCHITECTS_PREPROMPT) == 48


def test_architects_prompt_layout(sample):
    for tid, task in sample.items():
        for i in range(len(task["test"])):
            p = af.architects_prompt_text(task, i, EOS)
            assert p.startswith(af.ARCHITECTS_PREPROMPT + "I") and p.endswith("\n+/-=O"), tid
            assert p.count("I") == len(task["train"]) + 1
            assert p.count("\n+/-=O") == len(task["train"]) + 1
            assert p.count(EOS) == len(task["train"])  # no eos after the open query
            assert "\n\n" not in p and not p.startswith("<|begin_of_text|>")  # the tokenizer adds BOS itself
            assert p.rsplit("I", 1)[1] == af.architects_grid(task["test"][i]["input"]) + "\n+/-=O"
            assert p == af.architects_prompt_text(_no_test_output(task), i, EOS)
            assert p.startswith(af.architects_training_text(task, EOS))


def test_architects_training_spans(sample):
    for task in sample.values():
        text = af.architects_training_text(task, EOS)
        spans = af.architects_trained_spans(task, EOS)
        assert len(spans) == len(task["train"])
        assert spans[0][0] > len(af.ARCHITECTS_PREPROMPT)
        for (a, b), ex in zip(spans, task["train"]):
            assert text[a:b] == af.architects_grid(ex["output"]) + "\n" + EOS
            assert text[:a].endswith("\n+/-=O") and (b == len(text) or text[b] == "I")


# ---------------------------------------------------------------------------------------------------- BARC

def test_barc_tiny_exact():
    m = af.barc_induction_messages(TINY, 0)
    assert [x["role"] for x in m] == ["system", "user", "assistant"]
    assert m[1]["content"] == (
        af.BARC_HEADER + "\nHere are the input and output grids for the reference examples:\n"
        "Example 1\nInput:\nBlack Blue\nRed Green\n\nOutput:\nYellow Gray\nPink Orange\n\n\n"
        "Here is the input grid for the test example:\nInput:\nPurple Brown\nBlack Black\n\n"
        "Write a Python function `transform` that can convert any given input grid to its corresponding output grid "
        "based on the pattern observed in the reference examples.")
    assert m[2]["content"].endswith("Here is the Python code with the comments describing how to solve the problem:\n")


def test_barc_colour_names():
    assert af.BARC_COLOR_NAMES == ["Black", "Blue", "Red", "Green", "Yellow", "Gray", "Pink", "Orange", "Purple",
                                   "Brown"]
    assert af.barc_grid([[5, 8, 9]]) == "Gray Purple Brown\n"  # renamed Grey/Teal/Maroon; one trailing newline


def test_barc_messages_layout(sample):
    for tid, task in sample.items():
        for i in range(len(task["test"])):
            sysm, user, pre = af.barc_induction_messages(task, i)
            assert sysm == {"role": "system", "content": af.BARC_SYSTEM_PROMPT}
            assert pre == {"role": "assistant", "content": af.BARC_ANSWER_PREAMBLE}
            u = user["content"]
            assert u.startswith("Given input-output grid pairs as reference examples,")
            assert u.endswith("based on the pattern observed in the reference examples.")
            assert len(re.findall(r"^Example \d+$", u, re.M)) == len(task["train"])
            assert u.count("Input:\n") == len(task["train"]) + 1  # exactly ONE test input per prompt
            assert u.count("Write a Python function `transform`") == 1
            assert "\nOutput:\n" in u and "Teal" not in u and "Maroon" not in u and "Grey" not in u
            grids = re.sub(r"^Example \d+$", "", u.split("examples:\n", 1)[1], flags=re.M)
            assert re.search(r"[0-9]", grids) is None  # colour names only
            test_part = "Here is the input grid for the test example:\nInput:\n" + af.barc_grid(
                task["test"][i]["input"]) + "\nWrite a Python function"
            assert test_part in u, tid
            if len(task["train"]) > 1:
                assert "\n\n\nExample 2\n" in u  # grid newline + "\n\n" between examples
            assert u == af.barc_induction_messages(_no_test_output(task), i)[1]["content"]


def test_barc_training_answer_and_code_block():
    ans = af.barc_training_answer("from common import *\n\ndef transform(input_grid):\n    return input_grid")
    assert ans.startswith(af.BARC_ANSWER_PREAMBLE + "```python\nfrom common import *")
    assert ans.endswith("\n```\n")
    assert af.barc_python_block(ans).endswith("return input_grid")
    assert af.barc_python_block(af.BARC_ANSWER_PREAMBLE + "no code") is None


ARC25_TEMPLATE = """Given input-output grid pairs as reference examples, carefully observe the patterns to predict the output grid for new test input. Each pair follows the same transformation rule. Grids are 2D arrays represented as strings, with cells (colors) separated by spaces and rows by newlines.
Here are the input and output grids for the reference examples:
{% for sample in train_samples %}Example {{ loop.index }}
Input:
{{ sample.input }}

Output:
{{ sample.output }}

{% endfor %}
Here is the input grid for the test example:
{{ test }}

Write a Python function `transform` that can convert any given input grid to its corresponding output grid based on the pattern observed in the reference examples.
"""  # arc25/prompting.py prompt_template_text, verbatim


def test_arc25_variant_is_the_jinja_render_and_differs_from_barc(sample):
    jinja2 = pytest.importorskip("jinja2")
    tpl = jinja2.Template(ARC25_TEMPLATE)
    colour = lambda g: af.barc_grid(g)[:-1]  # noqa: E731  arc25's ColorNameEncoder: no trailing newline
    for task in sample.values():
        for i in range(len(task["test"])):
            ts = [{"input": colour(e["input"]), "output": colour(e["output"])} for e in task["train"]]
            ref = tpl.render(train_samples=ts, test=colour(task["test"][i]["input"]))
            assert af.arc25_induction_user(task, i) == ref
            barc = af.barc_induction_messages(task, i)[1]["content"]
            assert ref != barc
            assert "for the test example:\nInput:\n" in barc and "for the test example:\nInput:\n" not in ref


# ---------------------------------------------------------------------------------------------------- arc24

def test_arc24_tiny_exact():
    m = af.arc24_messages(TINY, 0)
    assert [x["role"] for x in m] == ["system", "user", "assistant"]
    assert m[1]["content"] == (
        "Let's see if you can solve this simple ARC task. These are some input-output grid examples that define the "
        "task.\n\n## Example 1\n\n### Input\n\n```grid shape: 2x2\n1 01\n2 23\n```\n\n### Output\n\n"
        "```grid shape: 2x2\n1 45\n2 67\n```\n\n## Test case\n\n### Input\n\n```grid shape: 2x2\n1 89\n2 00\n```")
    assert m[2]["content"] == "### Output\n\n```grid"
    assert af.arc24_answer([[8, 9], [0, 0]]) == "### Output\n\n```grid shape: 2x2\n1 89\n2 00\n```"
    assert af.arc24_continuation([[8, 9], [0, 0]]) == " shape: 2x2\n1 89\n2 00\n```"


def test_arc24_grid_shape_is_rows_by_columns_and_rows_are_1_based():
    g = [[1, 2, 3]] * 11
    text = af.arc24_grid(g)
    assert text.startswith("```grid shape: 11x3\n1 123\n2 123\n")
    assert "\n10 123\n11 123\n```" in text and text.endswith("```")
    assert af.arc24_parse(text[len("```grid"):]) == g


def test_arc24_system_prompt_verbatim_facts():
    s = af.ARC24_SYSTEM_PROMPT
    assert s.startswith("You are a helpful AI assistant. Your job is to solve tasks from the Abstraction and Reasoning "
                        "Challenge (ARC). \n")
    assert s.endswith("The transformations between input and output should be based on these priors.\n")
    assert s.count(" \n") == 3 and s.count("\n- ") == 4


ARC24_TEMPLATE = """Let's see if you can solve this simple ARC task. These are some input-output grid examples that define the task.
{% for sample in train_samples %}
## Example {{ loop.index }}

### Input

{{ sample.input }}

### Output

{{ sample.output }}
{% endfor %}
## Test case

### Input

{{ test_input }}
"""  # scripts/arc24/prompting.py prompt_template_v0, verbatim


def test_arc24_messages_on_real_tasks(sample):
    jinja2 = pytest.importorskip("jinja2")
    tpl = jinja2.Template(ARC24_TEMPLATE)
    for tid, task in sample.items():
        prompts = [af.arc24_messages(task, i) for i in range(len(task["test"]))]
        assert len({p[1]["content"] for p in prompts}) == len(task["test"])  # one prompt per test input
        for i, (sysm, user, pre) in enumerate(prompts):
            assert sysm["content"] == af.ARC24_SYSTEM_PROMPT and pre["content"] == af.ARC24_PREFILL
            ts = [{"input": af.arc24_grid(e["input"]), "output": af.arc24_grid(e["output"])} for e in task["train"]]
            assert user["content"] == tpl.render(train_samples=ts, test_input=af.arc24_grid(task["test"][i]["input"]))
            u = user["content"]
            assert u.endswith("```") and u.count("## Example ") == len(task["train"]) and u.count("## Test case") == 1
            h, w = len(task["test"][i]["input"]), len(task["test"][i]["input"][0])
            rows = "\n".join(f"{k} " + "".join(map(str, r)) for k, r in enumerate(task["test"][i]["input"], 1))
            assert u.endswith(f"## Test case\n\n### Input\n\n```grid shape: {h}x{w}\n{rows}\n```")
            out = task["test"][i]["output"]
            assert af.arc24_parse(af.arc24_continuation(out)) == out
            chat = af.qwen25_chat_text(prompts[i])
            assert chat.endswith("<|im_start|>assistant\n### Output\n\n```grid") and chat.count("<|im_end|>") == 2


# ---------------------------------------------------------------------------------------------------- chat texts

def test_llama31_text_drops_the_prefill_newline():
    m = af.barc_induction_messages(TINY, 0)
    t = af.llama31_chat_text(m)
    assert t.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                        "December 2023\nToday Date: 26 Jul 2024\n\n" + af.BARC_SYSTEM_PROMPT + "<|eot_id|>")
    assert t.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n" + af.BARC_ANSWER_PREAMBLE.rstrip("\n"))
    assert t.count("<|eot_id|>") == 2
