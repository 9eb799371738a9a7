"""Grids as text and back, and the prompts the solvers send: "output grid from examples" (transduction) and
"write a program" (induction).

Encodings (`GRID_FORMATS`), each with an exact inverse in `parse_grid`:
- plain:        one line per row, one digit per cell          "012\n340"
- row_numbers:  each row prefixed with its 1-based number     "1 012\n2 340"
- shape_header: "<rows>x<cols>" line, then the plain rows      "2x3\n012\n340"

Parsing model output never raises: malformed text (ragged rows, a non-digit, a wrong row number, a header
that disagrees with the rows, a side over 30) gives None, and the solver moves on to the next sample.

A model fine-tuned elsewhere expects its own prompts: every piece of text a prompt is made of comes from a
`PromptFormat` (data: instruction, example and test layouts, grid encoding, system message, chat template on or
off). Presets are in PROMPT_PRESETS ("arc-submit" is the layout below); solvers take `prompt_format`: a preset
name, a dict of fields (with an optional "preset" to start from), or "module:attribute" naming a PromptFormat.
Wherever a function takes `fmt`, a grid-format name means the "arc-submit" layout with that grid encoding.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Sequence

import numpy as np

from ..tasks import MAX_SIDE, Example, Grid

GRID_FORMATS = ("plain", "row_numbers", "shape_header")


def encode_grid(grid: Grid, fmt: str = "plain") -> str:
    g = np.asarray(grid)
    rows = ["".join(str(int(c)) for c in row) for row in g]
    if fmt == "plain":
        return "\n".join(rows)
    if fmt == "row_numbers":
        return "\n".join(f"{i + 1} {row}" for i, row in enumerate(rows))
    if fmt == "shape_header":
        return f"{g.shape[0]}x{g.shape[1]}\n" + "\n".join(rows)
    raise ValueError(f"unknown grid format {fmt!r}; use one of {', '.join(GRID_FORMATS)}")


_HEADER = re.compile(r"^(\d+)x(\d+)$")
_NUMBERED_ROW = re.compile(r"^(\d+) ([0-9]+)$")


def parse_grid(text: str, fmt: str = "plain") -> Grid | None:
    """The grid a text encodes, or None when the text is not a valid grid in `fmt`.

    Leading/trailing blank lines and trailing spaces are tolerated (models emit them); anything after the grid
    must already have been cut off by the caller (see `grid_from_completion`).
    """
    if fmt not in GRID_FORMATS:
        raise ValueError(f"unknown grid format {fmt!r}; use one of {', '.join(GRID_FORMATS)}")
    lines = [line.rstrip() for line in text.strip("\n").split("\n")]
    if fmt == "shape_header":
        if not lines or not (m := _HEADER.match(lines[0])):
            return None
        shape = (int(m.group(1)), int(m.group(2)))
        lines = lines[1:]
    if fmt == "row_numbers":
        stripped = []
        for i, line in enumerate(lines):
            m = _NUMBERED_ROW.match(line)
            if not m or int(m.group(1)) != i + 1:
                return None
            stripped.append(m.group(2))
        lines = stripped
    if not lines or not all(line and line.isdigit() and line.isascii() for line in lines):
        return None
    width = len(lines[0])
    if any(len(line) != width for line in lines) or len(lines) > MAX_SIDE or width > MAX_SIDE:
        return None
    grid = np.array([[int(c) for c in line] for line in lines], dtype=np.int8)
    if fmt == "shape_header" and grid.shape != shape:
        return None
    return grid


def grid_from_completion(text: str, fmt="plain") -> Grid | None:
    """A model's answer -> grid: the text up to the first blank line (or end), parsed; None if malformed."""
    body = text.lstrip("\n").split("\n\n", 1)[0]
    return parse_grid(body, _pf(fmt).grid)


# --- prompt formats ------------------------------------------------------------------------------------------

TRANSDUCTION_INSTRUCTION = ("Find the rule that maps each input grid to its output grid in the examples, "
                            "then apply it to the test input and write the test output grid.")
INDUCTION_INSTRUCTION = ("Write a Python function `transform(grid)` that maps each input grid to its output "
                         "grid in the examples. A grid is a list of rows; each row is a list of integers 0-9. "
                         "Answer with one ```python code block.")


@dataclass(frozen=True)
class PromptFormat:
    """Every piece of text a prompt is made of. Layouts use {n} (1-based example number), {input}, {output}."""
    grid: str = "plain"  # one of GRID_FORMATS
    transduction_instruction: str = TRANSDUCTION_INSTRUCTION  # "" for none
    induction_instruction: str = INDUCTION_INSTRUCTION
    example: str = "Example {n}\ninput:\n{input}\noutput:\n{output}"
    separator: str = "\n\n"  # between the instruction, the examples and the test
    test: str = "Test\ninput:\n{input}\noutput:\n"  # the answer grid follows it
    induction_test: str = "Test input {n}:\n{input}"
    system: str | None = None  # a system message, where the chat template has one
    chat: bool = True  # wrap in the tokenizer's chat template when it has one

    def __post_init__(self):
        if self.grid not in GRID_FORMATS:
            raise ValueError(f"prompt format: grid {self.grid!r}; use one of {', '.join(GRID_FORMATS)}")
        for name in ("example", "test", "induction_test"):
            try:
                getattr(self, name).format(n=1, input="", output="")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"prompt format: {name} {getattr(self, name)!r} uses an unknown placeholder "
                                 f"({e}); use {{n}}, {{input}}, {{output}}") from None


PROMPT_PRESETS = MappingProxyType({
    "arc-submit": PromptFormat(),
    "arc-submit-numbered": PromptFormat(grid="row_numbers"),
    # Short, instruction-free, as models fine-tuned on bare ARC text often expect.
    "compact": PromptFormat(transduction_instruction="", induction_instruction="", example="I\n{input}\nO\n{output}",
                            separator="\n", test="I\n{input}\nO\n", induction_test="T\n{input}"),
})


def prompt_format(value=None, grid: str | None = None) -> PromptFormat:
    """A PromptFormat from a preset name, a dict of fields (optional "preset" to start from), "module:attribute",
    or a PromptFormat; `grid`, when given, replaces its grid encoding. Errors name the choices."""
    if value is None or isinstance(value, PromptFormat):
        pf = value or PROMPT_PRESETS["arc-submit"]
    elif isinstance(value, str) and value in PROMPT_PRESETS:
        pf = PROMPT_PRESETS[value]
    elif isinstance(value, str) and ":" in value:
        module, attr = value.split(":", 1)
        pf = getattr(importlib.import_module(module), attr)
        if not isinstance(pf, PromptFormat):
            raise ValueError(f"prompt_format {value!r} is a {type(pf).__name__}, not a PromptFormat")
    elif isinstance(value, dict):
        fields_known = {f.name for f in fields(PromptFormat)}
        unknown = sorted(set(value) - fields_known - {"preset"})
        if unknown:
            raise ValueError(f"prompt_format: unknown field(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(fields_known | {'preset'}))}")
        base = prompt_format(value.get("preset", "arc-submit"))
        pf = replace(base, **{k: v for k, v in value.items() if k != "preset"})
    else:
        raise ValueError(f"prompt_format {value!r}: use one of {', '.join(PROMPT_PRESETS)}, a dict of fields, "
                         f"or module:attribute")
    return replace(pf, grid=grid) if grid else pf


def _pf(fmt) -> PromptFormat:
    return fmt if isinstance(fmt, PromptFormat) else PromptFormat(grid=fmt)


def _examples_text(examples: Sequence[Example], pf: PromptFormat) -> str:
    return pf.separator.join(pf.example.format(n=i, input=encode_grid(ex.input, pf.grid),
                                               output=encode_grid(ex.output, pf.grid))
                             for i, ex in enumerate(examples, 1))


def _join(pf: PromptFormat, *parts: str) -> str:
    return pf.separator.join(p for p in parts if p)


# --- transduction: the model writes the test output grid directly ---------------------------------------

def transduction_text(examples: Sequence[Example], test_input: Grid, fmt="plain") -> str:
    """The user message: instruction, solved examples, the test input; the answer follows."""
    pf = _pf(fmt)
    return _join(pf, pf.transduction_instruction, _examples_text(examples, pf),
                 pf.test.format(n=len(examples) + 1, input=encode_grid(test_input, pf.grid), output=""))


def transduction_answer(output: Grid, fmt="plain") -> str:
    """The completion a model is trained to write: the grid and a blank line that ends it."""
    return encode_grid(output, _pf(fmt).grid) + "\n\n"


def transduction_prompt(examples: Sequence[Example], test_input: Grid, fmt="plain", tokenizer=None) -> str:
    """The full prompt string, through the tokenizer's chat template when it has one (and the format wants it)."""
    pf = _pf(fmt)
    return apply_chat(transduction_text(examples, test_input, pf), tokenizer if pf.chat else None, pf.system)


# --- induction: the model writes a Python program -----------------------------------------------------------

def induction_text(examples: Sequence[Example], test_inputs: Sequence[Grid] = (), fmt="plain") -> str:
    pf = _pf(fmt)
    tests = [pf.induction_test.format(n=i, input=encode_grid(g, pf.grid), output="")
             for i, g in enumerate(test_inputs, 1)]
    return _join(pf, pf.induction_instruction, _examples_text(examples, pf), *tests) + "\n"


def induction_prompt(examples: Sequence[Example], test_inputs: Sequence[Grid] = (), fmt="plain",
                     tokenizer=None) -> str:
    pf = _pf(fmt)
    return apply_chat(induction_text(examples, test_inputs, pf), tokenizer if pf.chat else None, pf.system)


def induction_answer(code: str) -> str:
    """The completion a model is trained to write for a program (hindsight relabelling trains on these)."""
    return f"```python\n{code.strip()}\n```\n"


_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_from_completion(text: str) -> str | None:
    """The program in a model's answer: the first fenced block (an unclosed last block counts), or None."""
    m = _CODE_BLOCK.search(text)
    code = m.group(1).strip() if m else ""
    return code if "def " in code else None


# --- chat templates -----------------------------------------------------------------------------------------

def apply_chat(user_text: str, tokenizer=None, system: str | None = None) -> str:
    """The prompt string a chat model expects (its template, generation prompt added); plain text otherwise."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return user_text
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
