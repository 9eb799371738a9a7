"""What the engine gets and what the model is trained on, rendered from a recipe (`recipes.py`).

- prompts: `transduction_prompt` (the model writes the test output grid) and `induction_prompt` (it writes a
  program), each a `Rendered`: the chat messages (None for a plain-text recipe) and the text the engine tokenises;
- training targets: `transduction_target` / `induction_target`, the completion that follows a prompt (what is left
  of the answer after the prefill, the answer suffix, the end-of-sequence token as text);
- the full-sequence training text of a task (`full_sequence_text`): every train example in one sequence, loss on
  every output;
- reading answers back: `grid_from_completion`, `code_from_completion` (the continuation after the prefill).

Every function that renders text takes the model's tokenizer: it decides the chat template and the
end-of-sequence token. Without one, `Rendered.text` is None where the text depends on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..tasks import Example, Grid
from .engine import TrainingText
from .recipes import EOS, Layout, Recipe

Message = dict  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class Rendered:
    messages: list[Message] | None  # the chat messages; None for a plain-text recipe
    text: str | None  # the string the engine tokenises; None when that needs a tokenizer and none was given


class RecipeError(ValueError):
    """The recipe cannot be rendered with this tokenizer (no chat template, no end-of-sequence token)."""


# --- building blocks --------------------------------------------------------------------------------------------

def _grid(r: Recipe, grid: Grid) -> str:
    return r.grid.encode(grid)


def end_of_answer(r: Recipe, tokenizer) -> str | None:
    """What ends an answer, as text: the literal turn's end for chat "turns" (NVARC's <|im_end|>), else the
    tokenizer's end-of-sequence token (the end-of-turn token of a chat model). None: it needs a tokenizer."""
    if r.chat == "turns":
        return r.turn.split("{content}", 1)[1].format(role="assistant")
    if tokenizer is None:
        return None
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise RecipeError(f"recipe {r.name}: the tokenizer has no eos_token, so an answer cannot end; set eos_token "
                          f"in the model's tokenizer_config.json")
    return eos


def _fill_eos(text: str, eos: str | None) -> str | None:
    if EOS not in text:
        return text
    return None if eos is None else text.replace(EOS, eos)


def _user_content(layout: Layout, r: Recipe, examples: Sequence[Example], test_inputs: Sequence[Grid]) -> str:
    """A single-turn layout's user text: instruction, the solved examples, the test input(s), closing ({eos} kept)."""
    shown = [layout.example.format(n=i, input=_grid(r, ex.input), output=_grid(r, ex.output), eos=EOS)
             for i, ex in enumerate(examples, 1)]
    queries = [layout.query.format(n=i, input=_grid(r, g), output="", eos=EOS) for i, g in enumerate(test_inputs, 1)]
    return layout.separator.join(p for p in (layout.instruction, *shown, *queries, layout.closing) if p)


def _answer(layout: Layout, content: str) -> str:
    return layout.answer.format(answer=content, eos=EOS)


def _messages(layout: Layout, r: Recipe, examples, test_inputs) -> list[Message]:
    system = [{"role": "system", "content": layout.system}] if layout.system else []
    if layout.turns == "single":
        return system + [{"role": "user", "content": _user_content(layout, r, examples, test_inputs)}]
    turns = []
    for i, ex in enumerate(examples, 1):
        turns.append({"role": "user", "content": layout.query.format(n=i, input=_grid(r, ex.input), output="")})
        turns.append({"role": "assistant", "content": _answer(layout, _grid(r, ex.output)) + layout.answer_suffix})
    for i, g in enumerate(test_inputs, len(examples) + 1):
        turns.append({"role": "user", "content": layout.query.format(n=i, input=_grid(r, g), output="")})
    return system + turns


def _chat_template_of(r: Recipe, tokenizer):
    """The tokenizer to apply a chat template with, or None for plain text; refuses a template recipe without one."""
    has = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if r.chat == "template" and tokenizer is not None and not has:
        raise RecipeError(f"recipe {r.name} is written through the model's chat template, and this tokenizer has "
                          f"none: give the model folder whose tokenizer_config.json (or chat_template.jinja) has "
                          f"the template the model was trained with")
    return tokenizer if has else None


def _render(r: Recipe, layout: Layout, messages: list[Message], tokenizer) -> Rendered:
    """Messages -> the prompt text, ending with the assistant's prefill."""
    if r.chat == "plain":
        return Rendered(None, _fill_eos(messages[-1]["content"] + layout.prefill, end_of_answer(r, tokenizer)
                                        if tokenizer is not None else None))
    if r.chat == "turns":
        return Rendered(messages, "".join(r.turn.format(role=m["role"], content=m["content"]) for m in messages)
                        + r.generation_prompt + layout.prefill)
    if tokenizer is None:
        return Rendered(messages, None)
    templated = _chat_template_of(r, tokenizer)
    if templated is None:  # chat "auto" and no template: the user text as it is (our own layouts on a base model)
        if len(messages) != 1:  # turns or a system message would be lost without a template to write them
            raise RecipeError(f"recipe {r.name}: its prompt has {len(messages)} messages (roles "
                              f"{', '.join(m['role'] for m in messages)}) and the tokenizer has no chat template to "
                              f"write them; give the model's chat template, or set chat: turns (with a turn format) "
                              f"or chat: plain")
        return Rendered(messages, messages[0]["content"] + layout.prefill)
    # The prefill goes after the opened assistant turn as it is. arc25 passed it as a final assistant message with
    # continue_final_message, and Llama 3.1's template trims it: the prompt then ends "problem:" where BARC's model
    # was trained on "problem:\n```python", a token boundary it never saw.
    text = templated.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + layout.prefill
    return Rendered(messages, text)


# --- transduction -------------------------------------------------------------------------------------------------

def transduction_prompt(r: Recipe, examples: Sequence[Example], test_input: Grid, tokenizer=None) -> Rendered:
    layout = r.layout("transduction")
    return _render(r, layout, _messages(layout, r, examples, [test_input]), tokenizer)


def transduction_target(r: Recipe, grid: Grid, tokenizer) -> str:
    """The completion a model is trained to write after a transduction prompt, its end token included."""
    return _target(r, r.layout("transduction"), _grid(r, grid), tokenizer)


def _target(r: Recipe, layout: Layout, content: str, tokenizer) -> str:
    end = end_of_answer(r, tokenizer)
    if end is None:
        raise RecipeError(f"recipe {r.name}: a training target ends with the tokenizer's end-of-sequence token; "
                          f"give the tokenizer")
    return _fill_eos(_answer(layout, content)[len(layout.prefill):] + layout.answer_suffix, end) + end


def grid_from_completion(r: Recipe, completion: str) -> Grid | None:
    """The grid a transduction answer holds (the continuation after the prompt), or None when it is not one."""
    layout = r.layout("transduction")
    head, _, _ = layout.answer.partition("{answer}")
    text = layout.prefill + completion
    if not r.grid.header:  # the grid starts where the answer's text before it ends
        if not text.startswith(head):
            return None
        text = text[len(head):]
    return r.grid.parse(text)


def full_sequence_text(r: Recipe, examples: Sequence[Example], tokenizer) -> TrainingText:
    """Every example of a task in one sequence, as the prompts write them, with the loss on every output and its
    end (NVARC's fmt_train over the task, the ARChitects' training text)."""
    layout = r.layout("transduction")
    end = end_of_answer(r, tokenizer)
    if end is None:
        raise RecipeError(f"recipe {r.name}: a training text ends each answer with the tokenizer's end-of-sequence "
                          f"token; give the tokenizer")
    if r.chat == "plain":
        head, _, tail = layout.example.partition("{output}")
        segments = [(layout.instruction, False)] if layout.instruction else []
        for i, ex in enumerate(examples, 1):
            if i > 1 or layout.instruction:
                segments.append((layout.separator, False))
            segments.append((head.format(n=i, input=_grid(r, ex.input), eos=end), False))
            segments.append((_grid(r, ex.output) + tail.format(n=i, input="", eos=end), True))
        return TrainingText(tuple((t, trained) for t, trained in segments if t))
    messages = _messages(layout, r, examples, [])
    if r.chat == "turns":
        head, _, tail = r.turn.partition("{content}")
        segments = []
        for m in messages:
            trained = m["role"] == "assistant"
            segments.append((head.format(role=m["role"]), False))
            segments.append((m["content"] + tail.format(role=m["role"]), trained))
        return TrainingText(tuple((t, trained) for t, trained in segments if t))
    return _templated_sequence(r, messages, tokenizer, end)


def _templated_sequence(r: Recipe, messages: list[Message], tokenizer, end: str) -> TrainingText:
    """The chat template's text of a whole conversation, cut so each assistant content (and the end token right
    after it) carries the loss."""
    templated = _chat_template_of(r, tokenizer)
    if templated is None:
        raise RecipeError(f"recipe {r.name}: ttt_layout full_sequence with chat {r.chat} needs the model's chat "
                          f"template, and the tokenizer has none")
    text = templated.apply_chat_template(messages, tokenize=False)
    segments, at = [], 0
    for m in (m for m in messages if m["role"] == "assistant"):
        start = text.find(m["content"], at)
        if start < 0:
            raise RecipeError(f"recipe {r.name}: the chat template changes the assistant's text (trims it?), so "
                              f"its outputs cannot be found to train on")
        stop = start + len(m["content"])
        stop += len(end) if text.startswith(end, stop) else 0
        segments += [(text[at:start], False), (text[start:stop], True)]
        at = stop
    segments.append((text[at:], False))
    return TrainingText(tuple((t, trained) for t, trained in segments if t))


# --- induction ----------------------------------------------------------------------------------------------------

def test_groups(r: Recipe, n_tests: int) -> list[tuple[int, ...]]:
    """Which test inputs each induction prompt shows: all in one, or `tests_per_prompt` at a time (BARC: one)."""
    per = r.layout("induction").tests_per_prompt or max(n_tests, 1)
    return [tuple(range(i, min(i + per, n_tests))) for i in range(0, n_tests, per)] or [()]


def induction_prompt(r: Recipe, examples: Sequence[Example], test_inputs: Sequence[Grid] = (),
                     tokenizer=None) -> Rendered:
    layout = r.layout("induction")
    return _render(r, layout, _messages(layout, r, examples, test_inputs), tokenizer)


def induction_target(r: Recipe, code: str, tokenizer) -> str:
    """The completion a model is trained to write for a program (hindsight relabelling trains on these)."""
    return _target(r, r.layout("induction"), code.strip(), tokenizer)


_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_from_completion(r: Recipe, completion: str) -> str | None:
    """The program in a model's answer (the prefill and the continuation): the first fenced block (an unclosed last
    block counts), or None."""
    m = _CODE_BLOCK.search(r.layout("induction").prefill + completion)
    code = m.group(1).strip() if m else ""
    return code if "def " in code else None
