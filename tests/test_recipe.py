"""The 4DNeX recipe pinned value by value (torch-free): a change to any of these is a change of the model.

Reference: 3DTopia/4DNeX @ 1101bc6 (see the ``fourdnex_jax.recipe`` docstring for the optimizer evidence)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourdnex_jax import recipe
from fourdnex_jax.config import load_config_file, model_config
from fourdnex_jax.training import objective, optimizer

ROOT = Path(__file__).resolve().parents[1]
CONFIG_14B = ROOT / "configs" / "wan21_i2v_14b_480p.py"


def test_prompt_and_xyz_latent_constants():
    assert recipe.POINTMAP_SUFFIX == " POINTMAP_STYLE."
    assert recipe.training_prompt("A cat.  ") == "A cat. POINTMAP_STYLE."
    assert (recipe.XYZ_LATENT_MEAN, recipe.XYZ_LATENT_STD) == (-0.13, 1.70)
    z = np.linspace(-3, 3, 7)
    normalised = (z - recipe.XYZ_LATENT_MEAN) / recipe.XYZ_LATENT_STD  # encode step
    np.testing.assert_allclose(normalised * 1.70 - 0.13, z)  # decode: inference.py's x * 1.70 - 0.13
    assert recipe.MODALITY_LAYOUT == "width"


def test_xyz_init_pointmap():
    p = recipe.xyz_init_pointmap(3, 5)
    assert p.shape == (3, 5, 3) and p.dtype == np.float32
    assert p[0, 0].tolist() == [-1, -1, 1] and p[-1, -1].tolist() == [1, 1, -1]
    np.testing.assert_array_equal(p[..., 2], -p[..., 1])
    np.testing.assert_allclose(p[1, :, 0], np.linspace(-1, 1, 5))


def test_condition_video():
    rgb0 = np.full((2, 3, 4, 3), 0.25, np.float32)
    v = recipe.condition_video(rgb0, 5)
    assert v.shape == (2, 5, 3, 8, 3)
    np.testing.assert_array_equal(v[:, 0, :, :4], rgb0)
    np.testing.assert_array_equal(v[:, 0, :, 4:], np.broadcast_to(recipe.xyz_init_pointmap(3, 4), (2, 3, 4, 3)))
    assert not v[:, 1:].any()


def test_guided_mask_values():
    assert (recipe.RGB_FIRST_FRAME_MASK, recipe.XYZ_FIRST_FRAME_MASK, recipe.MASK_CHANNELS) == (1.0, 0.5, 4)
    m = np.asarray(recipe.guided_mask(2, 3, 2, 4, "width"))
    assert m.shape == (2, 3, 2, 8, 4)
    assert (m[:, 0, :, :4] == 1.0).all() and (m[:, 0, :, 4:] == 0.5).all() and not m[:, 1:].any()
    assert (np.asarray(recipe.guided_mask(1, 2, 2, 2, "none"))[:, 0] == 1.0).all()
    x = jnp.zeros((1, 3, 2, 8, 16))
    assert recipe.dit_input(x, jnp.asarray(m[:1]), x).shape == (1, 3, 2, 8, 36)


def test_training_objective():
    t, sigma = objective.sample_timesteps(jax.random.key(0), 20000)
    t, sigma = np.asarray(t), np.asarray(sigma)
    assert objective.NUM_TRAIN_TIMESTEPS == 1000
    assert t.dtype == np.float32 and (t == np.round(t)).all() and t.min() == 1 and t.max() == 1000
    np.testing.assert_allclose(sigma, t / 1000.0, rtol=1e-6)
    assert abs(t.mean() - 500.5) < 5  # uniform over {1..1000}

    rng = np.random.default_rng(0)
    b, f, h, w, z = 2, 3, 2, 4, 16
    lat = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    batch = {"rgb_latent": lat(b, f, h, w, z), "xyz_latent": lat(b, f, h, w, z), "cond_latent": lat(b, f, h, 2 * w, z)}
    inp, timestep, target = objective.flow_matching_inputs(batch, jax.random.key(1), "width", sample_posterior=False)
    x = jnp.concatenate([batch["rgb_latent"], batch["xyz_latent"]], axis=3)  # width fusion: [RGB | XYZ]
    eps = target + x  # target = eps - x
    s = (timestep / 1000.0)[:, None, None, None, None]
    np.testing.assert_allclose(inp[..., :16], (1 - s) * x + s * eps, atol=1e-6)  # x_t = (1 - sigma) x + sigma eps
    np.testing.assert_array_equal(inp[..., 16:20], recipe.guided_mask(b, f, h, w, "width"))
    np.testing.assert_array_equal(inp[..., 20:], batch["cond_latent"])
    assert abs(float(jnp.std(eps)) - 1.0) < 0.1  # eps ~ N(0, 1)


@pytest.mark.parametrize("preset, values, lrs", [
    ("reference_effective", dict(b1=0.9, b2=0.999, eps=1e-8, learning_rate=2e-5, weight_decay=1e-4,
                                 grad_clip_norm=1.0, schedule="constant", warmup_steps=0),
     {0: 2e-5, 1: 2e-5, 2: 2e-5, 100: 2e-5, 5000: 2e-5}),
    ("reference_declared", dict(b1=0.9, b2=0.95, eps=1e-8, learning_rate=2e-5, weight_decay=1e-4,
                                grad_clip_norm=1.0, schedule="linear_decay", warmup_steps=100, end_learning_rate=0.0),
     {0: 0.0, 1: 2e-7, 2: 4e-7, 100: 2e-5, 5000: 0.0}),
])
def test_optimizer_presets_and_learning_rate(preset, values, lrs):
    config = load_config_file(CONFIG_14B, f"optim={preset}")
    assert config.train.num_steps == 5000
    resolved = optimizer.resolve(config.optim)
    assert {k: getattr(resolved, k) for k in values} == values
    schedule = optimizer.learning_rate_schedule(config.optim, config.train.num_steps)
    for step, lr in lrs.items():
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-5, abs=1e-12), step


def test_14b_default_optimizer_is_the_effective_one_and_overrides_apply():
    config = load_config_file(CONFIG_14B)
    assert config.optim.preset == "reference_effective"
    config.optim.b2 = 0.97
    assert optimizer.resolve(config.optim).b2 == 0.97
    config.optim.preset = "adam_from_a_paper"
    with pytest.raises(ValueError, match="optim.preset"):
        optimizer.resolve(config.optim)


def test_14b_sampling_and_lora_values():
    p = recipe.SAMPLING_PRESETS["wan21_i2v_14b_480p"]
    assert p.to_dict() == dict(num_frames=49, max_area=480 * 720, num_steps=50, guidance_scale=5.0,
                               negative_prompt="", text_len=512, flow_shift=3.0, solver="unipc",
                               sigma_schedule="diffusers_0_34")
    cfg = model_config(load_config_file(CONFIG_14B))
    assert (cfg.lora_rank, cfg.lora_alpha) == (64, 32.0)
    assert recipe.effective_lora_scale(cfg.lora_alpha, cfg.lora_rank) == 0.5 == cfg.lora_scale
    assert recipe.effective_lora_scale(32.0, 0) == 0.0
    assert set(cfg.lora_targets) == {"to_q", "to_k", "to_v", "to_out.0"}
    assert cfg.modality_layout == recipe.MODALITY_LAYOUT
    tiny = recipe.SAMPLING_PRESETS["tiny"]
    assert (tiny.num_frames, tiny.max_area, tiny.num_steps, tiny.guidance_scale, tiny.text_len) == (9, 32 * 48, 20,
                                                                                                   1.0, 16)


def test_specs_round_trip_strictly():
    spec = recipe.SixDSpec()
    assert spec.to_dict() == dict(prompt_suffix=" POINTMAP_STYLE.", xyz_latent_mean=-0.13, xyz_latent_std=1.70,
                                  rgb_first_frame_mask=1.0, xyz_first_frame_mask=0.5, layout="width",
                                  xyz_normalization="reference")
    assert recipe.SixDSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown keys"):
        recipe.SixDSpec.from_dict({**spec.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="missing keys"):
        recipe.SamplingPreset.from_dict({"num_frames": 49})
    p = recipe.SAMPLING_PRESETS["tiny"]
    assert recipe.SamplingPreset.from_dict(p.to_dict()) == p
