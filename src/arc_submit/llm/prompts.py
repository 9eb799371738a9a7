"""Grids as text and back, and the prompts the solvers send: "output grid from examples" (transduction) and
"write a program" (induction).

Encodings (`GRID_FORMATS`), each with an exact inverse in `parse_grid`:
- plain:        one line per row, one digit per cell          "012\n340"
- row_numbers:  each row prefixed with its 1-based number     "1 012\n2 340"
- shape_header: "<rows>x<cols>" line, then the plain rows      "2x3\n012\n340"

Parsing model output never raises: malformed text (ragged rows, a non-digit, a wrong row number, a header
that disagrees with the rows, a side over 30) gives None, and the solver moves on to the next sample.
"""

from __future__ import annotations

import re
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


def grid_from_completion(text: str, fmt: str = "plain") -> Grid | None:
    """A model's answer -> grid: the text up to the first blank line (or end), parsed; None if malformed."""
    body = text.lstrip("\n").split("\n\n", 1)[0]
    return parse_grid(body, fmt)


# --- transduction: the model writes the test output grid directly ---------------------------------------

TRANSDUCTION_INSTRUCTION = ("Find the rule that maps each input grid to its output grid in the examples, "
                            "then apply it to the test input and write the test output grid.")


def _examples_text(examples: Sequence[Example], fmt: str) -> str:
    parts = []
    for i, ex in enumerate(examples, 1):
        parts.append(f"Example {i}\ninput:\n{encode_grid(ex.input, fmt)}\noutput:\n{encode_grid(ex.output, fmt)}")
    return "\n\n".join(parts)


def transduction_text(examples: Sequence[Example], test_input: Grid, fmt: str = "plain") -> str:
    """The user message: instruction, solved examples, the test input; the answer follows 'output:'."""
    return (f"{TRANSDUCTION_INSTRUCTION}\n\n{_examples_text(examples, fmt)}\n\n"
            f"Test\ninput:\n{encode_grid(test_input, fmt)}\noutput:\n")


def transduction_answer(output: Grid, fmt: str = "plain") -> str:
    """The completion a model is trained to write: the grid and a blank line that ends it."""
    return encode_grid(output, fmt) + "\n\n"


def transduction_prompt(examples: Sequence[Example], test_input: Grid, fmt: str = "plain",
                        tokenizer=None) -> str:
    """The full prompt string, through the tokenizer's chat template when it has one."""
    return apply_chat(transduction_text(examples, test_input, fmt), tokenizer)


def leave_one_out_pairs(examples: Sequence[Example], fmt: str = "plain", tokenizer=None) -> list[tuple[str, str]]:
    """Test-time-training data from a task's own train examples: each one in turn is the 'test', the others
    the examples. Needs at least 2 examples (returns [] otherwise)."""
    examples = list(examples)
    if len(examples) < 2:
        return []
    pairs = []
    for i, held_out in enumerate(examples):
        rest = examples[:i] + examples[i + 1:]
        pairs.append((transduction_prompt(rest, held_out.input, fmt, tokenizer), transduction_answer(held_out.output, fmt)))
    return pairs


# --- induction: the model writes a Python program -----------------------------------------------------------

INDUCTION_INSTRUCTION = ("Write a Python function `transform(grid)` that maps each input grid to its output "
                         "grid in the examples. A grid is a list of rows; each row is a list of integers 0-9. "
                         "Answer with one ```python code block.")


def induction_text(examples: Sequence[Example], test_inputs: Sequence[Grid] = (), fmt: str = "plain") -> str:
    text = f"{INDUCTION_INSTRUCTION}\n\n{_examples_text(examples, fmt)}"
    for i, grid in enumerate(test_inputs, 1):
        text += f"\n\nTest input {i}:\n{encode_grid(grid, fmt)}"
    return text + "\n"


def induction_prompt(examples: Sequence[Example], test_inputs: Sequence[Grid] = (), fmt: str = "plain",
                     tokenizer=None) -> str:
    return apply_chat(induction_text(examples, test_inputs, fmt), tokenizer)


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
