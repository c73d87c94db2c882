"""Nested ``{name: {name: leaf}}`` dicts <-> flat ``{'a/b/c': leaf}`` dicts ('/'-joined parameter paths)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def nest(flat: Mapping[str, Any]) -> dict:
    """``{'a/b/c': x}`` -> ``{'a': {'b': {'c': x}}}``."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': {'c': x}}}`` -> ``{'a/b/c': x}`` (any ``Mapping`` is a node, everything else a leaf)."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out
