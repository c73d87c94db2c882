"""The table engine: declarative, two-way, strict weight-mapping tables between PyTorch state dicts and NNX states.

A leaf of the package (no file formats here; :mod:`fourdnex_jax.weights` reads and writes files and feeds the
tables through the :class:`TensorSource` protocol). Every model's ``mapping.py`` builds its table from these pieces.

A table is a list of :class:`Rule` s. Each rule names one torch key, one path in the flat NNX state and the layout
change between them as an einops pattern written torch -> JAX (``"o i -> i o"`` for a Linear weight,
``"o i t h w -> t h w i o"`` for a Conv3d). The inverse direction reverses the pattern, so one table serves both
directions. A torch key containing ``{i}`` is a per-layer tensor: layers ``0..num_layers-1`` are stacked along axis 0
of the JAX array (scanned layers).

Strictness: :meth:`WeightMapping.to_jax` checks *every* key before reading any data and raises one
:class:`WeightMappingError` that lists all missing, unexpected, mis-shaped and wrongly typed tensors. Only keys that
match the table's documented ``ignore`` patterns may be left unused.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import einops
import jax
import numpy as np


class WeightMappingError(ValueError):
    """A checkpoint does not match the model: the message lists every problem found."""


class TensorSource(Protocol):
    """Read-only, lazy access to named tensors (a torch state dict, safetensors files, ...)."""

    def keys(self) -> Iterable[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> np.dtype: ...

    def get(self, key: str) -> np.ndarray: ...


class DictSource:
    """A :class:`TensorSource` over an in-memory ``{key: array}`` dict (numpy arrays or anything ``np.asarray``
    accepts)."""

    def __init__(self, tensors: Mapping[str, np.ndarray]):
        self._tensors = tensors

    def keys(self) -> Iterable[str]:
        return self._tensors.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def dtype(self, key: str) -> np.dtype:
        return np.dtype(self._tensors[key].dtype)

    def get(self, key: str) -> np.ndarray:
        return np.asarray(self._tensors[key])


class RenamedSource:
    """A view of another source with keys renamed by ``rename(key) -> new_key`` (must be one-to-one)."""

    def __init__(self, source: TensorSource, rename: Callable[[str], str]):
        self._source = source
        self._names: dict[str, str] = {}
        for key in source.keys():
            new = rename(key)
            if new in self._names:
                raise ValueError(f"checkpoint keys {self._names[new]!r} and {key!r} both map to {new!r}")
            self._names[new] = key

    def keys(self) -> Iterable[str]:
        return self._names.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self._source.shape(self._names[key])

    def dtype(self, key: str) -> np.dtype:
        return self._source.dtype(self._names[key])

    def get(self, key: str) -> np.ndarray:
        return self._source.get(self._names[key])


@dataclasses.dataclass(frozen=True)
class Rule:
    """One tensor: ``torch`` key (``{i}`` = stacked layer index), ``jax`` flat-state path ('/'-joined) and the
    torch -> JAX einops ``layout`` pattern (None: same layout)."""

    torch: str
    jax: str
    layout: str | None = None

    @property
    def stacked(self) -> bool:
        return "{i}" in self.torch

    def inverse_layout(self) -> str | None:
        if self.layout is None:
            return None
        lhs, rhs = self.layout.split("->")
        return f"{rhs.strip()} -> {lhs.strip()}"


def _apply(pattern: str | None, x: np.ndarray) -> np.ndarray:
    return x if pattern is None else np.ascontiguousarray(einops.rearrange(x, pattern))


def _shape_after(pattern: str | None, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Shape of ``rearrange(x, pattern)`` for ``x.shape == shape`` without touching data; None if impossible."""
    if pattern is None:
        return shape
    try:
        out = jax.eval_shape(lambda x: einops.rearrange(x, pattern), jax.ShapeDtypeStruct(shape, np.float32))
    except Exception:  # noqa: BLE001 - any einops/shape failure means "does not fit"; reported by the caller
        return None
    return tuple(out.shape)


@dataclasses.dataclass(frozen=True)
class Target:
    """What the model expects at one flat-state path."""

    shape: tuple[int, ...]
    dtype: np.dtype


class WeightMapping:
    """A strict two-way table. ``ignore``: regexes of torch keys that may be present and unused (each documented
    where the table is defined)."""

    def __init__(self, rules: Sequence[Rule], *, num_layers: int = 0, ignore: Sequence[str] = ()):
        self.rules = list(rules)
        self.num_layers = num_layers
        self.ignore = [re.compile(p) for p in ignore]
        jax_paths = [r.jax for r in self.rules]
        dup = {p for p in jax_paths if jax_paths.count(p) > 1}
        if dup:
            raise ValueError(f"mapping table maps several torch keys to {sorted(dup)}")

    # ----------------------------------------------------------------------------------------------------------
    def torch_keys(self, rule: Rule) -> list[str]:
        if rule.stacked:
            return [rule.torch.format(i=i) for i in range(self.num_layers)]
        return [rule.torch]

    def expected_torch_keys(self) -> list[str]:
        return [k for r in self.rules for k in self.torch_keys(r)]

    def is_ignored(self, key: str) -> bool:
        return any(p.search(key) for p in self.ignore)

    # ----------------------------------------------------------------------------------------------------------
    def check(self, source: TensorSource, targets: Mapping[str, Target]) -> None:
        """Validates names, shapes and dtypes of ``source`` against ``targets`` without reading tensor data."""
        available = set(source.keys())
        expected = set(self.expected_torch_keys())
        problems: list[str] = []
        missing = sorted(expected - available)
        unexpected = sorted(k for k in available - expected if not self.is_ignored(k))
        unmapped = sorted(set(targets) - {r.jax for r in self.rules})
        unknown_targets = sorted({r.jax for r in self.rules} - set(targets))
        if missing:
            problems.append(f"{len(missing)} missing key(s): {missing}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {unexpected}")
        if unmapped:
            problems.append(f"{len(unmapped)} model parameter(s) with no rule in the table: {unmapped}")
        if unknown_targets:
            problems.append(f"{len(unknown_targets)} table path(s) absent from the model: {unknown_targets}")
        for rule in self.rules:
            if rule.jax not in targets:
                continue
            target = targets[rule.jax]
            want = target.shape[1:] if rule.stacked else target.shape
            if rule.stacked and target.shape[:1] != (self.num_layers,):
                problems.append(f"{rule.jax}: model has {target.shape[:1]} layers, table expects {self.num_layers}")
            for key in self.torch_keys(rule):
                if key not in available:
                    continue
                dt = np.dtype(source.dtype(key))
                if not (np.issubdtype(dt, np.floating) or dt.name == "bfloat16"):
                    problems.append(f"{key}: dtype {dt} is not a floating type")
                got = _shape_after(rule.layout, tuple(source.shape(key)))
                if got != tuple(want):
                    problems.append(f"{key}: shape {tuple(source.shape(key))} does not map to {rule.jax} "
                                    f"{tuple(want)} (layout {rule.layout!r})")
        if problems:
            raise WeightMappingError("checkpoint does not match the model:\n  - " + "\n  - ".join(problems))

    def to_jax(
        self,
        source: TensorSource,
        targets: Mapping[str, Target],
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Reads, re-lays-out and casts every tensor to its target dtype; returns ``{jax_path: array}``.

        Raises :class:`WeightMappingError` (listing everything wrong) before reading any tensor data."""
        self.check(source, targets)
        out: dict[str, np.ndarray] = {}
        for rule in self.rules:
            target = targets[rule.jax]
            if rule.stacked:
                arr = np.empty(target.shape, target.dtype)
                for i, key in enumerate(self.torch_keys(rule)):
                    arr[i] = _apply(rule.layout, source.get(key)).astype(target.dtype)
                    if progress:
                        progress(key)
            else:
                arr = _apply(rule.layout, source.get(rule.torch)).astype(target.dtype)
                if progress:
                    progress(rule.torch)
            out[rule.jax] = arr
        return out

    def to_torch(self, flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inverse direction: ``{jax_path: array}`` -> ``{torch_key: array}`` in torch layout (dtype kept)."""
        missing = sorted({r.jax for r in self.rules} - set(flat))
        if missing:
            raise WeightMappingError(f"state lacks {len(missing)} path(s) needed for export: {missing}")
        out: dict[str, np.ndarray] = {}
        for rule in self.rules:
            arr = np.asarray(flat[rule.jax])
            if rule.stacked:
                for i, key in enumerate(self.torch_keys(rule)):
                    out[key] = _apply(rule.inverse_layout(), arr[i])
            else:
                out[rule.torch] = _apply(rule.inverse_layout(), arr)
        return out
