"""Grid text encodings, recipes' prompt templates and output parsing, on real ARC grids and generated ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arc_submit.llm import prompts
from arc_submit.llm.grid_text import GRID_TEXTS, grid_text
from arc_submit.llm.recipes import TRANSDUCTION_INSTRUCTION, recipe

grids = st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
    lambda shape: arrays(np.int8, shape, elements=st.integers(0, 9)))
OURS = recipe("arc-submit")


@settings(max_examples=150, deadline=None)
@given(grid=grids, name=st.sampled_from(sorted(GRID_TEXTS)))
def test_parse_inverts_encode(grid, name):
    parsed = GRID_TEXTS[name].parse(GRID_TEXTS[name].encode(grid))
    assert parsed is not None and parsed.dtype == np.int8
    assert np.array_equal(parsed, grid)


@settings(max_examples=100, deadline=None)
@given(grid=grids, name=st.sampled_from(["plain", "row_numbers", "shape_header"]), tail=st.text(max_size=40))
def test_completion_parse_ignores_text_after_the_blank_line(grid, name, tail):
    r = recipe("arc-submit", name)
    answer = r.grid.encode(grid) + "\n\n" + tail
    assert np.array_equal(prompts.grid_from_completion(r, answer), grid)


def test_real_task_grids_round_trip(arc2_sample):
    for task in arc2_sample.values():
        for ex in task.train:
            for name, encoding in GRID_TEXTS.items():
                assert np.array_equal(encoding.parse(encoding.encode(ex.output)), ex.output), (task.id, name)


def test_encodings_look_as_documented():
    g = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.int8)
    assert GRID_TEXTS["plain"].encode(g) == "012\n340"
    assert GRID_TEXTS["row_numbers"].encode(g) == "1 012\n2 340"
    assert GRID_TEXTS["shape_header"].encode(g) == "2x3\n012\n340"
    assert GRID_TEXTS["colour_names"].encode(g) == "Black Blue Red\nGreen Yellow Black\n"
    assert GRID_TEXTS["arc24"].encode(g) == "```grid shape: 2x3\n1 012\n2 340\n```"


@pytest.mark.parametrize("text,name", [
    ("", "plain"), ("\n\n", "plain"), ("012\n34", "plain"), ("01a\n345", "plain"), ("0 1\n2 3", "plain"),
    ("١٢\n٣٤", "plain"),  # non-ASCII digits: str.isdigit() says yes, a grid says no
    ("0" * 31, "plain"), ("\n".join(["0"] * 31), "plain"),
    ("1 012\n3 340", "row_numbers"), ("012\n340", "row_numbers"), ("1 01\n2 345", "row_numbers"),
    ("3x3\n012\n340", "shape_header"), ("012\n340", "shape_header"), ("2x3", "shape_header"),
    ("Black Teal\n", "colour_names"), ("Black  Blue\n", "colour_names"),
    ("```grid shape: 2x2\n1 01\n2 23\n", "arc24"),  # no closing fence: cut before the grid ended
    ("```grid shape: 2x2\n1 01\n```", "arc24"),  # fewer rows than the header says
])
def test_malformed_text_parses_to_none(text, name):
    assert GRID_TEXTS[name].parse(text) is None


def test_unknown_grid_encoding_is_a_clear_error():
    with pytest.raises(ValueError, match="grid 'csv': use one of plain"):
        grid_text("csv")
    with pytest.raises(ValueError, match="unknown field"):
        grid_text({"colors": list("0123456789")})
    with pytest.raises(ValueError, match="10 distinct"):
        grid_text({"colours": ["a"] * 10, "cell_separator": " "})


def test_transduction_prompt_holds_examples_and_test_input(arc2_sample):
    task = next(iter(arc2_sample.values()))
    rendered = prompts.transduction_prompt(OURS, task.train, task.test[0].input)
    assert rendered.text is None  # our layout goes through the model's chat template: no tokenizer, no text
    text = rendered.messages[-1]["content"]
    assert text.startswith(TRANSDUCTION_INSTRUCTION)
    assert text.count("Example ") == len(task.train)
    assert text.endswith("Test\ninput:\n" + OURS.grid.encode(task.test[0].input) + "\noutput:\n")
    for ex in task.train:
        assert OURS.grid.encode(ex.output) in text


def test_training_pairs_hold_each_example_out_once(arc2_sample):
    """The transduction solver's test-time-training data, for the identity view without a length cap: a plain
    recipe (no chat template) so the prompt can be read."""
    from types import SimpleNamespace

    from arc_submit.augment import Augmentation
    from arc_submit.solvers import transduction

    task = next(iter(arc2_sample.values()))
    plain = recipe({"preset": "arc-submit", "chat": "plain"})
    engine = SimpleNamespace(tokenizer=SimpleNamespace(eos_token="<eos>"), count_tokens=len)
    texts = transduction.training_texts(task, [Augmentation()], engine, plain, None, {})
    assert len(texts) == len(task.train)
    for text, ex in zip(texts, task.train):
        (prompt, in_prompt), (completion, trained) = text.segments
        assert (in_prompt, trained) == (False, True)
        assert completion == plain.grid.encode(ex.output) + "\n\n<eos>"
        assert np.array_equal(prompts.grid_from_completion(plain, completion), ex.output)
        assert prompt.count("Example ") == len(task.train) - 1


def test_induction_prompt_and_code_extraction(arc2_sample):
    task = next(iter(arc2_sample.values()))
    text = prompts.induction_prompt(OURS, task.train, [t.input for t in task.test]).messages[-1]["content"]
    assert "transform(grid)" in text and "Test input 1:" in text
    code = "def transform(grid):\n    return [row[::-1] for row in grid]"
    answer = prompts.induction_target(OURS, code, SimpleTokenizer())
    assert answer == f"```python\n{code}\n```\n</s>"
    assert prompts.code_from_completion(OURS, "Sure.\n" + answer + "Done.") == code
    assert prompts.code_from_completion(OURS, "```python\n" + code) == code  # cut at max_tokens before the fence closed
    assert prompts.code_from_completion(OURS, "no code here") is None
    assert prompts.code_from_completion(OURS, "```python\nx = 1\n```") is None  # no function


class SimpleTokenizer:
    """What rendering asks of a tokenizer without a chat template: its end-of-sequence token."""
    eos_token = "</s>"
    chat_template = None


def test_chat_template_used_as_the_recipe_says():
    from arc_submit.llm.tiny import build_tokenizer
    from arc_submit.tasks import Example

    tok = build_tokenizer()
    grid = np.array([[1]], np.int8)
    auto = prompts.transduction_prompt(recipe({"preset": "compact"}), [], grid, tok).text
    assert auto == "<|im_start|>user\nI\n1\nO\n<|im_end|>\n<|im_start|>assistant\n"
    plain = prompts.transduction_prompt(recipe({"preset": "compact", "chat": "plain"}), [], grid, tok).text
    assert plain == "I\n1\nO\n"
    tok.chat_template = None
    assert prompts.transduction_prompt(recipe({"preset": "compact"}), [], grid, tok).text == "I\n1\nO\n"
    with pytest.raises(prompts.RecipeError, match="arc24 is written through the model's chat template"):
        prompts.transduction_prompt(recipe("arc24"), [], grid, tok)
    # Turns per example under "auto" with no template to write them: refused, never the last turn alone.
    example = [Example(grid, grid)]
    with pytest.raises(prompts.RecipeError, match="3 messages .* no chat template"):
        prompts.transduction_prompt(recipe({"preset": "nvarc", "chat": "auto"}), example, grid, tok)


def test_recipe_errors_name_the_field():
    from arc_submit.solvers import induction, transduction

    with pytest.raises(ValueError, match="unknown field"):
        recipe({"exampel": "x"})
    with pytest.raises(ValueError, match="unknown placeholder"):
        recipe({"transduction": {"query": "{question}"}})
    with pytest.raises(ValueError, match="must start with the prefill"):
        recipe({"transduction": {"prefill": "Answer:"}})
    with pytest.raises(ValueError, match="only means something in a plain recipe"):
        recipe({"preset": "nvarc", "transduction": {"answer_suffix": "{eos}"}})  # the turn's end already ends it
    with pytest.raises(ValueError, match="full_sequence .* per_example"):
        recipe({"ttt_layout": "full_sequence"})  # our single-turn chat layout has no output spans to train
    with pytest.raises(ValueError, match="recipe barc-induction has no transduction layout"):
        transduction.TRANSDUCTION.make_options({"recipe": "barc-induction"})
    with pytest.raises(ValueError, match="recipe nvarc has no induction layout"):
        induction.INDUCTION.make_options({"recipe": "nvarc"})
    with pytest.raises(ValueError, match="option prompt_format is now recipe"):
        transduction.TRANSDUCTION.make_options({"prompt_format": "compact"})
    with pytest.raises(ValueError, match="recipe 'qwen'"):
        transduction.TRANSDUCTION.make_options({"recipe": "qwen"})


def test_a_custom_recipe_round_trips_through_the_tiny_model(arc1_train):
    """A competitor's layout (no instruction, 'I'/'O' markers, numbered rows, no chat template): the solver
    encodes the task with it, the tiny model trained on it writes its answer in it, and the parser reads the
    grid back."""
    from arc_submit.budget import Deadline
    from arc_submit.llm import make_engine
    from arc_submit.solvers import SolverContext, transduction
    from arc_submit.tasks import Example, Task

    grid = arc1_train["6150a2bd"].train[0].input
    swapped = np.where(grid == grid.min(), grid.max(), np.where(grid == grid.max(), grid.min(), grid))
    task = Task("custom-format", tuple(Example(grid, swapped) for _ in range(3)), (Example(grid, swapped),))
    custom = {"preset": "compact", "grid": "row_numbers", "chat": "plain",
              "transduction": {"example": "I {n}\n{input}\nO {n}\n{output}"}}
    r = recipe(custom)
    engine = make_engine("hf", "tiny", max_batch_sequences=32)
    try:
        text = prompts.transduction_prompt(r, task.train[:2], grid, engine.tokenizer).text
        assert text.startswith("I 1\n1 ") and "<|im_start|>" not in text  # the layout, rows numbered, no chat
        full = engine.count_tokens(prompts.transduction_prompt(r, task.train, grid, engine.tokenizer).text)
        options = transduction.TRANSDUCTION.make_options(dict(
            n_augmentations=1, ttt_augmentations=1, ttt_epochs=100, ttt_steps=100, learning_rate=3e-3,
            lr_schedule="constant", lora_rank=8, lora_alpha=16, gradient_checkpointing=False,
            max_prompt_tokens=full - 1, recipe=custom))
        result = transduction.run(task, Deadline.in_seconds(600), SolverContext.for_engine(engine), options)
        assert np.array_equal(result.candidates[0][0].grid, swapped)  # written as numbered rows, parsed back
    finally:
        engine.close()


def test_a_full_sequence_through_the_models_chat_template_trains_each_answer_and_its_end():
    """A per-example-turn recipe written by the tokenizer's own template (not NVARC's literal turns): the whole
    conversation is the template's text, and exactly each assistant turn's content and end token carry the loss."""
    from arc_submit.llm.tiny import build_tokenizer
    from arc_submit.tasks import Example

    tok = build_tokenizer()
    r = recipe({"preset": "nvarc", "chat": "template"})
    examples = [Example(np.array([[1, 2]], np.int8), np.array([[2, 1]], np.int8)),
                Example(np.array([[3], [4]], np.int8), np.array([[4], [3]], np.int8))]
    text = prompts.full_sequence_text(r, examples, tok)
    messages = [{"role": "user", "content": "12"}, {"role": "assistant", "content": "21"},
                {"role": "user", "content": "3\n4"}, {"role": "assistant", "content": "4\n3"}]
    assert "".join(s for s, _ in text.segments) == tok.apply_chat_template(messages, tokenize=False)
    assert [s for s, trained in text.segments if trained] == ["21<|im_end|>", "4\n3<|im_end|>"]
