"""Checking settings against their schema before they are used: known keys, the declared types, enumerated values
(value ranges: :mod:`fourdnex_jax.utils.bounds`).

Two entry points, both raising :class:`~fourdnex_jax.utils.errors.InputError` with one line that names the key,
what was wrong and the fix (the closest known key for a typo, the choices of an enumeration):

* :func:`check_dataclass_values` -- a dict meant for a (frozen) dataclass constructor, e.g. a bundle's
  ``configs/transformer.json``: unknown keys, and values whose type does not match the field's annotation
  (``"num_layers": "2"`` is a string where an int is declared);
* :func:`check_choices` -- a nested mapping (an ml_collections config) against ``{dotted.key: allowed values}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fourdnex_jax.utils import bounds
from fourdnex_jax.utils.errors import InputError


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (as JSON gives it: lists for tuples) fits ``annotation``; unknown annotations pass."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (tuple, list, Sequence) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return not args or all(_type_ok(v, args[0]) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def check_dataclass_values(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Unknown keys and mistyped values of ``values`` for dataclass ``cls`` raise InputError naming ``where``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise InputError(f"{where}: unknown key {key!r}{_suggest(key, fields)} for {cls.__name__}; remove it or "
                             "fix its name")
    for key, value in values.items():
        if not _type_ok(value, hints.get(key, Any)):
            want = getattr(hints[key], "__name__", str(hints[key]))
            raise InputError(f"{where}: {key}={value!r} is a {type(value).__name__}, {cls.__name__} needs {want}; "
                             "write it without quotes / as that type")
    if cls.__name__ in bounds.SECTION_OF:  # the value ranges (fourdnex_jax.utils.bounds), naming ``where``
        bounds.check_section(bounds.SECTION_OF[cls.__name__], values, where)


def check_choices(config: Any, choices: Mapping[str, Sequence[Any]], where: str = "config") -> None:
    """Every dotted key of ``choices`` that ``config`` has must hold one of its values (None = left to a preset
    is allowed when None is listed)."""
    for dotted, allowed in choices.items():
        node = config
        for part in dotted.split("."):
            try:
                node = node[part]
            except (KeyError, TypeError):
                node = _MISSING
                break
        if node is _MISSING:
            continue
        if node not in allowed:
            shown = ", ".join(repr(a) for a in allowed if a is not None)
            raise InputError(f"{where}: {dotted}={node!r} is not a valid choice; use one of {shown}"
                             + (" (or leave it unset)" if None in allowed else ""))


_MISSING = object()
