"""Device mesh and shardings from ``config.sharding``; multi-host initialisation.

The mesh has the axes of ``config.sharding.mesh_axes`` (``data, fsdp, context, tensor``) and shape
``config.sharding.mesh_shape`` (one ``-1`` takes the remaining devices), all ``AxisType.Auto`` (classic GSPMD: with
jax's default Explicit axes, attention on sequence-sharded inputs is rejected). Parameters are placed by their
logical axis names through ``config.sharding.logical_axis_rules``
(:func:`fourdnex_jax.convert.orbax_io.partition_spec`: a mesh axis that does not divide a dimension leaves it
unsharded). The batch axis of every input is sharded over the ``batch`` rule (``data`` x ``fsdp``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from fourdnex_jax.convert.orbax_io import partition_spec


def maybe_initialize_distributed(train_cfg) -> bool:
    """``jax.distributed.initialize`` when ``train.distributed`` is set (before any other JAX call).

    Coordinator, process count and id come from the config when given, else from the environment (TPU pods and
    SLURM/`JAX_COORDINATOR_ADDRESS` are detected by JAX itself). Returns True when initialised here."""
    if not train_cfg.distributed:
        return False
    kwargs: dict[str, Any] = {}
    addr = train_cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if addr:
        kwargs["coordinator_address"] = addr
    if train_cfg.num_processes > 0:
        kwargs["num_processes"] = int(train_cfg.num_processes)
    if train_cfg.process_id >= 0:
        kwargs["process_id"] = int(train_cfg.process_id)
    jax.distributed.initialize(**kwargs)
    return True


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh_shape {tuple(shape)} has more than one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh_shape {tuple(shape)} does not divide {num_devices} devices")
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise ValueError(f"mesh_shape {tuple(shape)} needs {int(np.prod(shape))} devices, have {num_devices}")
    return tuple(shape)


def make_mesh(sharding_cfg, devices: Sequence[jax.Device] | None = None, shape: Sequence[int] | None = None) -> Mesh:
    """The training mesh over ``devices`` (default: all global devices; a deviceless TPU topology for AOT)."""
    devices = list(jax.devices() if devices is None else devices)
    axes = tuple(sharding_cfg.mesh_axes)
    shape = resolve_mesh_shape(shape if shape is not None else sharding_cfg.mesh_shape, len(devices))
    types = (AxisType.Auto,) * len(axes)
    try:
        return jax.make_mesh(shape, axes, axis_types=types, devices=devices)
    except NotImplementedError:
        # TPU torus: a logical axis that is no product of physical axes (e.g. 16 on 8x8) needs a split.
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        return Mesh(grid, axes, axis_types=types)


def rules_of(sharding_cfg) -> tuple[tuple[str, Any], ...]:
    return tuple((name, tuple(a) if isinstance(a, (list, tuple)) else a)
                 for name, a in sharding_cfg.logical_axis_rules)


def batch_axes(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> tuple[str, ...]:
    """Mesh axes of the logical ``batch`` axis that exist in ``mesh``."""
    axes = dict(rules).get("batch")
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return tuple(a for a in axes if a in mesh.shape)


def data_parallel_size(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> int:
    return int(np.prod([mesh.shape[a] for a in batch_axes(mesh, rules)], dtype=np.int64))


def batch_sharding(mesh: Mesh, rules, ndim: int, leading: int = 0) -> NamedSharding:
    """Sharding of an input with ``leading`` unsharded axes (e.g. micro-batch index) before the batch axis."""
    axes = batch_axes(mesh, rules)
    spec = [None] * leading + [axes if axes else None] + [None] * (ndim - leading - 1)
    return NamedSharding(mesh, P(*spec))


def variable_shardings(variables: Mapping[str, Any], mesh: Mesh, rules) -> dict[str, NamedSharding]:
    """``{path: NamedSharding}`` of ``{path: nnx.Variable}`` from the variables' logical axis names."""
    out = {}
    for path, var in variables.items():
        axes = var.get_metadata().get("out_sharding") if hasattr(var, "get_metadata") else None
        out[path] = NamedSharding(mesh, partition_spec(axes, var.shape, mesh, rules))
    return out


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
