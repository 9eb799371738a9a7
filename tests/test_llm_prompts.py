"""Grid text encodings, prompt templates and output parsing, on real ARC grids and generated ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arc_submit.llm import prompts
from arc_submit.llm.prompts import GRID_FORMATS, encode_grid, grid_from_completion, parse_grid

grids = st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
    lambda shape: arrays(np.int8, shape, elements=st.integers(0, 9)))


@settings(max_examples=150, deadline=None)
@given(grid=grids, fmt=st.sampled_from(GRID_FORMATS))
def test_parse_inverts_encode(grid, fmt):
    parsed = parse_grid(encode_grid(grid, fmt), fmt)
    assert parsed is not None and parsed.dtype == np.int8
    assert np.array_equal(parsed, grid)


@settings(max_examples=100, deadline=None)
@given(grid=grids, fmt=st.sampled_from(GRID_FORMATS), tail=st.text(max_size=40))
def test_completion_parse_ignores_text_after_the_blank_line(grid, fmt, tail):
    answer = prompts.transduction_answer(grid, fmt) + tail
    assert np.array_equal(grid_from_completion(answer, fmt), grid)


def test_real_task_grids_round_trip(arc2_sample):
    for task in arc2_sample.values():
        for ex in task.train:
            for fmt in GRID_FORMATS:
                assert np.array_equal(parse_grid(encode_grid(ex.output, fmt), fmt), ex.output), (task.id, fmt)


def test_encodings_look_as_documented():
    g = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.int8)
    assert encode_grid(g, "plain") == "012\n340"
    assert encode_grid(g, "row_numbers") == "1 012\n2 340"
    assert encode_grid(g, "shape_header") == "2x3\n012\n340"


@pytest.mark.parametrize("text,fmt", [
    ("", "plain"), ("\n\n", "plain"), ("012\n34", "plain"), ("01a\n345", "plain"), ("0 1\n2 3", "plain"),
    ("١٢\n٣٤", "plain"),  # non-ASCII digits: str.isdigit() says yes, a grid says no
    ("0" * 31, "plain"), ("\n".join(["0"] * 31), "plain"),
    ("1 012\n3 340", "row_numbers"), ("012\n340", "row_numbers"), ("1 01\n2 345", "row_numbers"),
    ("3x3\n012\n340", "shape_header"), ("012\n340", "shape_header"), ("2x3", "shape_header"),
])
def test_malformed_text_parses_to_none(text, fmt):
    assert parse_grid(text, fmt) is None


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown grid format 'csv'"):
        encode_grid(np.zeros((1, 1), np.int8), "csv")


def test_transduction_prompt_holds_examples_and_test_input(arc2_sample):
    task = next(iter(arc2_sample.values()))
    text = prompts.transduction_text(task.train, task.test[0].input)
    assert text.startswith(prompts.TRANSDUCTION_INSTRUCTION)
    assert text.count("Example ") == len(task.train)
    assert text.endswith("Test\ninput:\n" + encode_grid(task.test[0].input) + "\noutput:\n")
    for ex in task.train:
        assert encode_grid(ex.output) in text


def test_training_pairs_hold_each_example_out_once(arc2_sample):
    """The transduction solver's test-time-training data, for the identity view without a length cap: plain text
    (no tokenizer, no chat template) so the prompt can be read."""
    from types import SimpleNamespace

    from arc_submit.augment import Augmentation
    from arc_submit.solvers import transduction

    task = next(iter(arc2_sample.values()))
    plain = SimpleNamespace(tokenizer=None, count_tokens=len)  # all training_pairs asks of an engine here
    pairs = transduction.training_pairs(task, [Augmentation()], plain, "plain", None, {})
    assert len(pairs) == len(task.train)
    for (prompt, completion), ex in zip(pairs, task.train):
        assert np.array_equal(grid_from_completion(completion), ex.output)
        assert prompt.count("Example ") == len(task.train) - 1


def test_induction_prompt_and_code_extraction(arc2_sample):
    task = next(iter(arc2_sample.values()))
    text = prompts.induction_text(task.train, [t.input for t in task.test])
    assert "transform(grid)" in text and "Test input 1:" in text
    code = "def transform(grid):\n    return [row[::-1] for row in grid]"
    assert prompts.code_from_completion("Sure.\n" + prompts.induction_answer(code) + "Done.") == code
    assert prompts.code_from_completion("```python\n" + code) == code  # cut at max_tokens before the fence closed
    assert prompts.code_from_completion("no code here") is None
    assert prompts.code_from_completion("```python\nx = 1\n```") is None  # no function


def test_chat_template_used_when_the_tokenizer_has_one():
    from arc_submit.llm.tiny import build_tokenizer

    tok = build_tokenizer()
    wrapped = prompts.apply_chat("hello", tok)
    assert wrapped == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    tok.chat_template = None
    assert prompts.apply_chat("hello", tok) == "hello"
    assert prompts.apply_chat("hello", None) == "hello"


def test_a_custom_prompt_format_round_trips_through_the_tiny_model(arc1_train):
    """A competitor's layout (no instruction, 'I'/'O' markers, numbered rows, no chat template): the solver
    encodes the task with it, the tiny model trained on it writes its answer in it, and the parser reads the
    grid back."""
    import numpy as np

    from arc_submit.budget import Deadline
    from arc_submit.llm import make_engine
    from arc_submit.solvers import SolverContext, transduction
    from arc_submit.tasks import Example, Task

    grid = arc1_train["6150a2bd"].train[0].input
    swapped = np.where(grid == grid.min(), grid.max(), np.where(grid == grid.max(), grid.min(), grid))
    task = Task("custom-format", tuple(Example(grid, swapped) for _ in range(3)), (Example(grid, swapped),))
    custom = {"preset": "compact", "grid": "row_numbers", "chat": False, "example": "I {n}\n{input}\nO {n}\n{output}"}
    fmt = prompts.prompt_format(custom)
    engine = make_engine("hf", "tiny", max_batch_sequences=32)
    try:
        text = prompts.transduction_prompt(task.train[:2], grid, fmt, engine.tokenizer)
        assert text.startswith("I 1\n1 ") and "<|im_start|>" not in text  # the layout, rows numbered, no chat
        full = engine.count_tokens(prompts.transduction_prompt(task.train, grid, fmt, engine.tokenizer))
        options = transduction.TRANSDUCTION.make_options(dict(
            n_augmentations=1, ttt_augmentations=1, ttt_epochs=100, ttt_steps=100, learning_rate=3e-3,
            lr_schedule="constant", lora_rank=8, lora_alpha=16, gradient_checkpointing=False,
            max_prompt_tokens=full - 1, prompt_format=custom))
        result = transduction.run(task, Deadline.in_seconds(600), SolverContext.for_engine(engine), options)
        assert np.array_equal(result.candidates[0][0].grid, swapped)  # written as numbered rows, parsed back
    finally:
        engine.close()
    with pytest.raises(ValueError, match="unknown field"):
        prompts.prompt_format({"exampel": "x"})
    with pytest.raises(ValueError, match="unknown placeholder"):
        prompts.prompt_format({"test": "{question}"})
    with pytest.raises(ValueError, match="transduction solver: prompt_format 'qwen'"):
        transduction.TRANSDUCTION.make_options({"prompt_format": "qwen"})
