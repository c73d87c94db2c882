"""int8 weight-only quantisation of the DiT's block linears (fourdnex_jax/models/quantize.py): per-layer error
bounds, a quantised copy that leaves the caller's model untouched, logical-axis sharding of the int8 parameters, and
the abstract 14B memory figures."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.config import load_config_file, model_config
from fourdnex_jax.models import params
from fourdnex_jax.models.layers import Dense
from fourdnex_jax.models.lora import merge_lora
from fourdnex_jax.models.quantize import (
    QMAX,
    dequantize_kernel,
    memory_report,
    quantizable_layers,
    quantize_dense,
    quantize_int8,
    quantize_kernel,
)
from fourdnex_jax.models.transformer import WanTransformer3D
from fourdnex_jax.testing.numerics import rel_l2
from tests.helpers import tiny_dit_config

ROOT = Path(__file__).resolve().parents[2]


def test_quantized_dense_error_bound():
    dense = Dense(96, 48, axes=("embed", "heads"), rngs=nnx.Rngs(0))
    dense.kernel[...] = dense.kernel[...] * jnp.linspace(0.1, 3.0, 48)  # columns of very different ranges
    x = jax.random.normal(jax.random.key(1), (4, 7, 96))
    ref = dense(x)
    w = np.asarray(dense.kernel[...])
    assert quantize_dense(dense) and not quantize_dense(dense)  # idempotent
    q, scale = np.asarray(dense.kernel[...]), np.asarray(dense.kernel_scale[...])
    assert q.dtype == np.int8 and np.abs(q.astype(np.int32)).max() == QMAX and scale.shape == (48,)
    np.testing.assert_allclose(scale, np.abs(w).max(0) / QMAX, rtol=1e-6)
    # every weight within half a step, every output within the bound that implies
    err_w = np.abs(np.asarray(dequantize_kernel(dense.kernel[...], dense.kernel_scale[...])) - w)
    assert (err_w <= scale / 2 * (1 + 1e-5)).all()
    out = np.asarray(dense(x))
    bound = np.abs(np.asarray(x)) @ np.broadcast_to(scale / 2, (96, 48)) + 1e-4
    assert (np.abs(out - np.asarray(ref)) <= bound).all()
    assert rel_l2(out, ref) < 5e-3, rel_l2(out, ref)
    # logical axes kept (sharding rules still apply)
    assert dense.kernel.get_metadata()["out_sharding"] == ("embed", "heads")
    assert dense.kernel_scale.get_metadata()["out_sharding"] == ("heads",)


def test_quantize_kernel_zero_column():
    q, scale = quantize_kernel(jnp.zeros((3, 2)).at[:, 1].set(jnp.array([1.0, -2.0, 0.5])))
    assert float(scale[0]) == 1.0 and (np.asarray(q[:, 0]) == 0).all()
    assert np.asarray(q[:, 1]).tolist() == [64, -127, 32]


def test_quantized_tiny_model_forward():
    cfg = tiny_dit_config()
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(0))
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):
        var[...] = 0.05 * jax.random.normal(jax.random.key(3), var.shape)
    before = {p: np.asarray(v[...]) for p, v in params.flat_variables(model).items()}
    quant = quantize_int8(model)
    assert len(quantizable_layers(quant)) == 12 and all(d.kernel_scale is not None for _, d in
                                                        quantizable_layers(quant))
    after = params.flat_variables(quant)
    for p, v in before.items():  # only the block linears' kernels changed
        if p.startswith("blocks/") and p.endswith("/kernel"):
            assert after[p].dtype == jnp.int8 and p[:-len("kernel")] + "kernel_scale" in after
            assert after[p].get_metadata()["out_sharding"][0] == "layers"
        else:
            np.testing.assert_array_equal(np.asarray(after[p][...]), v, err_msg=p)
    # the caller's model is never quantised: same dtypes and values as before, no scales
    for p, v in params.flat_variables(model).items():
        np.testing.assert_array_equal(np.asarray(v[...]), before[p], err_msg=p)
    assert all(d.kernel_scale is None for _, d in quantizable_layers(model))
    # idempotent: quantising the int8 copy again changes nothing
    again = params.flat_variables(quantize_int8(quant))
    assert again.keys() == after.keys()
    for p, v in after.items():
        np.testing.assert_array_equal(np.asarray(again[p][...]), np.asarray(v[...]), err_msg=p)
    k = jax.random.split(jax.random.key(0), 4)
    lat = jax.random.normal(k[0], (2, 2, 4, 12, cfg.in_channels))
    t = jnp.array([999.0, 500.0])
    text = jax.random.normal(k[1], (2, 16, cfg.text_dim))
    img = jax.random.normal(k[2], (2, 17, cfg.image_dim))
    ref, out = (jax.jit(lambda *a, m=m: m(*a))(lat, t, text, img) for m in (model, quant))
    err = rel_l2(out, ref)
    assert 0 < err < 1e-2, err
    with pytest.raises(ValueError, match="unmerge_lora"):
        m = nnx.clone(model)
        merge_lora(m)
        quantize_int8(m)


def test_quantized_model_shards_by_logical_axes():
    from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, variable_shardings

    cfg = tiny_dit_config()
    model = quantize_int8(WanTransformer3D(cfg, rngs=nnx.Rngs(2)))
    auto = (jax.sharding.AxisType.Auto,) * 2  # as the training mesh (fourdnex_jax.sharding.make_mesh)
    mesh = jax.make_mesh((2, 2), ("fsdp", "tensor"), axis_types=auto, devices=jax.devices()[:4])
    shardings = variable_shardings(params.flat_variables(model), mesh, DEFAULT_LOGICAL_AXIS_RULES)
    assert shardings["blocks/ffn/proj_in/kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert shardings["blocks/ffn/proj_in/kernel_scale"].spec == jax.sharding.PartitionSpec(None, "tensor")
    graphdef, state = nnx.split(model)
    flat = [(p, v.replace(jax.device_put(v[...], shardings[params.path_str(p)]))) for p, v in nnx.to_flat_state(state)]
    sharded = nnx.merge(graphdef, nnx.from_flat_state(flat))
    k = jax.random.split(jax.random.key(4), 3)
    args = (jax.random.normal(k[0], (2, 2, 4, 12, cfg.in_channels)), jnp.array([999.0, 1.0]),
            jax.random.normal(k[1], (2, 16, cfg.text_dim)), jax.random.normal(k[2], (2, 17, cfg.image_dim)))
    assert rel_l2(jax.jit(lambda *a: sharded(*a))(*args), jax.jit(lambda *a: model(*a))(*args)) < 1e-5


def test_memory_report_14b_abstract():
    cfg = model_config(load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
    rep = memory_report(cfg)
    d, f, kv, n = cfg.dim, cfg.ffn_dim, cfg.added_kv_proj_dim, cfg.num_layers
    weights = n * (8 * d * d + 2 * kv * d + 2 * d * f)  # attn1 q k v o, attn2 q k v o + add_k/add_v, ffn in/out
    scales = n * (10 * d + f + d)  # one fp32 per output channel
    assert rep["param_dtype"] == "bfloat16" and rep["quantized_layers"] == 12
    assert rep["base"]["block_linears_bytes"] == 2 * weights
    assert rep["int8"]["block_linears_bytes"] == weights + 4 * scales
    assert rep["int8"]["other_bytes"] == rep["base"]["other_bytes"]
    assert rep["int8"]["bytes"] == rep["base"]["bytes"] - weights + 4 * scales
    assert rep["int8"]["bytes_per_dtype"]["int8"] == weights
    assert rep["base"]["bytes"] / 2**30 > 30 and rep["int8"]["bytes"] / 2**30 < 17  # fits 24 GB cards, weights only
