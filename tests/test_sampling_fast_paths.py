"""Sampling fast paths: int8 weight-only DiT (error bounds, abstract 14B memory), the step cache (bit-identical at
k = 1, fewer block evaluations otherwise), serialized executables (round trip, key mismatch), the negative prompt
encoded once, and tools/sampling_benchmark.py + tools/generate.py's fast-path options on a random tiny bundle."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
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
from fourdnex_jax.models.quantize import (QMAX, dequantize_kernel, memory_report, quantizable_layers, quantize_dense,
                                          quantize_int8, quantize_kernel)
from fourdnex_jax.models.transformer import WanTransformer3D
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines.aot import ExecutableCache, ExecutableKeyMismatch, ExecutableLoadError
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D, SampleSettings
from fourdnex_jax.sampling import step_cache

from conftest import rel_l2

ROOT = Path(__file__).resolve().parents[1]
T, H, W = 5, 32, 48


def _tool():
    spec = importlib.util.spec_from_file_location("sampling_benchmark", ROOT / "tools" / "sampling_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return _tool().write_random_bundle(tmp_path_factory.mktemp("fast") / "bundle",
                                       captions=("a ball on the floor",))


def _settings(**kw):
    return SampleSettings(**{**dict(num_frames=T, height=H, width=W, num_steps=4, text_len=16), **kw})


def _images(n=1, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((H, W, 3)) * 255).astype(np.uint8) for _ in range(n)]


def _tiny_cfg():
    return model_config(load_config_file(ROOT / "configs" / "tiny.py"))


# -- int8 weight-only quantisation ---------------------------------------------------------------------------------
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
    cfg = _tiny_cfg()
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(0))
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):
        var[...] = 0.05 * jax.random.normal(jax.random.key(3), var.shape)
    before = {p: np.asarray(v[...]) for p, v in params.flat_variables(model).items()}
    quant = nnx.clone(model)
    assert quantize_int8(quant) == len(quantizable_layers(quant)) == 12 and quantize_int8(quant) == 0
    after = params.flat_variables(quant)
    for p, v in before.items():  # only the block linears' kernels changed
        if p.startswith("blocks/") and p.endswith("/kernel"):
            assert after[p].dtype == jnp.int8 and p[:-len("kernel")] + "kernel_scale" in after
            assert after[p].get_metadata()["out_sharding"][0] == "layers"
        else:
            np.testing.assert_array_equal(np.asarray(after[p][...]), v, err_msg=p)
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
    from fourdnex_jax.config import DEFAULT_LOGICAL_AXIS_RULES
    from fourdnex_jax.training.mesh import variable_shardings

    cfg = _tiny_cfg()
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(2))
    quantize_int8(model)
    auto = (jax.sharding.AxisType.Auto,) * 2  # as the training mesh (fourdnex_jax.training.mesh.make_mesh)
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


# -- step cache ----------------------------------------------------------------------------------------------------
def test_full_evaluation_schedule():
    assert step_cache.full_evaluation_schedule(10, 3).tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert step_cache.full_evaluation_schedule(5, 2).tolist() == [1, 0, 1, 0, 1]
    assert step_cache.full_evaluation_schedule(4, 1).all()
    with pytest.raises(ValueError, match=">= 1"):
        step_cache.full_evaluation_schedule(4, 0)


def test_step_cache_forward_matches_model():
    cfg = _tiny_cfg()
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(1))
    k = jax.random.split(jax.random.key(1), 3)
    args = (jax.random.normal(k[0], (2, 2, 4, 12, cfg.in_channels)), jnp.array([900.0, 10.0]),
            jax.random.normal(k[1], (2, 16, cfg.text_dim)), jax.random.normal(k[2], (2, 17, cfg.image_dim)))
    ref = jax.jit(lambda *a: model(*a))(*args)
    full, res = jax.jit(lambda *a: step_cache.forward(model, *a))(*args)
    np.testing.assert_array_equal(np.asarray(full), np.asarray(ref))
    cached, none = jax.jit(lambda r, *a: step_cache.forward(model, *a, r))(res, *args)
    assert none is None and rel_l2(cached, ref) < 1e-5  # same input: embeddings + residual = the blocks' output


def test_pipeline_step_cache(bundle_dir):
    b = bundle_lib.load_bundle(bundle_dir)
    dev = jax.devices()[:1]
    images, prompts = _images(), ["a ball on the floor"]
    plain = ImageTo4D.from_bundle(b, _settings(), devices=dev)
    k1 = ImageTo4D.from_bundle(b, _settings(step_cache_interval=1), devices=dev)
    k2 = ImageTo4D.from_bundle(b, _settings(step_cache_interval=2), devices=dev)
    r0, r1, r2 = (p(images, prompts, seeds=[5], progress=False)[0] for p in (plain, k1, k2))
    np.testing.assert_array_equal(r1.latents, r0.latents)
    np.testing.assert_array_equal(r1.video, r0.video)
    assert plain.stats == k1.stats == {"dit_full": 4, "dit_cached": 0}
    assert k2.stats == {"dit_full": 3, "dit_cached": 1}  # steps 0, 2 and the last in full
    err = rel_l2(r2.latents, r0.latents)
    assert 0 < err < 0.2, err
    # a cached step really skips the blocks: far fewer flops than a full one
    state = k2._init(jax.device_put(np.zeros((1, *k2.latent_shape), np.float32)))
    enc = k2.condition_latents(images, prompts)
    args = (enc["cond"], enc["text"], enc["negative"], enc["clip"], k2.schedule.table[0], np.float32(999))
    full = k2._step_full.lower(k2._state, state, *args).compile()
    _, residual = full(k2._state, state, *args)
    cached = k2._step_cached.lower(k2._state, state, residual, *args).compile()
    flops = [c.cost_analysis()["flops"] for c in (full, cached)]
    assert flops[1] < 0.5 * flops[0], flops


# -- pipeline: int8 and the negative prompt ------------------------------------------------------------------------
def test_pipeline_int8_and_negative_prompt_once(bundle_dir):
    b = bundle_lib.load_bundle(bundle_dir)
    dev = jax.devices()[:1]
    images, prompts = _images(2, seed=1), ["a ball", ""]
    fp = ImageTo4D.from_bundle(b, _settings(negative_prompt="floor"), devices=dev)
    calls = []
    encode_text = fp._encode_text
    fp._encode_text = lambda *a: calls.append(1) or encode_text(*a)
    r_fp = fp(images, prompts, seeds=[1, 2], progress=False)  # two batches of one
    fp(images[:1], prompts[:1], seeds=[1], progress=False)
    assert len(calls) == 1
    # the cached negative is exactly the per-batch encoding the pipeline did before
    ids, mask = b.tokenizer(["floor"], max_length=16)
    from fourdnex_jax.models.text_encoder import wan_prompt_embeds

    direct = jax.jit(lambda i, m: wan_prompt_embeds(b.text_encoder, i, m))(ids.astype(np.int32), mask.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(fp.negative_embeddings()), np.asarray(direct, np.float32))
    dit = nnx.clone(b.transformer)
    q = ImageTo4D(dit, b.vae, b.text_encoder, b.image_encoder, b.tokenizer, b.clip_preprocess,
                  _settings(negative_prompt="floor", weight_quant="int8"), scheduler=b.scheduler, devices=dev)
    assert dit.blocks.attn1.to_q.kernel.dtype == jnp.int8  # quantised in place
    assert b.transformer.blocks.attn1.to_q.kernel.dtype == jnp.float32
    r_q = q(images, prompts, seeds=[1, 2], progress=False)
    for a, c in zip(r_q, r_fp):
        err = rel_l2(a.latents, c.latents)
        assert 0 < err < 0.05, err


def test_settings_validation_and_optional_config_keys():
    with pytest.raises(ValueError, match="weight_quant"):
        SampleSettings(weight_quant="int4")
    with pytest.raises(ValueError, match="step_cache_interval"):
        SampleSettings(step_cache_interval=-1)
    s = SampleSettings.from_config(load_config_file(ROOT / "configs" / "tiny.py").sample)
    assert s.weight_quant == "none" and s.step_cache_interval == 0


# -- serialized executables ----------------------------------------------------------------------------------------
def test_executable_roundtrip_in_pipeline(bundle_dir, tmp_path):
    b = bundle_lib.load_bundle(bundle_dir)
    dev = jax.devices()[:1]
    images, prompts = _images(seed=2), ["a box"]
    settings = _settings(num_steps=3, step_cache_interval=2)
    first = ImageTo4D.from_bundle(b, settings, devices=dev, executable_cache=tmp_path / "exe")
    r1 = first(images, prompts, seeds=[3], progress=False)[0]
    assert {e["action"] for e in first.executables.events} == {"compiled"}
    names = {e["name"] for e in first.executables.events}
    assert {"encode", "encode_text", "init", "step_full", "step_cached", "decode"} <= names
    second = ImageTo4D.from_bundle(b, settings, devices=dev, executable_cache=tmp_path / "exe",
                                   strict_executables=True)
    r2 = second(images, prompts, seeds=[3], progress=False)[0]
    assert [e["action"] for e in second.executables.events] == ["loaded"] * len(names)
    plain = ImageTo4D.from_bundle(b, settings, devices=dev)(images, prompts, seeds=[3], progress=False)[0]
    for r in (r2, plain):
        np.testing.assert_array_equal(r.latents, r1.latents)
        np.testing.assert_array_equal(r.video, r1.video)
    # another guidance scale is another program: refused in strict mode, naming the setting
    with pytest.raises(ExecutableKeyMismatch, match="settings.guidance_scale: stored 5.0, now 3.0"):
        ImageTo4D.from_bundle(b, dataclasses.replace(settings, guidance_scale=3.0), devices=dev,
                              executable_cache=tmp_path / "exe", strict_executables=True)(images, prompts,
                                                                                          progress=False)


def test_executable_key_mismatch_and_fallback(tmp_path):
    fn = jax.jit(lambda x: x * 2.0 + 1.0)
    x = jnp.arange(4.0)
    cache = ExecutableCache(tmp_path, {"model": {"dim": 64}})
    np.testing.assert_array_equal(cache.wrap("f", fn)(x), fn(x))
    assert cache.events[-1]["action"] == "compiled" and len(list(tmp_path.glob("f-*.jaxexec"))) == 1
    again = ExecutableCache(tmp_path, {"model": {"dim": 64}}, strict=True)
    np.testing.assert_array_equal(again.wrap("f", fn)(x), fn(x))
    assert again.events[-1]["action"] == "loaded"
    strict = ExecutableCache(tmp_path, {"model": {"dim": 128}}, strict=True)
    with pytest.raises(ExecutableKeyMismatch, match=r"context\.model\.dim: stored 64, now 128"):
        strict.wrap("f", fn)(x)
    with pytest.raises(ExecutableKeyMismatch, match="signature"):  # another shape is another program
        ExecutableCache(tmp_path, {"model": {"dim": 64}}, strict=True).wrap("f", fn)(jnp.arange(5.0))
    messages = []
    lenient = ExecutableCache(tmp_path, {"model": {"dim": 128}}, log=messages.append)
    np.testing.assert_array_equal(lenient.wrap("f", fn)(x), fn(x))
    assert lenient.events[-1]["action"] == "recompiled" and "context.model.dim" in lenient.events[-1]["reason"]
    assert messages and "compiling it anew" in messages[0]
    # a damaged executable file is reported, not silently used
    exe = Path(lenient.events[-1]["path"])
    exe.write_bytes(b"not a pickle")
    with pytest.raises(ExecutableLoadError, match="could not be loaded"):
        ExecutableCache(tmp_path, {"model": {"dim": 128}}, strict=True).wrap("f", fn)(x)
    with pytest.raises(ValueError, match="letters, digits"):
        cache.wrap("f/g", fn)


# -- tools ---------------------------------------------------------------------------------------------------------
def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}, **kw)


def test_sampling_benchmark_tool(bundle_dir, tmp_path):
    out = tmp_path / "bench.json"
    res = _run([sys.executable, str(ROOT / "tools" / "sampling_benchmark.py"), "--checkpoint", str(bundle_dir),
                "--num-steps", "3", "--variants", "unipc:2", "unipc:3:cache2:int8", "--repeats", "1",
                "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(out.read_text())
    rows = {r["variant"]: r for r in rep["rows"]}
    assert list(rows) == ["unipc:3", "unipc:2", "unipc:3:cache2:int8"] and rep["reference"] == "unipc:3"
    assert rows["unipc:3"]["xyz_rel_l2"] == 0 and rows["unipc:2"]["xyz_rel_l2"] > 0
    assert (rows["unipc:3:cache2:int8"]["dit_full"], rows["unipc:3:cache2:int8"]["dit_cached"]) == (2, 1)
    assert 0 <= rows["unipc:3"]["depth_abs_rel"] and 0 <= rows["unipc:3"]["depth_delta_1_25"] <= 1  # example gt
    assert rep["memory"]["int8"]["bytes"] < rep["memory"]["base"]["bytes"]
    assert "unipc:3:cache2:int8" in res.stdout and "sampling_benchmark: 3 variant(s)" in res.stdout
    with pytest.raises(ValueError, match="SOLVER:STEPS"):
        _tool().parse_variant("unipc:ten", SampleSettings())


def test_generate_cli_fast_path_options(bundle_dir, tmp_path):
    img = tmp_path / "a.png"
    from fourdnex_jax.data.media import write_png

    write_png(img, _images(seed=4)[0])
    cmd = [sys.executable, str(ROOT / "tools" / "generate.py"), "--image", str(img), "--checkpoint", str(bundle_dir),
           "--config.sample.num_frames=5", "--config.sample.height=32", "--config.sample.width=48",
           "--config.sample.num_steps=3", "--nopostprocess", "--weight-quant=int8", "--step-cache-interval=2",
           "--compilation-cache", str(tmp_path / "xla"), "--aot-cache", str(tmp_path / "exe")]
    for run in range(2):
        res = _run(cmd + ["--out", str(tmp_path / f"out{run}")])
        assert res.returncode == 0, res.stderr[-3000:]
        s = json.loads((tmp_path / f"out{run}" / "summary.json").read_text())
        fast = s["fast_paths"]
        assert s["settings"]["weight_quant"] == "int8" and s["settings"]["step_cache_interval"] == 2
        assert fast["dit_evaluations"] == {"dit_full": 2, "dit_cached": 1}
        assert {e["action"] for e in fast["executables"]} == ({"compiled"} if run == 0 else {"loaded"})
    assert any((tmp_path / "xla").iterdir())
    a, c = (np.load(tmp_path / f"out{r}" / "pointmaps.npz")["xyz"] for r in range(2))
    np.testing.assert_array_equal(a, c)
