"""Quality of a model bundle on held-out synthetic scenes against their exact ground truth.

    python tools/eval_quality.py --clips CLIPS6D_DIR [--split heldout] [--num 16] [--checkpoint DIR]
        [--config configs/tiny.py] [--out report.json] [--set guidance_scale=1.0 ...]

For each held-out clip, the first RGB frame and the clip's caption go through the image-to-4D pipeline (the same
code as tools/generate.py). Metrics (valid ground-truth pixels only):
  * first-frame depth: the predicted z channel of frame 0 against the true z-depth, after a least-squares scale
    *and shift* fit per clip (the pointmap normalisation re-centres each frame, so z is depth up to scale and
    offset), AbsRel = mean |d - d*| / d* and delta<1.25 = fraction with max(d/d*, d*/d) < 1.25;
  * pointmap error over time: mean Euclidean distance between the predicted and the true normalised pointmap
    (the model's output space, [-1, 1]) per frame, no alignment;
  * RGB PSNR of the generated frames against the true frames.
The baseline is the slanted-plane prior the model is conditioned on (x, y ramps, z = -y), repeated over time.
The VAE's own reconstruction of the ground truth is reported as a reference (how well a perfect DiT could do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from fourdnex_jax.geometry import metrics  # noqa: E402


def first_frame_depth(pred_z: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """AbsRel / delta<1.25 of frame 0's z after one least-squares scale + shift fit (geometry.metrics)."""
    m = metrics.depth_metrics(pred_z[None], gt_depth[None], valid[None], mode="scale_shift")
    return {"abs_rel": m["abs_rel"], "delta1": m["delta_1_25"]}


def pointmap_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) mean Euclidean distance per frame over valid pixels."""
    dist = np.linalg.norm(pred - gt, axis=-1)
    return np.array([dist[t][valid[t]].mean() for t in range(gt.shape[0])])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", required=True)
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sampling setting (config.sample), e.g. --set guidance_scale=1.0 --set num_steps=10")
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from fourdnex_jax.config import load_config_file
    from fourdnex_jax.data import tfds_builders
    from fourdnex_jax.data.clip6d import Clip6D
    from fourdnex_jax.data.encode import xyz_init_pointmap
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D, SampleSettings, prepare_image

    t0 = time.perf_counter()
    config = load_config_file(args.config)
    for item in args.set:  # through the locked config: unknown keys and wrong types are rejected there
        key, sep, value = item.partition("=")
        if not sep or key not in config.sample:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(config.sample.keys())}")
        with config.unlocked():
            config.sample[key] = type(config.sample[key])(value)
    settings = SampleSettings.from_config(config.sample)
    bundle = bundle_lib.load_bundle(args.checkpoint or bundle_lib.DEFAULT_BUNDLE)
    src = tfds_builders.data_source(args.clips, args.split)
    clips = [Clip6D.from_example(src[i]) for i in range(min(args.num, len(src)))]
    t = settings.num_frames
    for c in clips:
        if c.rgb.shape[:3] != (t, settings.height, settings.width):
            raise SystemExit(f"clip {c.clip_id} is {c.rgb.shape[:3]}, the sampling config wants "
                             f"{(t, settings.height, settings.width)}")
    pipe = ImageTo4D.from_bundle(bundle, settings)
    timings: dict[str, float] = {}
    results = pipe([prepare_image(c.rgb[0], settings.height, settings.width) for c in clips],
                   [c.caption for c in clips], timings=timings)
    vae = bundle.vae
    recon = jax.jit(lambda v: vae.decode(vae.encode(v).mean))
    plane = xyz_init_pointmap(settings.height, settings.width)
    rows = {"model": [], "baseline_plane": [], "vae_reconstruction": []}
    for c, r in zip(clips, results):
        valid = c.valid.astype(bool)
        depth0 = c.metric_xyz()[0, ..., 2]  # first camera frame: z is the z-depth
        gt = c.xyz.astype(np.float32)
        fused = np.concatenate([c.rgb.astype(np.float32) / 127.5 - 1.0, gt], axis=2)[None]
        rec = np.asarray(recon(jnp.asarray(fused)))[0]
        w = settings.width
        cands = {"model": (r.xyz, r.rgb), "baseline_plane": (np.broadcast_to(plane, gt.shape), None),
                 "vae_reconstruction": (rec[:, :, w:], np.clip(np.round((rec[:, :, :w] / 2 + 0.5) * 255), 0, 255))}
        for name, (xyz, rgb) in cands.items():
            m = first_frame_depth(xyz[0, ..., 2], depth0, valid[0])
            err = pointmap_error(xyz, gt, valid)
            row = {"clip": c.clip_id, **m, "pointmap_err_mean": float(err.mean()), "pointmap_err_per_frame": err.tolist()}
            if rgb is not None:
                row["rgb_psnr"] = psnr(rgb, c.rgb)
            rows[name].append(row)
    summary = {}
    for name, rs in rows.items():
        s = {k: float(np.mean([r[k] for r in rs])) for k in ("abs_rel", "delta1", "pointmap_err_mean")}
        s["pointmap_err_per_frame"] = np.mean([r["pointmap_err_per_frame"] for r in rs], 0).round(4).tolist()
        if "rgb_psnr" in rs[0]:
            s["rgb_psnr"] = float(np.mean([r["rgb_psnr"] for r in rs]))
        summary[name] = s
    report = {"clips": args.clips, "split": args.split, "num_clips": len(clips), "checkpoint": str(bundle.directory),
              "settings": settings.to_dict(), "summary": summary, "per_clip": rows, "timings_s": timings,
              "total_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"num_clips": len(clips), **{k: {kk: (round(vv, 4) if isinstance(vv, float) else vv)
                                                          for kk, vv in v.items() if kk != "pointmap_err_per_frame"}
                                                     for k, v in summary.items()}}, indent=1))
    for k, v in summary.items():
        print(f"{k}: pointmap error per frame {v['pointmap_err_per_frame']}")
    if args.out:
        from fourdnex_jax.io_utils import atomic_save_json

        atomic_save_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
