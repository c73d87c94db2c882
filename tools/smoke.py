"""Smoke run of the 4DNeX DiT: flow-matching sampling with classifier-free guidance on random weights.

    python tools/smoke.py --config configs/tiny.py --out out/smoke [--config.smoke.num_steps=8]

Until the full image-to-4D pipeline exists (VAE, encoders, trained weights), this exercises the whole denoising
path of the real model at the config's size: the 4DNeX condition (first latent frame of RGB known with mask 1,
XYZ prior with mask 0.5, width-fused), random stand-ins for the UMT5/CLIP embeddings and the image latent, shifted
flow-matching sigmas, Euler steps, guidance batched with the conditional pass in one forward. Writes
``latents.npz`` (the fused latent and its RGB/XYZ halves, NTHWC) and ``summary.json`` atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from fourdnex_jax.config import model_config
from fourdnex_jax.io_utils import Progress, atomic_save_json, atomic_save_npz
from fourdnex_jax.models.transformer import WanTransformer3D, layouts
from fourdnex_jax.pipelines.conditioning import dit_input, guided_mask
from fourdnex_jax.sampling.flow_matching import classifier_free_guidance, euler_step, shifted_sigmas

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Experiment config file.", lock_config=True)
_OUT = flags.DEFINE_string("out", "out/smoke", "Output directory.")


def main(argv) -> None:
    del argv
    config = _CONFIG.value
    cfg = model_config(config)
    s = config.smoke
    t_start = time.perf_counter()
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(config.seed))
    key = jax.random.key(config.seed)
    k_noise, k_img, k_txt, k_clip = jax.random.split(key, 4)

    shape = (1, s.latent_frames, s.latent_height, s.latent_width, cfg.out_channels)
    image_latent = jax.random.normal(k_img, shape)  # stand-in for VAE(first frame), frames > 0 zero
    first_frame_only = jnp.zeros(shape).at[:, 0].set(image_latent[:, 0])
    if cfg.modality_layout == "none":
        condition = first_frame_only
    else:
        condition = layouts.fuse(first_frame_only, first_frame_only, cfg.modality_layout)
    mask = guided_mask(*shape[:4], cfg.modality_layout)
    latents = jax.random.normal(k_noise, condition.shape)
    text = jax.random.normal(k_txt, (1, s.text_len, cfg.text_dim))
    clip = jax.random.normal(k_clip, (1, 257, cfg.image_dim)) if cfg.image_dim else None
    # Guidance batched with the conditional pass: [cond, uncond] (empty negative prompt = zero embeddings).
    text_pair = jnp.concatenate([text, jnp.zeros_like(text)])
    clip_pair = None if clip is None else jnp.concatenate([clip, clip])

    @nnx.jit
    def step(model, x, sigma, sigma_next):
        inp = dit_input(x, mask, condition)
        v = model(jnp.concatenate([inp, inp]), jnp.full((2,), sigma * 1000.0), text_pair, clip_pair)
        v_cond, v_uncond = jnp.split(v, 2)
        return euler_step(x, classifier_free_guidance(v_cond, v_uncond, s.guidance_scale), sigma, sigma_next)

    sigmas = shifted_sigmas(s.num_steps, s.flow_shift)
    bar = Progress(s.num_steps, f"sampling ({config.name}, {int(np.prod(layouts.patch_grid(latents.shape, cfg.patch_size)))} tokens)", every=1)
    for i in range(s.num_steps):
        latents = step(model, latents, sigmas[i], sigmas[i + 1])
        bar.update(info=f"sigma {sigmas[i + 1]:.3f}")
    latents = np.asarray(jax.block_until_ready(latents))
    if not np.isfinite(latents).all():
        raise FloatingPointError("sampling produced non-finite latents")
    out = Path(_OUT.value)
    arrays = {"latents": latents}
    if cfg.modality_layout != "none":
        arrays["rgb"], arrays["xyz"] = (np.asarray(a) for a in layouts.split(jnp.asarray(latents),
                                                                              cfg.modality_layout))
    atomic_save_npz(out / "latents.npz", **arrays)
    summary = {"config": config.name, "seed": config.seed, "steps": s.num_steps, "guidance": s.guidance_scale,
               "flow_shift": s.flow_shift, "latent_shape": list(latents.shape), "sampling_seconds": bar.elapsed,
               "total_seconds": time.perf_counter() - t_start, "latent_std": float(latents.std())}
    atomic_save_json(out / "summary.json", summary)
    print(f"summary: {config.name} smoke run, {s.num_steps} steps x CFG on latent {tuple(latents.shape)} in "
          f"{summary['total_seconds']:.1f}s -> {out / 'latents.npz'}")


if __name__ == "__main__":
    app.run(main)
