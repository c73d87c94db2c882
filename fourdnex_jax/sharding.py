"""The one sharding module: device mesh, logical-axis rules, PartitionSpecs, shardings, activation constraints.

The mesh has the axes :data:`MESH_AXES` (``data, fsdp, context, tensor``; ``config.sharding.mesh_axes``) and shape
``config.sharding.mesh_shape`` (one ``-1`` takes the remaining devices), all ``AxisType.Auto`` (classic GSPMD: with
jax's default Explicit axes, attention on sequence-sharded inputs is rejected). Arrays are placed by their logical
axis names (each parameter's ``out_sharding`` metadata) through ``(logical name, mesh axes)`` rules,
:data:`DEFAULT_LOGICAL_AXIS_RULES` unless ``config.sharding.logical_axis_rules`` says otherwise. :func:`partition_spec`
is the only place that turns logical names into a ``PartitionSpec``: logical names absent from the rules, mesh axes
absent from the mesh, mesh axes already used by an earlier dimension, and dimensions a mesh axis does not divide stay
unsharded. The batch axis of every input is sharded over the ``batch`` rule (``data`` x ``fsdp``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

#: The mesh axis names, in mesh order.
MESH_AXES = ("data", "fsdp", "context", "tensor")

# Logical axis -> mesh axes (maxtext style). Used by the sharded training/inference code; every logical name that
# a parameter of the package carries must appear here (tests check it).
DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("layers", None),
    ("embed", "fsdp"),
    ("embed_in", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("modulation", "tensor"),
    ("modulation_table", None),
    ("lora_rank", None),
    ("domains", None),
    ("text_embed", None),
    ("image_embed", None),
    ("image_mlp", None),
    ("freq", None),
    ("patch_t", None),
    ("patch_h", None),
    ("patch_w", None),
    ("latent_channels", None),
    ("patch_out", None),
    # VAE convolutions (kernels (t, h, w, in, out)) and the encoders' embeddings: the frozen conditioning models
    # are small next to the DiT; shard only their widest axes.
    ("conv_t", None),
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("vocab", "tensor"),
    ("positions", None),
    ("relpos_buckets", None),
    # activations only: the token sequence (ring attention splits it over context), the two classifier-free
    # guidance branches of the sampler's DiT batch (over data when the sampler puts them there)
    ("length", "context"),
    ("cfg_branch", "data"),
)


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
    """``shape`` with its one ``-1`` (if any) replaced so that the product is ``num_devices`` (else ValueError)."""
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
    """The mesh of ``config.sharding`` over ``devices`` (default: all global devices; a deviceless TPU topology for
    AOT)."""
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


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh of :data:`MESH_AXES` with every device (default: all global devices) on ``data``, the other axes of
    size 1: pure data parallelism, where the rules replicate every parameter."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices), 1, 1, 1), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_of(sharding_cfg) -> tuple[tuple[str, Any], ...]:
    """``config.sharding.logical_axis_rules`` as a tuple of ``(logical, mesh axis | tuple of mesh axes | None)``."""
    return tuple((name, tuple(a) if isinstance(a, (list, tuple)) else a)
                 for name, a in sharding_cfg.logical_axis_rules)


def batch_axes(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> tuple[str, ...]:
    """Mesh axes of the logical ``batch`` axis that exist in ``mesh``."""
    axes = dict(rules).get("batch")
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return tuple(a for a in axes if a in mesh.shape)


def data_parallel_size(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> int:
    """Number of batch shards: the product of the mesh sizes of :func:`batch_axes`."""
    return int(np.prod([mesh.shape[a] for a in batch_axes(mesh, rules)], dtype=np.int64))


def batch_sharding(mesh: Mesh, rules, ndim: int, leading: int = 0, exclude: Sequence[str] = ()) -> NamedSharding:
    """Sharding of an input with ``leading`` unsharded axes (e.g. micro-batch index) before the batch axis; the
    mesh axes in ``exclude`` are left out of the batch axes (the input is replicated over them)."""
    axes = tuple(a for a in batch_axes(mesh, rules) if a not in exclude)
    spec = [None] * leading + [axes if axes else None] + [None] * (ndim - leading - 1)
    return NamedSharding(mesh, PartitionSpec(*spec))


def partition_spec(logical_axes: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                   rules: Sequence[tuple[str, Any]]) -> PartitionSpec:
    """Mesh partition spec of one array of ``shape`` from its logical axis names (see the module docstring for
    fallbacks). ``mesh`` may be a ``Mesh`` or an ``AbstractMesh`` (only its axis sizes are read)."""
    if not logical_axes:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape):
        axes = table.get(name)
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        axes = tuple(a for a in axes if a in mesh.shape and a not in used)
        count = int(np.prod([mesh.shape[a] for a in axes], dtype=np.int64)) if axes else 1
        if not axes or size % count:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def _logical_axes(var: Any) -> Sequence[str | None] | None:
    return var.get_metadata().get("out_sharding") if hasattr(var, "get_metadata") else None


def variable_shardings(variables: Mapping[str, Any], mesh: Mesh, rules) -> dict[str, NamedSharding]:
    """``{path: NamedSharding}`` of ``{path: nnx.Variable}`` from the variables' logical axis names."""
    return {path: NamedSharding(mesh, partition_spec(_logical_axes(var), var.shape, mesh, rules))
            for path, var in variables.items()}


def sharded_targets(variables: Mapping[str, Any], mesh: Mesh | None,
                    rules: Sequence[tuple[str, Any]]) -> dict[str, jax.ShapeDtypeStruct]:
    """``{path: ShapeDtypeStruct(shape, dtype, sharding)}`` for ``{path: nnx.Variable}`` of an abstract model
    (``mesh=None``: the first local device, unsharded); restore targets for orbax."""
    out = {}
    for path, var in variables.items():
        if mesh is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        else:
            sharding = NamedSharding(mesh, partition_spec(_logical_axes(var), var.shape, mesh, rules))
        out[path] = jax.ShapeDtypeStruct(tuple(var.shape), var.dtype, sharding=sharding)
    return out


def state_shardings(state: Any, mesh: Mesh, rules) -> Any:
    """The ``NamedSharding`` of every ``nnx.Variable`` of ``state`` (an ``nnx.State``, e.g. of ``nnx.split``; may be
    abstract) from its logical axis names: a pytree of ``state``'s structure with one sharding per Variable, for
    ``jax.device_put(state, ...)`` or ``ShapeDtypeStruct`` targets."""
    return jax.tree.map(lambda v: NamedSharding(mesh, partition_spec(_logical_axes(v), v.shape, mesh, rules)), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def replicated(mesh: Mesh) -> NamedSharding:
    """The fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


_RULES: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("fourdnex_logical_rules", default=None)


@contextlib.contextmanager
def use_rules(rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """The rules :func:`with_logical_constraint` resolves against when not given any (innermost wins)."""
    token = _RULES.set(tuple(rules))
    try:
        yield
    finally:
        _RULES.reset(token)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """``jax.set_mesh(mesh)`` and :func:`use_rules`: trace sharded model code inside it, so the models' activation
    constraints and the mesh-aware attention kernels (ring, splash) see the mesh."""
    with jax.set_mesh(mesh), use_rules(rules):
        yield


def with_logical_constraint(x: jax.Array, logical_axes: Sequence[str | None],
                            rules: Sequence[tuple[str, Any]] | None = None, mesh: Mesh | None = None) -> jax.Array:
    """``jax.lax.with_sharding_constraint`` of ``x`` by logical axis names (one per dimension of ``x``).

    ``mesh``: the mesh to constrain on; default the current ``jax.set_mesh`` mesh, and outside any mesh context
    (single-device code) ``x`` is returned unchanged. ``rules`` default to the innermost :func:`use_rules`, else
    :data:`DEFAULT_LOGICAL_AXIS_RULES`."""
    if len(logical_axes) != x.ndim:
        raise ValueError(f"{len(logical_axes)} logical axes {tuple(logical_axes)} for an array of rank {x.ndim}")
    if rules is None:
        rules = _RULES.get() or DEFAULT_LOGICAL_AXIS_RULES
    if mesh is None:
        abstract = jax.sharding.get_abstract_mesh()
        if abstract.empty:
            return x
        return jax.lax.with_sharding_constraint(x, partition_spec(logical_axes, x.shape, abstract, rules))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, partition_spec(logical_axes, x.shape, mesh, rules)))
