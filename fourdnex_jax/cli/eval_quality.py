"""Quality of a model bundle on held-out synthetic scenes against their exact ground truth.

    fourdnex eval-quality --clips CLIPS6D_DIR [--split heldout] [--num 16] [--checkpoint DIR] [--config tiny]
        [--out report.json] [--config.sample.guidance_scale=1.0 ...]

For each held-out clip, the first RGB frame and the clip's caption go through the image-to-4D pipeline (the same
code as ``fourdnex generate``; ``--config.sample.KEY=VALUE`` overrides a sampling setting of the bundle's preset).
Metrics (valid ground-truth pixels only):
  * first-frame depth: the predicted z channel of frame 0 against the true z-depth, after a least-squares scale
    *and shift* fit per clip (the pointmap normalisation re-centres each frame, so z is depth up to scale and
    offset), AbsRel = mean |d - d*| / d* and delta<1.25 = fraction with max(d/d*, d*/d) < 1.25;
  * pointmap error over time: mean Euclidean distance between the predicted and the true normalised pointmap
    (the model's output space, [-1, 1]) per frame, no alignment;
  * RGB PSNR of the generated frames against the true frames, and of frame 0 against the input image;
  * camera recovery (:func:`fourdnex_jax.geometry.metrics.camera_recovery`): the registration of the pointmap
    video, whether every frame is registered, the rotation error per frame against the true cameras (both in the
    first camera's frame, no alignment) and the focal length's relative error.
The summary counts the scenes with every frame registered and gives the median rotation error over frames 1..T-1
of all scenes and the median focal error; ``targets`` compares the model's row with the targets of
:data:`TARGETS` (issue 16's).
The baseline is the slanted-plane prior the model is conditioned on (x, y ramps, z = -y), repeated over time.
The VAE's own reconstruction of the ground truth is reported as a reference (how well a perfect DiT could do).
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import flags
from ml_collections import config_flags

from fourdnex_jax.geometry import metrics
from fourdnex_jax.testing.numerics import psnr
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.resources import config_path, default_bundle

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("tiny")), "Experiment config (its sample "
                                         "section overrides the bundle's sampling preset).", lock_config=True)
_CLIPS = flags.DEFINE_string("clips", None, "clips6d dataset folder (.../clips6d/<config>/<version>).",
                             required=True)
_SPLIT = flags.DEFINE_string("split", "heldout", "Split of --clips to evaluate.")
_NUM = flags.DEFINE_integer("num", 16, "Clips to evaluate (the first N of the split).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model bundle folder (default: the shipped tiny bundle).")
_OUT = flags.DEFINE_string("out", None, "Write the full report (per clip, per frame) as JSON here.")


#: What the shipped tiny model should reach on the 16 held-out scenes (``summary.model`` keys: (op, value)).
TARGETS = {"rgb_psnr_frame0": (">=", 24.0), "abs_rel": ("<=", 0.25), "pointmap_err_mean": ("<=", 0.35),
           "scenes_all_registered": (">=", 14), "rot_err_median_deg": ("<=", 3.0), "focal_rel_err_median": ("<=", 0.10)}


def first_frame_depth(pred_z: np.ndarray, gt_depth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """AbsRel / delta<1.25 of frame 0's z after one least-squares scale + shift fit (geometry.metrics)."""
    m = metrics.depth_metrics(pred_z[None], gt_depth[None], valid[None], mode="scale_shift")
    return {"abs_rel": m["abs_rel"], "delta1": m["delta_1_25"]}


def pointmap_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) mean Euclidean distance per frame over valid pixels."""
    dist = np.linalg.norm(pred - gt, axis=-1)
    return np.array([dist[t][valid[t]].mean() for t in range(gt.shape[0])])


def main(argv) -> int:
    del argv
    import jax
    import jax.numpy as jnp

    from fourdnex_jax.data import tfds_builders
    from fourdnex_jax.geometry.metrics import camera_recovery
    from fourdnex_jax.data.clip6d import Clip6D
    from fourdnex_jax.recipe import xyz_init_pointmap
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
    from fourdnex_jax.pipelines.settings import SampleSettings

    t0 = time.perf_counter()
    config = CONFIG.value
    bundle = bundle_lib.load_bundle(_CHECKPOINT.value or default_bundle())
    settings = SampleSettings.from_config(config.sample, bundle.preset)  # preset + --config.sample overrides
    src = tfds_builders.data_source(_CLIPS.value, _SPLIT.value)
    clips = [Clip6D.from_example(src[i]) for i in range(min(_NUM.value, len(src)))]
    t = settings.num_frames
    pipe = ImageTo4D.from_bundle(bundle, settings)
    for c in clips:  # the clips must be at the size the pipeline samples them at
        if c.rgb.shape[:3] != (t, *pipe.sample_size(c.rgb[0])):
            raise InputError(f"clip {c.clip_id} is {c.rgb.shape[:3]}, the sampling settings want "
                             f"{(t, *pipe.sample_size(c.rgb[0]))}")
    height, width = clips[0].rgb.shape[1:3]
    timings: dict[str, float] = {}
    results = pipe([c.rgb[0] for c in clips], [c.caption for c in clips], timings=timings)
    vae = bundle.vae
    recon = jax.jit(lambda v: vae.decode(vae.encode(v).mean))
    plane = xyz_init_pointmap(height, width)
    rows = {"model": [], "baseline_plane": [], "vae_reconstruction": [], "ground_truth": []}
    for c, r in zip(clips, results):
        valid = c.valid.astype(bool)
        depth0 = c.metric_xyz()[0, ..., 2]  # first camera frame: z is the z-depth
        gt = c.xyz.astype(np.float32)
        fused = np.concatenate([c.rgb.astype(np.float32) / 127.5 - 1.0, gt], axis=2)[None]
        rec = np.asarray(recon(jnp.asarray(fused)))[0]
        w = width
        cands = {"model": (r.xyz, r.rgb), "baseline_plane": (np.broadcast_to(plane, gt.shape), None),
                 "vae_reconstruction": (rec[:, :, w:], np.clip(np.round((rec[:, :, :w] / 2 + 0.5) * 255), 0, 255)),
                 "ground_truth": (gt, None)}
        for name, (xyz, rgb) in cands.items():
            m = first_frame_depth(xyz[0, ..., 2], depth0, valid[0])
            err = pointmap_error(xyz, gt, valid)
            row = {"clip": c.clip_id, **m, "pointmap_err_mean": float(err.mean()),
                   "pointmap_err_per_frame": err.tolist()}
            if rgb is not None:
                row["rgb_psnr"] = psnr(rgb, c.rgb, peak=255.0)
                row["rgb_psnr_frame0"] = psnr(rgb[0], c.rgb[0], peak=255.0)
            row["cameras"] = camera_recovery(xyz, None, r.xyz_normalization, c.c2w, float(c.intrinsics[0, 0, 0]))
            rows[name].append(row)
    summary = {}
    for name, rs in rows.items():
        s = {k: float(np.mean([r[k] for r in rs])) for k in ("abs_rel", "delta1", "pointmap_err_mean")}
        s["pointmap_err_per_frame"] = np.mean([r["pointmap_err_per_frame"] for r in rs], 0).round(4).tolist()
        for k in ("rgb_psnr", "rgb_psnr_frame0"):
            if k in rs[0]:
                s[k] = float(np.mean([r[k] for r in rs]))
        cams = [r["cameras"] for r in rs]
        s["scenes_all_registered"] = int(sum(cm["all_registered"] for cm in cams))
        s["rot_err_median_deg"] = float(np.median(np.concatenate([cm["rot_err_deg"][1:] for cm in cams])))
        s["focal_rel_err_median"] = float(np.median([cm["focal_rel_err"] for cm in cams]))
        summary[name] = s
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}
    targets = {k: {"target": f"{op} {v}", "value": summary["model"][k], "met": bool(ops[op](summary["model"][k], v))}
               for k, (op, v) in TARGETS.items()}
    report = {"clips": _CLIPS.value, "split": _SPLIT.value, "num_clips": len(clips),
              "checkpoint": str(bundle.directory),
              "settings": settings.to_dict(), "summary": summary, "targets": targets, "per_clip": rows, "timings_s": timings,
              "total_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"num_clips": len(clips), **{k: {kk: (round(vv, 4) if isinstance(vv, float) else vv)
                                                          for kk, vv in v.items() if kk != "pointmap_err_per_frame"}
                                                     for k, v in summary.items()}}, indent=1))
    for k, v in summary.items():
        print(f"{k}: pointmap error per frame {v['pointmap_err_per_frame']}")
    met = [k for k, t in targets.items() if t["met"]]
    print(f"eval-quality: {len(clips)} scenes; targets met {len(met)}/{len(targets)}: "
          + ", ".join(f"{k} {t['value']:.3g} ({t['target']}{'' if t['met'] else ', missed'})"
                      for k, t in targets.items()))
    if _OUT.value:
        from fourdnex_jax.media.io import atomic_save_json

        atomic_save_json(_OUT.value, report)
    return 0

