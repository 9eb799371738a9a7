"""Solver options as typed dataclasses, built once from the plain dict a YAML file, the CLI or a notebook gives.

A solver's options class is a frozen dataclass: one field per option, with its type and default, and range checks
in its `__post_init__`. A field whose type is itself a dataclass is a group several solvers share (the LoRA
training fields, the augmentations, the program executor's settings); its fields are written at the top level of
`solver.options` like any other (`lora_rank: 8`, not `train: {lora_rank: 8}`).

`build_options` checks every name (an unknown one fails listing the known ones), converts each value as a config
key is converted (config.py: "8" from the CLI is 8, an int is a float where a float is wanted), turns lists into
tuples, checks Literal choices, then lets the dataclasses check themselves. Every failure is a ValueError naming
the solver and the option, raised at preflight and once per worker, never per task.
"""

from __future__ import annotations

import dataclasses
import types
from types import MappingProxyType
import typing
from typing import Any, Literal, Mapping, get_args, get_origin, get_type_hints

from ..config import coerce_value  # an option converts exactly as a config key does


# Options that were renamed: a config still using the old name fails saying the new one.
RENAMED = MappingProxyType({"prompt_format": "recipe (a preset of llm/recipes.py, a dict of Recipe fields, or module:attribute)"})


def build_options(solver: str, cls: type, values: Mapping[str, Any]):
    """An instance of the options dataclass `cls` from `values` (see the module docstring)."""
    known = option_names(cls)
    unknown = sorted(set(values) - set(known))
    renamed = [f"{old} is now {new}" for old, new in RENAMED.items() if old in unknown]
    if renamed:
        raise ValueError(f"{solver} solver: option {'; '.join(renamed)}")
    if unknown:
        raise ValueError(f"{solver} solver: unknown option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known)) or 'none (it takes no options)'} (set them under solver.options)")
    try:
        return _build(cls, values)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{solver} solver: {e}") from None


def option_names(cls: type) -> list[str]:
    """Every option `cls` takes, its groups' fields included; a name two of them share is a bug in the class."""
    names: list[str] = []
    for name, hint in _fields(cls):
        names += option_names(hint) if dataclasses.is_dataclass(hint) else [name]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TypeError(f"{cls.__name__}: option(s) {', '.join(duplicated)} defined twice (in a group and outside)")
    return names


def check_range(name: str, value: float, low: float, high: float) -> None:
    """For options classes' __post_init__."""
    if not low <= value <= high:
        raise ValueError(f"option {name}={value!r} is out of range {low:g}..{high:g}")


def check_at_least(name: str, value: int | None, low: int) -> None:
    """For options classes' __post_init__; None (the default meaning "no limit") passes."""
    if value is not None and value < low:
        raise ValueError(f"option {name}={value!r} must be at least {low} (or null)")


def _fields(cls: type) -> list[tuple[str, Any]]:
    hints = get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _build(cls: type, values: Mapping[str, Any]):
    kwargs = {}
    for name, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, values)  # a group takes its own fields from the same flat mapping
        elif name in values:
            kwargs[name] = _convert(values[name], hint, name)
    return cls(**kwargs)


def _convert(value: Any, hint: Any, name: str):
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"option {name}={value!r}; use one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for choice in (a for a in args if a is not type(None)):
            try:
                return _convert(value, choice, name)
            except ValueError:
                continue
        raise ValueError(f"option {name}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"option {name}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(value if item is Any else [_convert(v, item, name) for v in value])
    if hint is Any:
        return value
    return coerce_value(value, hint, f"option {name}")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return hint.__name__ if isinstance(hint, type) else str(hint)
