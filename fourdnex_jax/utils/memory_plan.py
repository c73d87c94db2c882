"""What the AOT memory plans of training (:mod:`fourdnex_jax.training.plan`) and inference
(:mod:`fourdnex_jax.pipelines.plan`) share: bytes per device of sharded abstract arrays, the compiler's memory
analysis with one definition of *peak*, and the TPU slices a plan can target without the TPU.

Peak, per device, of one compiled program (:func:`memory_analysis`)::

    peak = arguments + outputs - alias + temp + code

``arguments``: the shards of the inputs the executable reads (weights included; jit drops unused ones);
``outputs``; ``alias``: outputs written into donated arguments (counted once); ``temp``: activations and workspace;
``code``: the generated program, which a TPU holds in HBM next to the data (a few MiB; counted so that a plan errs on
the safe side).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

GiB = 2.0 ** 30

#: TPU slices: name -> (deviceless ``jax.experimental.topologies`` name, HBM GiB per chip). Slice names count
#: TensorCores for v5p (v5p-8 = 4 chips) and chips for v5e / v6e.
TPU_SLICES: dict[str, tuple[str, float]] = {
    "v5e-8": ("v5e:2x4", 15.75),
    "v5e-64": ("v5e:8x8", 15.75),
    "v6e-8": ("v6e:2x4", 31.25),
    "v6e-16": ("v6e:4x4", 31.25),
    "v6e-64": ("v6e:8x8", 31.25),
    "v6e-256": ("v6e:16x16", 31.25),
    "v5p-8": ("v5p:2x2x1", 95.74),
    "v5p-64": ("v5p:2x4x4", 95.74),
    "v5p-128": ("v5p:4x4x4", 95.74),
    "v5p-256": ("v5p:4x4x8", 95.74),
}


def tpu_devices(topology: str) -> list[Any]:
    """The devices of a deviceless TPU ``topology`` (e.g. ``'v5p:2x2x1'``; needs ``libtpu``)."""
    from jax.experimental import topologies

    return list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)


def shard_bytes(tree, memory: str | None = None) -> float:
    """Bytes per device of a tree of sharded ``ShapeDtypeStruct``s or arrays (the largest shard of each leaf);
    ``memory``: only the leaves in that memory kind ('device' also counts leaves without one)."""
    total = 0
    for x in jax.tree.leaves(tree):
        if memory is not None and (getattr(x.sharding, "memory_kind", None) or "device") != memory:
            continue
        shape = x.sharding.shard_shape(x.shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    return float(total)


def memory_analysis(compiled) -> dict[str, float]:
    """``compiled.memory_analysis()`` per device as ``{arguments, outputs, alias, temp, code, peak}_bytes`` (peak as
    in the module docstring); empty where the backend gives none."""
    ma = compiled.memory_analysis()
    if ma is None:
        return {}
    out = {"arguments_bytes": float(ma.argument_size_in_bytes), "outputs_bytes": float(ma.output_size_in_bytes),
           "alias_bytes": float(ma.alias_size_in_bytes), "temp_bytes": float(ma.temp_size_in_bytes),
           "code_bytes": float(ma.generated_code_size_in_bytes),
           "host_arguments_bytes": float(getattr(ma, "host_argument_size_in_bytes", 0) or 0)}
    out["peak_bytes"] = (out["arguments_bytes"] + out["outputs_bytes"] - out["alias_bytes"] + out["temp_bytes"]
                         + out["code_bytes"])
    return out
