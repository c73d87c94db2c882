"""DiT block weights streamed from host memory (``stream_blocks``, :mod:`fourdnex_jax.models.streaming`): the same
output as the resident blocks, bit for bit (fp32 on CPU), on one device and on the 8 fake CPU devices of the test
session with a (data, fsdp, context, tensor) mesh; the weights really are in host memory (``pinned_host``)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax import sharding
from fourdnex_jax.models import streaming
from fourdnex_jax.models.transformer import WanTransformer3D, WanTransformerConfig
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines import plan


def _inputs(cfg: WanTransformerConfig, batch: int = 2, t: int = 2, h: int = 4, w: int = 8, seed: int = 0):
    k = jax.random.split(jax.random.key(seed), 4)
    return (jax.random.normal(k[0], (batch, t, h, w, cfg.in_channels)), jnp.linspace(900.0, 10.0, batch),
            jax.random.normal(k[1], (batch, 16, cfg.text_dim)), jax.random.normal(k[2], (batch, 5, cfg.image_dim)))


def _forward(model: nnx.Module, placements=None, mesh=None, rules=sharding.DEFAULT_LOGICAL_AXIS_RULES,
             args=(), options=None) -> tuple[np.ndarray, nnx.State]:
    """The jitted forward of ``model`` with its state placed by ``placements`` (a function of the state's default
    shardings), under ``mesh``, compiled with XLA ``options``."""
    graphdef, state = nnx.split(model)
    if mesh is not None:
        shardings = sharding.state_shardings(state, mesh, rules)
    else:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: dev, state)
    if placements is not None:
        shardings = placements(shardings)
    state = jax.device_put(state, shardings)
    fn = jax.jit(lambda st, *a: nnx.merge(graphdef, st)(*a))
    with sharding.mesh_context(mesh, rules) if mesh is not None else _null():
        return np.asarray(fn.lower(state, *args).compile(compiler_options=options)(state, *args)), state


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _with_config(model: nnx.Module, **changes) -> nnx.Module:
    """The same weights under a config with ``changes`` (the graphdef carries the config)."""
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)
    copy.config = model.config.replace(**changes)
    return copy


def _assert_blocks_on_host(state: nnx.State):
    kinds = {(streaming.is_streamed(p), a.sharding.memory_kind) for p, a in jax.tree_util.tree_leaves_with_path(state)}
    assert kinds == {(True, streaming.HOST_MEMORY), (False, "device")}


def test_host_shardings_move_only_the_blocks():
    model = nnx.eval_shape(lambda: WanTransformer3D(WanTransformerConfig(
        num_heads=2, head_dim=8, ffn_dim=32, num_layers=2, text_dim=16, image_dim=8, added_kv_proj_dim=16,
        freq_dim=16), rngs=nnx.Rngs(0)))
    _, state = nnx.split(model)
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placed = streaming.host_shardings(jax.tree.map(lambda _: dev, state))
    paths = {tuple(getattr(k, "key", k) for k in p)[0]: s.memory_kind
             for p, s in jax.tree_util.tree_leaves_with_path(placed)}
    assert paths["blocks"] == "pinned_host" and paths["patch_embedding"] == "device"


def test_stream_blocks_needs_the_scan():
    with pytest.raises(ValueError, match="scan_layers"):
        WanTransformerConfig(stream_blocks=True, scan_layers=False)


@pytest.mark.integration  # ~40-200 s on the 2-core VM (compiles the tiny models)
def test_tiny_checkpoint_streamed_equals_resident():
    from fourdnex_jax.weights.restore import restore_model

    model = restore_model(bundle_lib.DEFAULT_BUNDLE, "transformer")
    assert model.config.param_dtype == "float32" and model.config.compute_dtype == "float32"
    args = _inputs(model.config)
    resident, _ = _forward(model, args=args)
    streamed, state = _forward(_with_config(model, stream_blocks=True), streaming.host_shardings, args=args)
    _assert_blocks_on_host(state)
    np.testing.assert_array_equal(streamed, resident)  # bit-identical


@pytest.mark.integration  # ~40-200 s on the 2-core VM (compiles the tiny models)
def test_restore_into_host_memory_then_stream():
    """``restore_model(..., host_blocks=True)`` reads the blocks straight into host memory (they never occupy the
    device); the streamed forward on them equals the resident one."""
    from fourdnex_jax.weights.restore import restore_model

    resident_model = restore_model(bundle_lib.DEFAULT_BUNDLE, "transformer")
    model = restore_model(bundle_lib.DEFAULT_BUNDLE, "transformer", host_blocks=True, stream_blocks=True)
    graphdef, state = nnx.split(model)
    _assert_blocks_on_host(state)
    args = _inputs(model.config)
    resident, _ = _forward(resident_model, args=args)
    streamed = np.asarray(jax.jit(lambda st, *a: nnx.merge(graphdef, st)(*a))(state, *args))
    np.testing.assert_array_equal(streamed, resident)


@pytest.mark.integration  # ~40-200 s on the 2-core VM (compiles the tiny models)
def test_tiny_checkpoint_streamed_equals_resident_on_a_mesh():
    from fourdnex_jax.weights.restore import restore_model

    assert jax.device_count() == 8, "the test session runs on 8 fake CPU devices (tests/conftest.py)"
    model = restore_model(bundle_lib.DEFAULT_BUNDLE, "transformer")
    mesh = sharding.make_mesh(types.SimpleNamespace(mesh_shape=(1, 2, 2, 2), mesh_axes=sharding.MESH_AXES))
    args = _inputs(model.config, batch=2, t=2, h=4, w=8)
    resident, _ = _forward(model, mesh=mesh, args=args)
    streamed, state = _forward(_with_config(model, stream_blocks=True), streaming.host_shardings, mesh, args=args)
    _assert_blocks_on_host(state)
    blocks = [a for p, a in jax.tree_util.tree_leaves_with_path(state) if streaming.is_streamed(p)]
    assert any(len(a.sharding.device_set) == 8 and not a.sharding.is_fully_replicated for a in blocks)
    np.testing.assert_array_equal(streamed, resident)


def _random_14b_shaped(num_layers: int, ffn_dim: int, mesh):
    """A DiT with the 14B's widths (dim 5120 = 40 heads x 128, text 4096, CLIP 1280), ``num_layers`` blocks and
    ``ffn_dim``, bf16 weights (fp32 compute), random values drawn on the host and placed leaf by leaf (a jitted
    random init on 8 fake devices draws every leaf whole on each device: 4x the memory)."""
    cfg = WanTransformerConfig(num_layers=num_layers, ffn_dim=ffn_dim, param_dtype="bfloat16",
                               compute_dtype="float32")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    placements = sharding.state_shardings(state, mesh, sharding.DEFAULT_LOGICAL_AXIS_RULES)
    leaves, treedef = jax.tree.flatten(state)
    values = [jax.device_put((np.random.default_rng(i).standard_normal(a.shape, dtype=np.float32) * 0.02)
                             .astype(jnp.dtype(a.dtype)), p)
              for i, (a, p) in enumerate(zip(leaves, jax.tree.leaves(placements)))]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, values))


@pytest.mark.parametrize("num_layers,ffn_dim,mesh_shape", [
    # two whole 14B blocks (FFN 13824) on the 8-device mesh, fsdp 2 x tensor 4 (each device gathers a quarter of a
    # layer): bit-identical, 2026-12-07, 7 min and 9.0 GiB host RSS on the loaded 2-core VM
    pytest.param(2, 13824, (1, 2, 1, 4), marks=pytest.mark.slow),
    # 14B widths on the (1, 2, 2, 2) mesh of the v5e-8 / v6e-8 rows, FFN scaled down (8 fake devices each gather
    # half a layer: ~10 GiB host RAM)
    pytest.param(1, 1024, (1, 2, 2, 2), marks=pytest.mark.slow),
])
def test_14b_shaped_blocks_streamed_equal_resident(num_layers, ffn_dim, mesh_shape):
    mesh = sharding.make_mesh(types.SimpleNamespace(mesh_shape=mesh_shape, mesh_axes=sharding.MESH_AXES),
                              devices=jax.devices()[:int(np.prod(mesh_shape))])
    model = _random_14b_shaped(num_layers, ffn_dim, mesh)
    args = _inputs(model.config, batch=2, t=1, h=4, w=8)
    # no fp32 copy of the stacked bf16 weights hoisted out of the scan by XLA:CPU (the plan's GPU-standing options)
    options = plan.CPU_AS_GPU_OPTIONS
    resident, _ = _forward(model, mesh=mesh, args=args, options=options)
    streamed, state = _forward(_with_config(model, stream_blocks=True), streaming.host_shardings, mesh, args=args,
                               options=options)
    _assert_blocks_on_host(state)
    assert np.isfinite(resident).all() and np.abs(resident).max() > 0
    np.testing.assert_array_equal(streamed, resident)
