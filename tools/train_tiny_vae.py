"""Trains the tiny Wan VAE (``WanVAEConfig.tiny()``: base_dim 16, one residual block per stage, z = 16) on
synthetic 6D clips, so the bundled tiny model has a VAE that actually reconstructs RGB and XYZ.

    python tools/train_tiny_vae.py --data CLIPS6D_DATASET_DIR --out DIR [--steps 1500] [--batch 2]
        [--frames 5] [--crop H W] [--lr 1e-3] [--seed 0] [--max-minutes 0] [--spatial-factor 8|4] [--init RUN]
        [--train-part all|decoder]

Training examples are what the pipeline feeds the VAE: fused ``[RGB | XYZ]`` clips (H x 2W, RGB uint8 -> [-1, 1],
XYZ already normalised to [-1, 1]) of ``frames`` consecutive frames (1 + 4k), and, one step in four, the
condition video (frame 0 = [RGB | slanted-plane XYZ init], zero frames after). Loss: L1 + L2 reconstruction of
``decode(mean + s eps)`` (``--latent-noise s``, default 0: a deterministic autoencoder) plus 1e-4 x the
mean squared latent (keeps the latent scale bounded: a light KL stand-in). Adam with cosine decay.

After training, ``latents_mean`` / ``latents_std`` of the config are set to the per-channel statistics of the
posterior means of RGB and XYZ clips (encoded separately, as the encode step does), so VAE-normalised latents are
about zero-mean unit-variance for the DiT. Writes ``DIR/vae`` (orbax), ``DIR/configs/vae.json`` and
``DIR/vae_report.json`` (steps, loss, held-out reconstruction PSNR of RGB and XYZ; the ``heldout`` split when the
dataset has one).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from fourdnex_jax.convert.models import SPECS  # noqa: E402
from fourdnex_jax.convert.orbax_io import save_flat  # noqa: E402
from fourdnex_jax.data import tfds_builders  # noqa: E402
from fourdnex_jax.data.encode import condition_video  # noqa: E402
from fourdnex_jax.io_utils import Progress, atomic_save_json  # noqa: E402
from fourdnex_jax.models import params  # noqa: E402
from fourdnex_jax.models.vae import WanVAE, WanVAEConfig  # noqa: E402


def load_split(folder: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rgb in [-1, 1], xyz) float32 arrays (N, T, H, W, 3) of a clips6d split."""
    src = tfds_builders.data_source(folder, split)
    n = len(src) if limit is None else min(limit, len(src))
    recs = [src[i] for i in range(n)]
    rgb = np.stack([np.asarray(r["rgb"]) for r in recs]).astype(np.float32) / 127.5 - 1.0
    xyz = np.stack([np.asarray(r["xyz"], np.float32) for r in recs])
    return rgb, xyz


def psnr(a: np.ndarray, b: np.ndarray) -> float:  # on [-1, 1] data: peak-to-peak 2
    return float(10 * np.log10(4.0 / max(np.mean((a - b) ** 2), 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="clips6d dataset folder (.../clips6d/<config>/<version>)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="train on random (H, W) crops of the fused frames (multiples of 8; the VAE is convolutional)")
    ap.add_argument("--latent-noise", type=float, default=0.0, help="std of noise added to the latent mean")
    ap.add_argument("--init", default=None, help="start from this run's vae/ (a previous --out; its architecture)")
    ap.add_argument("--spatial-factor", type=int, choices=(4, 8), default=8,
                    help="8: Wan's dim_mult (1, 2, 4, 4); 4: dim_mult (1, 2, 4), one downsampling stage fewer "
                         "(the bundled tiny model: it trains far faster on a CPU)")
    ap.add_argument("--train-part", choices=("all", "decoder"), default="all",
                    help="decoder: train post_quant_conv + decoder only (the encoder, hence every latent already "
                         "encoded with it, stays valid; use with --init)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop early after this long (0: no limit)")
    args = ap.parse_args(argv)
    if (args.frames - 1) % 4:
        raise SystemExit("--frames must be 1 + 4k")
    t_start = time.perf_counter()
    rgb, xyz = load_split(args.data, "train")
    n, t_all = rgb.shape[:2]
    print(f"train_tiny_vae: {n} clips of {rgb.shape[1:]} from {args.data}", flush=True)
    stages = {8: {}, 4: {"dim_mult": (1, 2, 4), "temperal_downsample": (True, True)}}[args.spatial_factor]
    cfg = WanVAEConfig.tiny(latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16, **stages)
    if args.init:
        from fourdnex_jax.convert.restore import restore_model

        prev = restore_model(args.init, "vae")
        cfg = dataclasses.replace(prev.config, latents_mean=cfg.latents_mean, latents_std=cfg.latents_std)
    vae = WanVAE(cfg, rngs=nnx.Rngs(args.seed))
    if args.init:
        params.assign(vae, {p: v[...] for p, v in params.flat_variables(prev, nnx.Param).items()})
    sched = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(100, args.steps // 10), args.steps, args.lr * 0.05)
    trained = nnx.Param if args.train_part == "all" else nnx.All(
        nnx.Param, nnx.Any(nnx.PathContains("decoder"), nnx.PathContains("post_quant_conv")))
    opt = nnx.Optimizer(vae, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched)), wrt=trained)

    def loss_fn(model, video, eps):
        dist = model.encode(video, chunked=False)
        z = dist.mean + args.latent_noise * eps
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

    rng = np.random.default_rng(args.seed)
    f = args.frames
    ch, cw = args.crop if args.crop else (rgb.shape[2], 2 * rgb.shape[3])
    sf, tf = cfg.spatial_factor, cfg.temporal_factor
    if (f - 1) % tf or ch % sf or cw % sf:
        raise SystemExit(f"--frames must be 1 + {tf}k and --crop multiples of {sf} for this VAE")
    lat_shape = (args.batch, 1 + (f - 1) // tf, ch // sf, cw // sf, cfg.z_dim)
    bar = Progress(args.steps, "vae", every=25)
    hist = []
    step = 0
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, n, args.batch)
        s0 = rng.integers(0, t_all - f + 1, args.batch)
        clip_rgb = np.stack([rgb[i, s:s + f] for i, s in zip(idx, s0)])
        clip_xyz = np.stack([xyz[i, s:s + f] for i, s in zip(idx, s0)])
        if step % 4 == 0:  # the condition video the pipeline encodes
            video = condition_video(clip_rgb[:, 0], f)
        else:
            if rng.random() < 0.5:
                clip_rgb, clip_xyz = clip_rgb[:, :, :, ::-1], clip_xyz[:, :, :, ::-1] * np.array([-1, 1, 1], np.float32)
            video = np.concatenate([clip_rgb, clip_xyz], axis=3)
        if args.crop:
            ch, cw = args.crop
            y0 = int(rng.integers(0, video.shape[2] - ch + 1) // sf * sf)
            x0 = int(rng.integers(0, video.shape[3] - cw + 1) // sf * sf)
            video = video[:, :, y0:y0 + ch, x0:x0 + cw]
        eps = rng.standard_normal(lat_shape).astype(np.float32)
        loss, rec = train_step(vae, opt, jnp.asarray(video), jnp.asarray(eps))
        if step % 25 == 0 or step == 1:
            hist.append({"step": step, "loss": float(loss), "rec": float(rec)})
        bar.update(info=f"loss {float(loss):.4f}")
        if args.max_minutes and time.perf_counter() - t_start > args.max_minutes * 60:
            print(f"\ntrain_tiny_vae: time budget reached at step {step}", flush=True)
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
    report = {"steps": step, "train_part": args.train_part, "spatial_factor": cfg.spatial_factor, "init": args.init,
              "train_seconds": round(train_s, 1), "history": hist, "clips": n,
              "frames_per_example": f, "batch": args.batch, "lr": args.lr, "seed": args.seed,
              "latents_mean": list(cfg.latents_mean), "latents_std": list(cfg.latents_std)}
    try:
        h_rgb, h_xyz = load_split(args.data, "heldout", 16)
        split = "heldout"
    except Exception:  # noqa: BLE001 - no held-out split in this dataset
        h_rgb, h_xyz = rgb[-8:], xyz[-8:]
        split = "train (last 8)"
    rec = nnx.jit(lambda m, v: m.decode(m.encode(v).mean))
    fused = np.concatenate([np.asarray(rec(vae, jnp.asarray(np.concatenate([h_rgb[i:i + 4], h_xyz[i:i + 4]], 3))))
                            for i in range(0, len(h_rgb), 4)])
    w = h_rgb.shape[3]
    report["heldout_split"] = split
    report["heldout_psnr_rgb_db"] = psnr(fused[..., :w, :], h_rgb)
    report["heldout_psnr_xyz_db"] = psnr(fused[..., w:, :], h_xyz)
    report["heldout_xyz_mean_abs_err"] = float(np.mean(np.abs(fused[..., w:, :] - h_xyz)))
    out = Path(args.out)
    flat = {p: np.asarray(v[...]) for p, v in params.flat_variables(vae, nnx.Param).items()}
    if (out / "vae").exists():
        raise SystemExit(f"{out / 'vae'} exists")
    save_flat(out / "vae", flat)
    atomic_save_json(out / "configs" / "vae.json", SPECS["vae"].config_to_json(cfg, "float32"))
    atomic_save_json(out / "vae_report.json", report)
    print(f"train_tiny_vae: {step} steps in {train_s:.0f}s; held-out PSNR RGB {report['heldout_psnr_rgb_db']:.1f} dB, "
          f"XYZ {report['heldout_psnr_xyz_db']:.1f} dB (mean |err| {report['heldout_xyz_mean_abs_err']:.3f}) -> {out}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
