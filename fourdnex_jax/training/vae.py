"""Trains the tiny Wan VAE (``WanVAEConfig.tiny()``: base_dim 16, one residual block per stage, z = 16) on
synthetic 6D clips, so the bundled tiny model has a VAE that actually reconstructs RGB and XYZ.

Training examples are what the pipeline feeds the VAE: fused ``[RGB | XYZ]`` clips (N, T, H, 2W, 3) (RGB uint8 ->
[-1, 1], XYZ already normalised to [-1, 1]) of ``frames`` consecutive frames (1 + 4k), and, one step in four, the
condition video (frame 0 = [RGB | slanted-plane XYZ init], zero frames after). Loss: L1 + L2 reconstruction of
``decode(mean + s eps)`` (``latent_noise`` s, default 0: a deterministic autoencoder) plus 1e-4 x the mean squared
latent (keeps the latent scale bounded: a light KL stand-in). Adam with cosine decay.

After training, ``latents_mean`` / ``latents_std`` of the config are set to the per-channel statistics of the
posterior means of RGB and XYZ clips (encoded separately, as the encode step does), so VAE-normalised latents are
about zero-mean unit-variance for the DiT. :func:`save_vae_run` writes ``DIR/vae`` (orbax), ``DIR/configs/vae.json``
and ``DIR/vae_report.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fourdnex_jax.data import tfds_builders
from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.models import params
from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
from fourdnex_jax.recipe import condition_video
from fourdnex_jax.utils.progress import Progress


@dataclasses.dataclass(frozen=True)
class VAETrainSettings:
    """``crop``: train on random (H, W) crops of the fused frames (multiples of the spatial factor; the VAE is
    convolutional). ``init``: start from this run's ``vae/`` (its architecture). ``spatial_factor`` 8: Wan's
    dim_mult (1, 2, 4, 4); 4: dim_mult (1, 2, 4), one downsampling stage fewer. ``train_part`` 'decoder':
    post_quant_conv + decoder only (the encoder, hence every latent already encoded with it, stays valid).
    ``max_minutes``: stop early after this long (0: no limit)."""

    steps: int = 1500
    batch: int = 2
    frames: int = 5
    lr: float = 1e-3
    seed: int = 0
    crop: tuple[int, int] | None = None
    latent_noise: float = 0.0
    init: str | None = None
    spatial_factor: int = 8
    train_part: str = "all"
    max_minutes: float = 0.0


def load_split(folder: str | os.PathLike, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rgb in [-1, 1], xyz) float32 arrays (N, T, H, W, 3) of a clips6d split."""
    src = tfds_builders.data_source(folder, split)
    n = len(src) if limit is None else min(limit, len(src))
    recs = [src[i] for i in range(n)]
    rgb = np.stack([np.asarray(r["rgb"]) for r in recs]).astype(np.float32) / 127.5 - 1.0
    xyz = np.stack([np.asarray(r["xyz"], np.float32) for r in recs])
    return rgb, xyz


def train_tiny_vae(data: str | os.PathLike, s: VAETrainSettings, *, log: Callable[[str], None] = print
                   ) -> tuple[WanVAE, dict[str, Any], dict[str, np.ndarray]]:
    """Trains on the ``train`` split of the clips6d dataset ``data``, sets the latent statistics, reconstructs the
    held-out clips (the ``heldout`` split, else the last 8 training clips; the chunked inference path, RGB and XYZ
    fused). Returns (the VAE, the report: steps, loss history, settings, latent statistics, held-out split name,
    ``heldout``: {'reconstruction' (N, T, H, 2W, 3), 'rgb', 'xyz' (N, T, H, W, 3)} for the caller's metrics)."""
    if (s.frames - 1) % 4:
        raise ValueError("frames must be 1 + 4k")
    t_start = time.perf_counter()
    rgb, xyz = load_split(data, "train")
    n, t_all = rgb.shape[:2]
    log(f"train_tiny_vae: {n} clips of {rgb.shape[1:]} from {data}")
    stages = {8: {}, 4: {"dim_mult": (1, 2, 4), "temperal_downsample": (True, True)}}[s.spatial_factor]
    cfg = WanVAEConfig.tiny(latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16, **stages)
    if s.init:
        from fourdnex_jax.weights.restore import restore_model

        prev = restore_model(s.init, "vae")
        cfg = dataclasses.replace(prev.config, latents_mean=cfg.latents_mean, latents_std=cfg.latents_std)
    vae = WanVAE(cfg, rngs=nnx.Rngs(s.seed))
    if s.init:
        params.assign(vae, {p: v[...] for p, v in params.flat_variables(prev, nnx.Param).items()})
    sched = optax.warmup_cosine_decay_schedule(0.0, s.lr, min(100, s.steps // 10), s.steps, s.lr * 0.05)
    trained = nnx.Param if s.train_part == "all" else nnx.All(
        nnx.Param, nnx.Any(nnx.PathContains("decoder"), nnx.PathContains("post_quant_conv")))
    opt = nnx.Optimizer(vae, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched)), wrt=trained)

    def loss_fn(model, video, eps):
        dist = model.encode(video, chunked=False)
        z = dist.mean + s.latent_noise * eps
        rec = model.decode(z, chunked=False, clip=False)
        err = rec - video
        rec_loss = jnp.mean(jnp.abs(err)) + jnp.mean(err ** 2)
        return rec_loss + 1e-4 * jnp.mean(dist.mean ** 2), rec_loss

    @nnx.jit
    def train_step(model, optimizer, video, eps):
        (loss, rec), grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, trained), has_aux=True)(
            model, video, eps)
        optimizer.update(model, grads)
        return loss, rec

    rng = np.random.default_rng(s.seed)
    f = s.frames
    ch, cw = s.crop if s.crop else (rgb.shape[2], 2 * rgb.shape[3])
    sf, tf = cfg.spatial_factor, cfg.temporal_factor
    if (f - 1) % tf or ch % sf or cw % sf:
        raise ValueError(f"frames must be 1 + {tf}k and crop multiples of {sf} for this VAE")
    lat_shape = (s.batch, 1 + (f - 1) // tf, ch // sf, cw // sf, cfg.z_dim)
    bar = Progress(s.steps, "vae", every=25)
    hist = []
    step = 0
    for step in range(1, s.steps + 1):
        idx = rng.integers(0, n, s.batch)
        s0 = rng.integers(0, t_all - f + 1, s.batch)
        clip_rgb = np.stack([rgb[i, t:t + f] for i, t in zip(idx, s0)])
        clip_xyz = np.stack([xyz[i, t:t + f] for i, t in zip(idx, s0)])
        if step % 4 == 0:  # the condition video the pipeline encodes
            video = condition_video(clip_rgb[:, 0], f)
        else:
            if rng.random() < 0.5:
                clip_rgb, clip_xyz = clip_rgb[:, :, :, ::-1], clip_xyz[:, :, :, ::-1] * np.array([-1, 1, 1], np.float32)
            video = np.concatenate([clip_rgb, clip_xyz], axis=3)
        if s.crop:
            ch, cw = s.crop
            y0 = int(rng.integers(0, video.shape[2] - ch + 1) // sf * sf)
            x0 = int(rng.integers(0, video.shape[3] - cw + 1) // sf * sf)
            video = video[:, :, y0:y0 + ch, x0:x0 + cw]
        eps = rng.standard_normal(lat_shape).astype(np.float32)
        loss, rec = train_step(vae, opt, jnp.asarray(video), jnp.asarray(eps))
        if step % 25 == 0 or step == 1:
            hist.append({"step": step, "loss": float(loss), "rec": float(rec)})
        bar.update(info=f"loss {float(loss):.4f}")
        if s.max_minutes and time.perf_counter() - t_start > s.max_minutes * 60:
            log(f"\ntrain_tiny_vae: time budget reached at step {step}")
            break
    train_s = time.perf_counter() - t_start

    # latent statistics (RGB and XYZ encoded separately, posterior mean, full clips like the encode step)
    enc = nnx.jit(lambda m, v: m.encode(v).mean)
    k = min(n, 64)
    lat = np.concatenate([np.asarray(enc(vae, jnp.asarray(a[i:i + 8]))) for a in (rgb[:k], xyz[:k])
                          for i in range(0, k, 8)])
    mean = lat.reshape(-1, cfg.z_dim).mean(0)
    std = lat.reshape(-1, cfg.z_dim).std(0) + 1e-6
    cfg = dataclasses.replace(cfg, latents_mean=tuple(float(v) for v in mean), latents_std=tuple(float(v) for v in std))
    vae.config = cfg

    # held-out reconstruction (full clips, the chunked inference path, fused and separate)
    report = {"steps": step, "train_part": s.train_part, "spatial_factor": cfg.spatial_factor, "init": s.init,
              "train_seconds": round(train_s, 1), "history": hist, "clips": n,
              "frames_per_example": f, "batch": s.batch, "lr": s.lr, "seed": s.seed,
              "latents_mean": list(cfg.latents_mean), "latents_std": list(cfg.latents_std)}
    try:
        h_rgb, h_xyz = load_split(data, "heldout", 16)
        split = "heldout"
    except Exception:  # noqa: BLE001 - no held-out split in this dataset
        h_rgb, h_xyz = rgb[-8:], xyz[-8:]
        split = "train (last 8)"
    rec = nnx.jit(lambda m, v: m.decode(m.encode(v).mean))
    fused = np.concatenate([np.asarray(rec(vae, jnp.asarray(np.concatenate([h_rgb[i:i + 4], h_xyz[i:i + 4]], 3))))
                            for i in range(0, len(h_rgb), 4)])
    report["heldout_split"] = split
    return vae, report, {"reconstruction": fused, "rgb": h_rgb, "xyz": h_xyz}


def save_vae_run(out: str | os.PathLike, vae: WanVAE, report: dict[str, Any]) -> Path:
    """Writes ``out/vae`` (orbax, fp32), ``out/configs/vae.json`` and ``out/vae_report.json``; refuses an existing
    ``out/vae``. Returns ``out``."""
    from fourdnex_jax.weights.orbax import save_flat
    from fourdnex_jax.weights.registry import SPECS

    out = Path(out)
    flat = {p: np.asarray(v[...]) for p, v in params.flat_variables(vae, nnx.Param).items()}
    if (out / "vae").exists():
        raise FileExistsError(f"{out / 'vae'} exists")
    save_flat(out / "vae", flat)
    atomic_save_json(out / "configs" / "vae.json", SPECS["vae"].config_to_json(vae.config, "float32"))
    atomic_save_json(out / "vae_report.json", report)
    return out
