"""Command-line options built from a settings dataclass's fields, so their defaults, choices and help
have one home (the dataclass) and the CLI cannot drift from the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def _base_type(hint: Any) -> type:
    """`int | None` -> int; `float` -> float."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if len(args) != 1:
            raise TypeError(f"a setting has one type besides None, got {hint}")
        return args[0]
    return hint


def add_settings_args(parser: argparse.ArgumentParser, cls: type, names: Sequence[str] | None = None) -> None:
    """One `--field-name` option per field of the dataclass `cls` (or of those in `names`, in field order).

    The option's default is the field's; its help, choices and metavar come from the field's metadata; a
    bool field is `--x/--no-x`; a field whose default is None keeps None when the option is not given.
    """
    hints = typing.get_type_hints(cls)
    chosen = [f for f in dataclasses.fields(cls) if names is None or f.name in names]
    unknown = sorted(set(names or ()) - {f.name for f in chosen})
    if unknown:
        valid = [f.name for f in dataclasses.fields(cls)]
        raise ValueError(f"{cls.__name__} has no settings {unknown}; valid: {', '.join(valid)}")
    for f in chosen:
        kind = _base_type(hints[f.name])
        meta = dict(f.metadata)
        help_text = meta.pop("help") + (" (default: %(default)s)" if f.default is not None else "")
        how = dict(action=argparse.BooleanOptionalAction) if kind is bool else dict(type=kind)
        parser.add_argument(f"--{f.name.replace('_', '-')}", default=f.default, help=help_text, **how, **meta)


def settings_from_args(cls: type[T], args: argparse.Namespace, names: Sequence[str] | None = None) -> T:
    """`cls` from the options `add_settings_args(parser, cls, names)` added; other fields keep their defaults."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if names is None or f.name in names})
