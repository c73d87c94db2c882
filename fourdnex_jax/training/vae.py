"""Trains the tiny Wan VAE (``WanVAEConfig.tiny()``: base_dim 16, one residual block per stage, z = 16) on
synthetic 6D clips, so the bundled tiny model has a VAE that actually reconstructs RGB and XYZ.

Training examples are what the pipeline feeds the VAE: fused ``[RGB | XYZ]`` clips (N, T, H, 2W, 3) (RGB uint8 ->
[-1, 1], XYZ already normalised to [-1, 1]) of ``frames`` consecutive frames (1 + kF, F the temporal factor), and,
one step in four, the condition video (frame 0 = [RGB | slanted-plane XYZ init], zero frames after). Loss: L1 + L2
reconstruction of ``decode(mean + s eps)`` (``latent_noise`` s, default 0: a deterministic autoencoder, so the DiT
trains on posterior means, ``data.sample_posterior=False`` in ``configs/tiny.py``) plus 1e-4 x the mean squared
latent (keeps the latent scale bounded: a light KL stand-in).

Schedule: Adam (global-norm clip 1.0) with a linear warm-up and a cosine decay to 5% of the peak that ends at the
planned last step. With a time budget (``max_minutes``) the last step is planned once, from the measured step time
after :data:`PLAN_AFTER` steps, so the rate has decayed when the budget ends (a step-count schedule cut off by the
clock never decays); the plan is stored with the run and kept on resume.

Resume: with ``state_dir`` the train state (trainable weights, Adam moments), the data-order RNG, the step, the
planned last step, the history and the training seconds so far are checkpointed with the project's
:class:`~fourdnex_jax.training.checkpoint.Checkpointer` every ``checkpoint_minutes`` and at the end; a run started
again with the same settings continues from the latest checkpoint and takes exactly the steps it would have taken
uninterrupted (tested). Other settings are refused (:data:`RESUME_KEYS`).

After training, ``latents_mean`` / ``latents_std`` of the config are set to the per-channel statistics of the
posterior means of RGB and XYZ clips (encoded separately, as the encode step does), so VAE-normalised latents are
about zero-mean unit-variance for the DiT. :func:`save_vae_run` writes ``DIR/vae`` (orbax), ``DIR/configs/vae.json``
and ``DIR/vae_report.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fourdnex_jax.data import tfds_builders
from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.models import params
from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
from fourdnex_jax.recipe import condition_video
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.progress import Progress

#: The VAE's stages per spatial factor: 8 is Wan's (1, 2, 4, 4) with 4x temporal; 4 drops one spatial stage; 2 is
#: one stage (2x spatial, 2x temporal), the shape that reaches registrable XYZ on a CPU (docs/tiny_model.md).
STAGES = {8: {}, 4: {"dim_mult": (1, 2, 4), "temperal_downsample": (True, True)},
          2: {"dim_mult": (1, 2), "temperal_downsample": (True,)}}
PLAN_AFTER = 30         # steps timed (after the compiling first step) before the last step is planned
FLOOR = 0.05            # the cosine ends at FLOOR x the peak rate
#: Settings a resumed run must share with its checkpoint (the others: time budget, checkpoint interval).
RESUME_KEYS = ("steps", "batch", "frames", "lr", "seed", "crop", "latent_noise", "init", "spatial_factor",
               "train_part")


@dataclasses.dataclass(frozen=True)
class VAETrainSettings:
    """``crop``: train on random (H, W) crops of the fused frames (multiples of the spatial factor; the VAE is
    convolutional). ``init``: start from this run's ``vae/`` (its architecture). ``spatial_factor``: a key of
    :data:`STAGES`. ``train_part`` 'decoder': post_quant_conv + decoder only (the encoder, hence every latent
    already encoded with it, stays valid). ``max_minutes``: the training time budget over all resumes (0: none),
    ``steps`` the most steps. ``checkpoint_minutes``: interval of resumable checkpoints (with a ``state_dir``)."""

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
    checkpoint_minutes: float = 10.0

    @property
    def warmup(self) -> int:
        return min(100, self.steps // 10)


def learning_rate(step: int, last: int, warmup: int, peak: float) -> float:
    """Rate of 1-based ``step``: linear from peak/warmup to peak over ``warmup`` steps, then a cosine from peak to
    FLOOR x peak at ``last`` (and FLOOR x peak after it)."""
    if step <= warmup:
        return peak * step / max(warmup, 1)
    frac = min(1.0, (step - warmup) / max(1, last - warmup))
    return peak * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * frac)))


def plan_last_step(s: VAETrainSettings, step: int, elapsed_s: float, seconds_per_step: float) -> int:
    """The last step that fits the time budget at the measured rate (5% margin), at most ``s.steps``, at least
    2 x warm-up (a shorter cosine would not be a schedule)."""
    left = s.max_minutes * 60 - elapsed_s
    return int(min(s.steps, max(2 * s.warmup, step + int(0.95 * left / max(seconds_per_step, 1e-9)))))


def load_split(folder: str | os.PathLike, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rgb in [-1, 1], xyz) float32 arrays (N, T, H, W, 3) of a clips6d split."""
    src = tfds_builders.data_source(folder, split)
    n = len(src) if limit is None else min(limit, len(src))
    recs = [src[i] for i in range(n)]
    rgb = np.stack([np.asarray(r["rgb"]) for r in recs]).astype(np.float32) / 127.5 - 1.0
    xyz = np.stack([np.asarray(r["xyz"], np.float32) for r in recs])
    return rgb, xyz


def _settings_dict(s: VAETrainSettings) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["crop"] = list(s.crop) if s.crop else None
    return d


def build_vae(s: VAETrainSettings) -> WanVAE:
    """The VAE to train: :data:`STAGES` [``spatial_factor``] of ``WanVAEConfig.tiny()``, or the ``init`` run's
    architecture and weights; seeded by ``s.seed``."""
    if s.spatial_factor not in STAGES:
        raise InputError(f"spatial factor {s.spatial_factor}: one of {sorted(STAGES)}")
    cfg = WanVAEConfig.tiny(latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16, **STAGES[s.spatial_factor])
    prev = None
    if s.init:
        from fourdnex_jax.weights.restore import restore_model

        prev = restore_model(s.init, "vae")
        cfg = dataclasses.replace(prev.config, latents_mean=cfg.latents_mean, latents_std=cfg.latents_std)
    vae = WanVAE(cfg, rngs=nnx.Rngs(s.seed))
    if prev is not None:
        params.assign(vae, {p: v[...] for p, v in params.flat_variables(prev, nnx.Param).items()})
    return vae


def fit(vae: WanVAE, rgb: np.ndarray, xyz: np.ndarray, s: VAETrainSettings, *, state_dir: str | os.PathLike | None,
        stop_after: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains ``vae`` in place on clips ``rgb`` / ``xyz`` (N, T, H, W, 3) in [-1, 1] (module docstring: loss,
    schedule, resume from ``state_dir``); ``stop_after``: checkpoint and return after this step (to be resumed).
    Returns the training record: steps, planned last step, seconds, history of (step, loss, rec, lr) every 25
    steps, resumes, and ``stopped``: 'last step' | 'time budget' | 'stop_after'."""
    cfg = vae.config
    sf, tf = cfg.spatial_factor, cfg.temporal_factor
    n, t_all = rgb.shape[:2]
    f = s.frames
    ch, cw = s.crop if s.crop else (rgb.shape[2], 2 * rgb.shape[3])
    if (f - 1) % tf or ch % sf or cw % sf or f > t_all:
        raise InputError(f"frames {f} must be 1 + {tf}k (at most {t_all}) and the crop {ch}x{cw} multiples of {sf} "
                         "for this VAE")
    trained = nnx.Param if s.train_part == "all" else nnx.All(
        nnx.Param, nnx.Any(nnx.PathContains("decoder"), nnx.PathContains("post_quant_conv")))
    graphdef, train_state, other = nnx.split(vae, trained, ...)
    paths = {params.path_str(p): p for p, _ in nnx.to_flat_state(train_state)}
    variables = dict(nnx.to_flat_state(train_state))
    trainable = {k: variables[p][...] for k, p in paths.items()}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())
    opt_state = tx.init(trainable)

    def merge(values):
        st = nnx.from_flat_state([(paths[k], variables[paths[k]].replace(values[k])) for k in paths])
        return nnx.merge(graphdef, st, other)

    def loss_fn(values, video, eps):
        model = merge(values)
        dist = model.encode(video, chunked=False)
        rec = model.decode(dist.mean + s.latent_noise * eps, chunked=False, clip=False)
        err = rec - video
        rec_loss = jnp.mean(jnp.abs(err)) + jnp.mean(err ** 2)
        return rec_loss + 1e-4 * jnp.mean(dist.mean ** 2), rec_loss

    @jax.jit
    def train_step(values, opt_state, video, eps, lr):
        (loss, rec), grads = jax.value_and_grad(loss_fn, has_aux=True)(values, video, eps)
        updates, opt_state = tx.update(grads, opt_state, values)
        values = jax.tree.map(lambda p, u: p - lr * u, values, updates)
        return values, opt_state, loss, rec

    rng = np.random.default_rng(s.seed)
    step, last, elapsed, hist, resumes = 0, (None if s.max_minutes else s.steps), 0.0, [], 0
    ckpt = None
    if state_dir is not None:
        from fourdnex_jax.training.checkpoint import Checkpointer

        ckpt = Checkpointer(state_dir, max_to_keep=2, async_save=False)
        if ckpt.latest_step() is not None:
            abstract = {"trainable": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), trainable),
                        "opt_state": jax.eval_shape(tx.init, trainable)}
            state, data, meta = ckpt.restore(ckpt.latest_step(), abstract)
            old = meta["settings"]
            diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in _settings_dict(s).items()
                    if k in RESUME_KEYS and old.get(k) != v]
            if diff:
                ckpt.close()
                raise InputError(f"{state_dir}: holds a run with other settings ({'; '.join(diff)}); use another "
                                 "--out or the run's settings")
            trainable = {k: jnp.asarray(v) for k, v in state["trainable"].items()}
            opt_state = state["opt_state"]
            rng.bit_generator.state = data["rng"]
            step, last, elapsed, hist = meta["step"], meta["last_step"], meta["train_seconds"], meta["history"]
            resumes = meta.get("resumes", 0) + 1
            log(f"train_tiny_vae: resumed at step {step} ({elapsed / 60:.1f} min trained"
                + (f", last step {last})" if last else ")"))

    def save():
        if ckpt is not None:
            ckpt.save(step, {"trainable": trainable, "opt_state": opt_state},
                      {"rng": rng.bit_generator.state},
                      {"step": step, "last_step": last, "train_seconds": elapsed, "history": hist,
                       "resumes": resumes, "settings": _settings_dict(s)})

    lat_shape = (s.batch, 1 + (f - 1) // tf, ch // sf, cw // sf, cfg.z_dim)
    bar = Progress(last or s.steps, "vae", every=25)
    bar.n = step
    stopped, t_run, t_ckpt, t_plan = "last step", time.perf_counter(), time.perf_counter(), None
    while step < (last or s.steps):
        if s.max_minutes and elapsed >= s.max_minutes * 60:
            stopped = "time budget"
            break
        if stop_after is not None and step >= stop_after:
            stopped = "stop_after"
            break
        step += 1
        idx = rng.integers(0, n, s.batch)
        s0 = rng.integers(0, t_all - f + 1, s.batch)
        clip_rgb = np.stack([rgb[i, t:t + f] for i, t in zip(idx, s0)])
        clip_xyz = np.stack([xyz[i, t:t + f] for i, t in zip(idx, s0)])
        if step % 4 == 0:  # the condition video the pipeline encodes
            video = condition_video(clip_rgb[:, 0], f)
        else:
            if rng.random() < 0.5:  # mirror: x flips sign in the camera frame
                clip_rgb, clip_xyz = clip_rgb[:, :, :, ::-1], clip_xyz[:, :, :, ::-1] * np.array([-1, 1, 1], np.float32)
            video = np.concatenate([clip_rgb, clip_xyz], axis=3)
        if s.crop:
            y0 = int(rng.integers(0, video.shape[2] - ch + 1) // sf * sf)
            x0 = int(rng.integers(0, video.shape[3] - cw + 1) // sf * sf)
            video = video[:, :, y0:y0 + ch, x0:x0 + cw]
        eps = rng.standard_normal(lat_shape).astype(np.float32)
        lr = learning_rate(step, last or s.steps, s.warmup, s.lr)
        trainable, opt_state, loss, rec = train_step(trainable, opt_state, jnp.asarray(video), jnp.asarray(eps),
                                                     jnp.float32(lr))
        now = time.perf_counter()
        elapsed += now - t_run
        t_run = now
        if step % 25 == 0 or step == 1:
            hist.append({"step": step, "loss": float(loss), "rec": float(rec), "lr": lr})
        bar.update(info=f"loss {float(loss):.4f} lr {lr:.2e}")
        if last is None:  # plan the last step once, from steps timed after the compiling first one
            if t_plan is None:
                t_plan = (step, elapsed)
            elif step - t_plan[0] >= PLAN_AFTER:
                last = plan_last_step(s, step, elapsed, (elapsed - t_plan[1]) / (step - t_plan[0]))
                bar.total = last
                log(f"\ntrain_tiny_vae: {(elapsed - t_plan[1]) / (step - t_plan[0]):.2f} s/step: the schedule ends at "
                    f"step {last} (budget {s.max_minutes:g} min)")
        if ckpt is not None and now - t_ckpt >= s.checkpoint_minutes * 60:
            jax.block_until_ready(trainable)
            save()
            t_ckpt = time.perf_counter()
            t_run = t_ckpt  # the save's time is not training time
    if ckpt is not None:
        save()
        ckpt.close()
    if stopped == "time budget":
        log(f"\ntrain_tiny_vae: time budget reached at step {step} of {last or s.steps} (the rate had not fully "
            "decayed)")
    params.assign(vae, {params.path_str(paths[k]): v for k, v in trainable.items()})
    return {"steps": step, "last_step": last or s.steps, "train_seconds": round(elapsed, 1), "history": hist,
            "resumes": resumes, "stopped": stopped}


def train_tiny_vae(data: str | os.PathLike, s: VAETrainSettings, *, state_dir: str | os.PathLike | None = None,
                   stop_after: int | None = None, log: Callable[[str], None] = print
                   ) -> tuple[WanVAE, dict[str, Any], dict[str, np.ndarray]]:
    """Trains on the ``train`` split of the clips6d dataset ``data`` (:func:`fit`, resumable through
    ``state_dir``), sets the latent statistics, reconstructs the held-out clips (the ``heldout`` split, else the
    last 8 training clips; the chunked inference path, RGB and XYZ fused). Returns (the VAE, the report: steps,
    loss history, settings, latent statistics, held-out split name, ``heldout``: {'reconstruction'
    (N, T, H, 2W, 3), 'rgb', 'xyz' (N, T, H, W, 3)} for the caller's metrics)."""
    rgb, xyz = load_split(data, "train")
    n = rgb.shape[0]
    log(f"train_tiny_vae: {n} clips of {rgb.shape[1:]} from {data}")
    vae = build_vae(s)
    record = fit(vae, rgb, xyz, s, state_dir=state_dir, stop_after=stop_after, log=log)
    cfg = vae.config

    # latent statistics (RGB and XYZ encoded separately, posterior mean, full clips like the encode step)
    enc = nnx.jit(lambda m, v: m.encode(v).mean)
    k = min(n, 64)
    lat = np.concatenate([np.asarray(enc(vae, jnp.asarray(a[i:i + 8]))) for a in (rgb[:k], xyz[:k])
                          for i in range(0, k, 8)])
    mean = lat.reshape(-1, cfg.z_dim).mean(0)
    std = lat.reshape(-1, cfg.z_dim).std(0) + 1e-6
    cfg = dataclasses.replace(cfg, latents_mean=tuple(float(v) for v in mean), latents_std=tuple(float(v) for v in std))
    vae.config = cfg

    report = {**record, "train_part": s.train_part, "spatial_factor": cfg.spatial_factor,
              "temporal_factor": cfg.temporal_factor, "init": s.init, "clips": n, "frames_per_example": s.frames,
              "batch": s.batch, "lr": s.lr, "seed": s.seed, "max_minutes": s.max_minutes,
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
