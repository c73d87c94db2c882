"""Flat views of NNX parameter states: '/'-joined paths, targets for the weight tables, assigning and
materialising values, counts per dtype."""

from __future__ import annotations

import collections
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.models.mapping import Target


def path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def flat_variables(node: nnx.Module | nnx.State, variable_filter: nnx.filterlib.Filter = ...
                   ) -> dict[str, nnx.Variable]:
    """``{path: Variable}`` of a module (optionally filtered, e.g. ``nnx.Param``) or of a state."""
    if isinstance(node, nnx.Module):
        node = nnx.state(node, variable_filter)
    elif variable_filter is not ...:
        node = node.filter(variable_filter)
    return {path_str(path): var for path, var in nnx.to_flat_state(node)}


def targets_of(node: nnx.Module | nnx.State, variable_filter: nnx.filterlib.Filter = ...) -> dict[str, Target]:
    """Shape/dtype expected at every path (works on abstract models from ``nnx.eval_shape``)."""
    return {p: Target(tuple(v.shape), np.dtype(v.dtype)) for p, v in flat_variables(node, variable_filter).items()}


def assign(module: nnx.Module, flat: Mapping[str, np.ndarray | jax.Array]) -> None:
    """Writes ``{path: array}`` into ``module`` in place. Every path must exist with the same shape and dtype."""
    variables = flat_variables(module)
    bad = [p for p in flat if p not in variables]
    if bad:
        raise KeyError(f"paths not in the model: {bad}")
    for p, value in flat.items():
        var = variables[p]
        if tuple(value.shape) != tuple(var.shape) or np.dtype(value.dtype) != np.dtype(var.dtype):
            raise ValueError(f"{p}: got {value.shape}/{value.dtype}, model has {var.shape}/{var.dtype}")
        var[...] = jnp.asarray(value)


def count(node: nnx.Module | nnx.State, variable_filter: nnx.filterlib.Filter = ...) -> tuple[int, dict[str, int]]:
    """Total number of parameters and bytes per dtype name."""
    total = 0
    nbytes: dict[str, int] = collections.Counter()
    for v in flat_variables(node, variable_filter).values():
        n = int(np.prod(v.shape, dtype=np.int64))
        total += n
        nbytes[np.dtype(v.dtype).name] += n * np.dtype(v.dtype).itemsize
    return total, dict(nbytes)


def materialize(abstract: nnx.Module, values: Mapping[str, np.ndarray | jax.Array]) -> nnx.Module:
    """A concrete copy of an abstract (``nnx.eval_shape``) module whose every leaf is ``values[path]`` (all paths
    required, shapes and dtypes checked; shardings of ``jax.Array`` values are kept)."""
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    missing = [path_str(p) for p, _ in flat if path_str(p) not in values]
    if missing:
        raise ValueError(f"no values for {len(missing)} parameter(s): {missing[:20]}")
    leaves = []
    for path, var in flat:
        value = jnp.asarray(values[path_str(path)])
        if value.shape != var.shape or value.dtype != var.dtype:
            raise ValueError(f"{path_str(path)}: got {value.shape}/{value.dtype}, need {var.shape}/{var.dtype}")
        leaves.append((path, var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


#: Arrays larger than this many elements enter :func:`digest` through an evenly strided sample of about as many.
DIGEST_SAMPLE = 1 << 20


def digest(module: nnx.Module, keep=None, *, extra: str = "") -> str:
    """A content fingerprint (16 hex digits of a SHA-256) of a module's parameters: every ``nnx.Param`` whose path
    ``keep(path)`` accepts (default all), by path, dtype, shape and values, plus ``extra`` text. An array larger
    than :data:`DIGEST_SAMPLE` elements contributes an evenly strided sample of its values (so a 5.7B-parameter
    encoder digests in seconds); two models that differ anywhere in a small array, or in the sampled elements of
    a large one, get different digests. Arrays sharded over several processes are gathered (the sample only)."""
    import hashlib

    h = hashlib.sha256(extra.encode())
    for path, var in sorted(flat_variables(module, nnx.Param).items()):
        if keep is not None and not keep(path):
            continue
        a = var[...]
        h.update(f"|{path}|{np.dtype(a.dtype).name}|{tuple(a.shape)}|".encode())
        if a.size > DIGEST_SAMPLE:
            a = jnp.ravel(a)[:: -(-a.size // DIGEST_SAMPLE)]
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            a = multihost_utils.process_allgather(a, tiled=True)
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:16]
