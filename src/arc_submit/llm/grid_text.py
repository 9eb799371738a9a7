"""A grid as text and back, in any of the encodings published ARC models were trained on.

One value object, `GridText`, composes what the encodings differ in: the word for each colour (digits, or BARC's
colour names), what separates cells and rows, 1-based row numbers, a header before the rows (the shape, arc24's
fenced "```grid shape: HxW"), a footer after them. `parse` is the exact inverse of `encode`, and never raises:
text that is not a grid in that encoding (ragged rows, an unknown cell, a wrong row number, a header that
disagrees with the rows, a side over 30) gives None, and the solver moves on to the next sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..tasks import MAX_SIDE, Grid

DIGITS = tuple("0123456789")
# BARC's names after its data renamed Grey/Teal/Maroon (xu3kev/BARC finetune/alignment-handbook/gen_dataset_both.py).
BARC_COLOUR_NAMES = ("Black", "Blue", "Red", "Green", "Yellow", "Gray", "Pink", "Orange", "Purple", "Brown")


@dataclass(frozen=True)
class GridText:
    colours: tuple[str, ...] = DIGITS  # the text of colour 0..9
    cell_separator: str = ""
    row_separator: str = "\n"
    row_numbers: bool = False  # "1 " before the first row, "2 " before the second...
    header: str = ""  # before the rows; {rows} and {cols} are the grid's shape
    footer: str = ""  # after the rows

    def __post_init__(self):
        if len(self.colours) != 10 or len(set(self.colours)) != 10 or not all(self.colours):
            raise ValueError(f"grid text: colours must be 10 distinct non-empty texts, got {self.colours!r}")
        if not self.row_separator:
            raise ValueError("grid text: row_separator must not be empty (rows could not be told apart)")
        if not self.cell_separator and any(len(c) != 1 for c in self.colours):
            raise ValueError("grid text: colours longer than one character need a cell_separator")
        try:
            self.header.format(rows=1, cols=1)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"grid text: header {self.header!r} uses an unknown placeholder ({e}); use "
                             f"{{rows}} and {{cols}}") from None

    def encode(self, grid: Grid) -> str:
        g = np.asarray(grid)
        rows = [self.cell_separator.join(self.colours[int(c)] for c in row) for row in g]
        if self.row_numbers:
            rows = [f"{i} {row}" for i, row in enumerate(rows, 1)]
        return self.header.format(rows=g.shape[0], cols=g.shape[1]) + self.row_separator.join(rows) + self.footer

    def parse(self, text: str) -> Grid | None:
        """The grid `text` holds, or None. Where the encoding has a header, the grid starts at the header's first
        occurrence (a model's answer may open with other text); without one, leading and trailing blank lines and
        trailing spaces are tolerated. Anything after the footer (or, with no footer, after the first blank line)
        is not part of the grid."""
        shape = None
        if self.header:
            found = self._header_pattern().search(text)
            if not found:
                return None
            shape = (int(found.group("rows")), int(found.group("cols")))
            text = text[found.end():]
        else:
            text = text.lstrip("\n")
        if self.footer.strip():
            at = text.find(self.footer.strip())
            if at < 0:
                return None
            text = text[:at]
        elif self.row_separator == "\n":
            text = text.split("\n\n", 1)[0]
        lines = [line.rstrip() for line in text.rstrip("\n").split(self.row_separator)]
        if self.row_numbers:
            lines = _without_row_numbers(lines)
        grid = self._cells(lines) if lines else None
        if grid is None or (shape is not None and grid.shape != shape):
            return None
        return grid

    def _header_pattern(self) -> re.Pattern:
        literal = [re.escape(part) for part in re.split(r"\{rows\}|\{cols\}", self.header)]
        names = re.findall(r"\{(rows|cols)\}", self.header)
        pattern = literal[0] + "".join(rf"(?P<{n}>\d+)" + lit for n, lit in zip(names, literal[1:]))
        if set(names) != {"rows", "cols"}:
            raise ValueError(f"grid text: header {self.header!r} must show both {{rows}} and {{cols}} to be parsed")
        return re.compile(pattern)

    def _cells(self, lines: list[str]) -> Grid | None:
        index = {c: i for i, c in enumerate(self.colours)}
        rows = []
        for line in lines:
            cells = line.split(self.cell_separator) if self.cell_separator else list(line)
            if not cells or any(c not in index for c in cells):
                return None
            rows.append([index[c] for c in cells])
        width = len(rows[0])
        if any(len(r) != width for r in rows) or len(rows) > MAX_SIDE or width > MAX_SIDE or width == 0:
            return None
        return np.array(rows, dtype=np.int8)


_NUMBERED = re.compile(r"^(\d+) (.*)$")


def _without_row_numbers(lines: list[str]) -> list[str]:
    out = []
    for i, line in enumerate(lines, 1):
        m = _NUMBERED.match(line)
        if not m or int(m.group(1)) != i:
            return []
        out.append(m.group(2))
    return out


# The encodings the presets use; a recipe may also give its own GridText fields as a dict.
GRID_TEXTS = MappingProxyType({
    "plain": GridText(),
    "row_numbers": GridText(row_numbers=True),
    "shape_header": GridText(header="{rows}x{cols}\n"),
    # BARC: names separated by spaces, and a newline after the last row (its grid_to_input).
    "colour_names": GridText(colours=BARC_COLOUR_NAMES, cell_separator=" ", footer="\n"),
    # arc24: GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder())) of ironbar/arc24 scripts/arc24/encoders.py.
    "arc24": GridText(row_numbers=True, header="```grid shape: {rows}x{cols}\n", footer="\n```"),
})


def grid_text(value) -> GridText:
    """A GridText from a name of GRID_TEXTS, a dict of GridText fields, or a GridText."""
    if isinstance(value, GridText):
        return value
    if isinstance(value, str) and value in GRID_TEXTS:
        return GRID_TEXTS[value]
    if isinstance(value, dict):
        known = set(GridText.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"grid: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return GridText(**{k: tuple(v) if k == "colours" else v for k, v in value.items()})
    raise ValueError(f"grid {value!r}: use one of {', '.join(GRID_TEXTS)} or a dict of GridText fields")
