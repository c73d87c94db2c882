"""Trains the tiny Wan VAE on synthetic 6D clips (:mod:`fourdnex_jax.training.vae`) and writes the run.

    fourdnex train-tiny-vae --data CLIPS6D_DATASET_DIR --out DIR [--steps 1500] [--batch 2] [--frames 5]
        [--crop HxW] [--lr 1e-3] [--seed 0] [--max-minutes 0] [--spatial-factor 8|4|2] [--init RUN]
        [--train-part all|decoder] [--checkpoint-minutes 10]

Resumable: the train state is checkpointed in ``DIR/train_state`` every ``--checkpoint-minutes``; the same command
run again continues from it (exactly; other settings are refused). ``--max-minutes`` is the training budget over
all resumes: the cosine schedule is planned to end inside it. Finally writes ``DIR/vae`` (orbax),
``DIR/configs/vae.json`` and ``DIR/vae_report.json`` (steps, loss, held-out
reconstruction PSNR of RGB and XYZ on [-1, 1] data, peak-to-peak 2; the ``heldout`` split when the dataset has one).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the tiny VAE is trained on the host CPU (docs/tiny_model.md)

from fourdnex_jax.training.vae import VAETrainSettings, save_vae_run, train_tiny_vae
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.numerics import psnr

_DATA = flags.DEFINE_string("data", None, "clips6d dataset folder (.../clips6d/<config>/<version>).", required=True)
_OUT = flags.DEFINE_string("out", None, "Run folder to write (vae/, configs/vae.json, vae_report.json).",
                           required=True)
_STEPS = flags.DEFINE_integer("steps", 1500, "Optimizer steps.")
_BATCH = flags.DEFINE_integer("batch", 2, "Clips per step.")
_FRAMES = flags.DEFINE_integer("frames", 5, "Frames per training clip (1 + 4k).")
_LR = flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
_SEED = flags.DEFINE_integer("seed", 0, "Initialisation and data-order seed.")
_CROP = flags.DEFINE_string("crop", None, "HxW: train on random crops of the fused frames (multiples of 8; the VAE "
                            "is convolutional).")
_NOISE = flags.DEFINE_float("latent-noise", 0.0, "Std of noise added to the latent mean.")
_INIT = flags.DEFINE_string("init", None, "Start from this run's vae/ (a previous --out; its architecture).")
_FACTOR = flags.DEFINE_enum("spatial-factor", "8", ["8", "4", "2"], "8: Wan's dim_mult (1, 2, 4, 4); 4: dim_mult "
                            "(1, 2, 4), one downsampling stage fewer; 2: dim_mult (1, 2), 2x spatial and 2x temporal "
                            "(fourdnex_jax.training.vae.STAGES).")
_PART = flags.DEFINE_enum("train-part", "all", ["all", "decoder"], "decoder: train post_quant_conv + decoder only "
                          "(the encoder, hence every latent already encoded with it, stays valid; use with --init).")
_MINUTES = flags.DEFINE_float("max-minutes", 0.0, "Training time budget in minutes over all resumes; the learning "
                              "rate's cosine is planned to end inside it (0: no limit, --steps steps).")
_CKPT_MINUTES = flags.DEFINE_float("checkpoint-minutes", 10.0, "Minutes between resumable checkpoints "
                                   "(DIR/train_state).")


def _crop(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--crop {text!r}: expected HxW, e.g. 64x192") from None
    return h, w


def main(argv) -> int:
    del argv
    settings = VAETrainSettings(steps=_STEPS.value, batch=_BATCH.value, frames=_FRAMES.value, lr=_LR.value,
                                seed=_SEED.value, crop=_crop(_CROP.value), latent_noise=_NOISE.value,
                                init=_INIT.value, spatial_factor=int(_FACTOR.value), train_part=_PART.value,
                                max_minutes=_MINUTES.value, checkpoint_minutes=_CKPT_MINUTES.value)
    out = Path(_OUT.value)
    if (out / "vae").exists():
        raise InputError(f"{out / 'vae'} exists: this run is finished; choose another --out")
    vae, report, held = train_tiny_vae(_DATA.value, settings, state_dir=out / "train_state",
                                       log=lambda m: print(m, flush=True))
    rec, w = held["reconstruction"], held["rgb"].shape[3]
    report["heldout_psnr_rgb_db"] = psnr(rec[..., :w, :], held["rgb"], peak=2.0)
    report["heldout_psnr_xyz_db"] = psnr(rec[..., w:, :], held["xyz"], peak=2.0)
    report["heldout_xyz_mean_abs_err"] = float(np.mean(np.abs(rec[..., w:, :] - held["xyz"])))
    out = save_vae_run(_OUT.value, vae, report)
    print(f"train-tiny-vae: {report['steps']} steps in {report['train_seconds']:.0f}s; held-out PSNR RGB "
          f"{report['heldout_psnr_rgb_db']:.1f} dB, XYZ {report['heldout_psnr_xyz_db']:.1f} dB (mean |err| "
          f"{report['heldout_xyz_mean_abs_err']:.3f}) -> {out}", flush=True)
    return 0
