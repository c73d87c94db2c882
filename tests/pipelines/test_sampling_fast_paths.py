"""Sampling fast paths in the pipeline: the int8 DiT copy, the step cache (bit-identical at k = 1, fewer block
evaluations otherwise; the schedule is tested in tests/sampling/test_step_cache.py, the int8 layers in
tests/models/test_quantize.py), serialized executables (round trip, key mismatch), the negative prompt
encoded once, and `fourdnex generate`'s fast-path options on a random tiny bundle (the sampling benchmark:
tests/benchmarks/test_sampling_benchmark.py)."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.config import load_config_file
from fourdnex_jax.pipelines import aot
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines.aot import ExecutableCache, ExecutableKeyMismatch, ExecutableLoadError
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SAMPLING_PRESETS, SamplingPreset
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.testing.random_models import write_random_bundle
from fourdnex_jax.utils import trust
from fourdnex_jax.utils.errors import UntrustedFileError
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
T, H, W = 5, 32, 48
#: 5 frames at 32 x 48, 4 UniPC steps, CFG 5 (the guided path), 16 text tokens.
PRESET = SamplingPreset(num_frames=T, max_area=H * W, num_steps=4, guidance_scale=5.0, negative_prompt="",
                        text_len=16, flow_shift=3.0, solver="unipc")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return write_random_bundle(tmp_path_factory.mktemp("fast") / "bundle", captions=("a ball on the floor",))


def _settings(**kw):
    return SampleSettings.from_preset(PRESET, **kw)


def _images(n=1, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((H, W, 3)) * 255).astype(np.uint8) for _ in range(n)]


# -- step cache ----------------------------------------------------------------------------------------------------
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
    state = k2._init(jax.device_put(np.zeros((1, *k2.latent_shape(H, W)), np.float32)))
    text, neg = k2.encode_prompt(prompts)
    clip, cond = k2.encode_image(images)
    args = (cond, text, neg, clip, k2.schedule.table[0], np.float32(999))
    dit = k2._state("transformer")
    full = k2._steps["full"].lower(dit, state, None, *args).compile()
    _, residual = full(dit, state, None, *args)
    cached = k2._steps["cached"].lower(dit, state, residual, *args).compile()
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
    fp._encode_text = lambda *a: calls.append(np.asarray(a[1]).tolist()) or encode_text(*a)  # token ids
    r_fp = fp(images, prompts, seeds=[1, 2], progress=False)  # two batches of one
    fp(images[:1], prompts[:1], seeds=[1], progress=False)
    ids, mask = b.tokenizer(["floor"], max_length=16)
    assert len(calls) == 4 and calls.count(ids.astype(np.int32).tolist()) == 1  # 3 prompt batches, 1 negative
    # the cached negative is exactly the per-batch encoding the pipeline did before
    from fourdnex_jax.models.text_encoder import wan_prompt_embeds

    direct = jax.jit(lambda i, m: wan_prompt_embeds(b.text_encoder, i, m))(ids.astype(np.int32), mask.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(fp.negative_embeddings()), np.asarray(direct, np.float32))
    dit = nnx.clone(b.transformer)
    q = ImageTo4D(dit, b.vae, b.text_encoder, b.image_encoder, b.tokenizer, b.clip_preprocess,
                  _settings(negative_prompt="floor", weight_quant="int8"), spec=b.spec, scheduler=b.scheduler,
                  devices=dev)
    assert dit.blocks.attn1.to_q.kernel.dtype == jnp.float32  # the caller's model is not quantised
    assert q._state("transformer")["blocks"]["attn1"]["to_q"]["kernel"].dtype == jnp.int8  # the pipeline's copy is
    assert b.transformer.blocks.attn1.to_q.kernel.dtype == jnp.float32
    r_q = q(images, prompts, seeds=[1, 2], progress=False)
    for a, c in zip(r_q, r_fp):
        err = rel_l2(a.latents, c.latents)
        assert 0 < err < 0.05, err


def test_settings_validation_and_config_keys():
    with pytest.raises(ValueError, match="weight_quant"):
        _settings(weight_quant="int4")
    with pytest.raises(ValueError, match="step_cache_interval"):
        _settings(step_cache_interval=-1)
    with pytest.raises(ValueError, match="resize_mode"):
        _settings(resize_mode="stretch")
    with pytest.raises(ValueError, match="num_frames=0"):
        _settings(num_frames=0)
    sample = load_config_file(ROOT / "configs" / "tiny.py").sample
    s = SampleSettings.from_config(sample, PRESET)  # every preset field None in the config: the bundle's values
    assert s == SampleSettings.from_preset(PRESET) and s.preset == PRESET and s.overrides_of(PRESET) == {}
    assert s.weight_quant == "none" and s.step_cache_interval == 0 and s.resize_mode == "aspect"
    with sample.unlocked():
        sample.num_steps, sample.guidance_scale = 8, 1.0
    s = SampleSettings.from_config(sample, SAMPLING_PRESETS["wan21_i2v_14b_480p"])
    assert s.overrides_of(SAMPLING_PRESETS["wan21_i2v_14b_480p"]) == {"num_steps": 8, "guidance_scale": 1.0}
    assert (s.num_frames, s.max_area, s.text_len) == (49, 480 * 720, 512)
    with pytest.raises(ValueError, match=r"unknown keys \['height'\]"):
        SampleSettings.from_config({**sample.to_dict(), "height": 480}, PRESET)
    with pytest.raises(ValueError, match="config.sample.seed is None"):
        SampleSettings.from_config({**sample.to_dict(), "seed": None}, PRESET)


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
    assert {"encode_text", "encode_image", "init", "step_full", "step_cached", "decode", "noise-2x4x12x16"} <= names
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
    # a damaged executable file is refused by its integrity check, not silently used or skipped
    exe = Path(lenient.events[-1]["path"])
    exe.write_bytes(b"not a pickle")
    for strict_mode in (True, False):
        with pytest.raises(UntrustedFileError, match="integrity check"):
            ExecutableCache(tmp_path, {"model": {"dim": 128}}, strict=strict_mode).wrap("f", fn)(x)
    # an authentic (signed) entry this runtime cannot load: strict raises, lenient recompiles after a message
    signer = ExecutableCache(tmp_path, {"model": {"dim": 128}})
    digest = exe.name.split("-")[1].split(".")[0]
    key = signer.key("f", (x,))
    exe.write_bytes(aot.MAGIC + trust.tag(signer._key, aot._digest(key).encode(), b"not a pickle") + b"not a pickle")
    assert aot._digest(key).startswith(digest)
    with pytest.raises(ExecutableLoadError, match="could not be loaded"):
        ExecutableCache(tmp_path, {"model": {"dim": 128}}, strict=True).wrap("f", fn)(x)
    with pytest.raises(ValueError, match="letters, digits"):
        cache.wrap("f/g", fn)


# -- tools ---------------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_generate_cli_fast_path_options(bundle_dir, tmp_path):
    img = tmp_path / "a.png"
    from fourdnex_jax.media.io import write_png

    write_png(img, _images(seed=4)[0])
    cmd = ["generate", "--image", str(img), "--checkpoint", str(bundle_dir),
           "--config.sample.num_frames=5", "--config.sample.max_area=1536", "--config.sample.num_steps=3",
           "--nopostprocess", "--config.sample.weight_quant=int8", "--config.sample.step_cache_interval=2",
           "--compilation-cache", str(tmp_path / "xla"), "--aot-cache", str(tmp_path / "exe")]
    for run in range(2):
        res = run_cli(*cmd, "--out", tmp_path / f"out{run}", timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        s = json.loads((tmp_path / f"out{run}" / "summary.json").read_text())
        fast = s["fast_paths"]
        assert s["settings"]["weight_quant"] == "int8" and s["settings"]["step_cache_interval"] == 2
        assert fast["dit_evaluations"] == {"dit_full": 2, "dit_cached": 1}
        assert {e["action"] for e in fast["executables"]} == ({"compiled"} if run == 0 else {"loaded"})
    assert any((tmp_path / "xla").iterdir())
    a, c = (np.load(tmp_path / f"out{r}" / "pointmaps.npz")["xyz"] for r in range(2))
    np.testing.assert_array_equal(a, c)
