"""Quality of a model bundle (or of its VAE alone) on held-out synthetic scenes against their exact ground truth.

The library behind ``fourdnex eval-quality`` (the command is a thin wrapper). For each held-out clip, the first RGB
frame and the clip's caption go through the image-to-4D pipeline (the same code as ``fourdnex generate``).
Candidates: the model; the slanted-plane prior the model is conditioned on (x, y ramps, z = -y, repeated over
time); the VAE's own reconstruction of the truth (how well a perfect DiT could do); the truth itself. Metrics
(valid ground-truth pixels only), per clip, by :func:`score`:

* first-frame depth: the predicted z of frame 0 against the true z-depth after a least-squares scale *and shift*
  (the pointmap normalisation re-centres each frame), AbsRel and delta<1.25;
* pointmap error: mean Euclidean distance to the true normalised pointmap per frame, no alignment;
* RGB PSNR of the frames, and of frame 0 against the input image;
* **what predicts 4D**: ``fg_reproj_px``, the median pixel distance between each floor/object pixel and where its
  predicted point lands through the TRUE camera of its frame (the prediction de-normalised with the true centres
  and scale; the sky is left out, it is exact in a good and a bad model alike: :func:`foreground_masks`); camera
  recovery (:func:`fourdnex_jax.geometry.metrics.camera_recovery`: every frame registered, rotation error per frame
  against the true cameras, focal error) and the clip verdict (one consistent 4D scene,
  :mod:`fourdnex_jax.geometry.consistency`).

:func:`summarize` pools them: means of the old columns, the count of consistent scenes and of scenes with every
frame registered, the median rotation error over frames 1..T-1 of all scenes pooled, the median focal error, the
median foreground reprojection error; :data:`TARGETS` (issue 22's model targets) and :data:`VAE_TARGETS` (its VAE
milestone) are compared by :func:`check_targets`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fourdnex_jax.geometry import metrics
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.numerics import psnr

#: What the shipped tiny model should reach on the 16 held-out scenes (``summary`` keys: (op, value)).
TARGETS = {"rgb_psnr_frame0": (">=", 24.0), "abs_rel": ("<=", 0.25), "scenes_consistent": (">=", 14),
           "rot_err_median_deg": ("<=", 3.0), "focal_rel_err_median": ("<=", 0.10)}
#: The VAE milestone before any DiT hour: its reconstruction of the held-out truth.
VAE_TARGETS = {"rgb_psnr": (">=", 26.0), "scenes_consistent": (">=", 15), "rot_err_median_deg": ("<=", 1.5)}
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def load_clips(clips_dir: str, split: str = "heldout", num: int = 16) -> list:
    """The first ``num`` clips (:class:`~fourdnex_jax.data.clip6d.Clip6D`) of a clips6d dataset split."""
    from fourdnex_jax.data import tfds_builders
    from fourdnex_jax.data.clip6d import Clip6D

    src = tfds_builders.data_source(clips_dir, split)
    return [Clip6D.from_example(src[i]) for i in range(min(num, len(src)))]


def foreground_masks(clips: Sequence, dome_radius: float) -> list[np.ndarray | None]:
    """(T, H, W) bool floor and object pixels of each synthetic clip, found by rendering its scene again from its id
    (``synth_<split>_<index>``) at ``dome_radius``; None where the render does not reproduce the clip's RGB (not a
    synthetic clip, or another dome radius): its foreground figures are then not reported."""
    from fourdnex_jax.data import synthetic

    out = []
    for c in clips:
        try:
            _, split, index = c.clip_id.rsplit("_", 2)
            r = synthetic.render(synthetic.make_scene(synthetic.split_seed(split, int(index))), *c.rgb.shape[:3],
                                 dome_radius=dome_radius)
        except ValueError:
            out.append(None)
            continue
        same = np.mean(np.abs(r["images"].astype(np.int16) - c.rgb.astype(np.int16)) <= 2) > 0.99
        out.append((r["object_id"] != -2) if same else None)
    return out


def score(clip, xyz: np.ndarray, rgb: np.ndarray | None, foreground: np.ndarray | None) -> dict[str, Any]:
    """The metrics of one candidate (module docstring): ``xyz`` (T, H, W, 3) normalised like the clip, ``rgb``
    (T, H, W, 3) in [0, 255] or None (then the clip verdict judges geometry alone), ``foreground`` (T, H, W) bool
    or None."""
    valid = clip.valid.astype(bool)
    gt = clip.xyz.astype(np.float32)
    m = metrics.depth_metrics(xyz[0, ..., 2][None], clip.metric_xyz()[0, ..., 2][None], valid[0][None],
                              mode="scale_shift")
    dist = np.linalg.norm(xyz - gt, axis=-1)
    err = np.array([dist[t][valid[t]].mean() for t in range(gt.shape[0])])
    row = {"clip": clip.clip_id, "abs_rel": m["abs_rel"], "delta1": m["delta_1_25"],
           "pointmap_err_mean": float(err.mean()), "pointmap_err_per_frame": err.tolist()}
    if rgb is not None:
        row["rgb_psnr"] = psnr(rgb, clip.rgb, peak=255.0)
        row["rgb_psnr_frame0"] = psnr(rgb[0], clip.rgb[0], peak=255.0)
    if foreground is not None:
        from fourdnex_jax.geometry.normalize import denormalize

        px = metrics.reprojection_error_px(denormalize(np.asarray(xyz, np.float64), clip.centers, clip.scale),
                                           clip.c2w, clip.intrinsics, valid & foreground)
        row["fg_reproj_px"] = float(np.median(px)) if len(px) else None
    row["cameras"] = metrics.camera_recovery(xyz, None, clip.normalization, clip.c2w,
                                             float(clip.intrinsics[0, 0, 0]), rgb=rgb)
    return row


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Pooled figures of one candidate's rows (module docstring)."""
    s = {k: float(np.mean([r[k] for r in rows])) for k in ("abs_rel", "delta1", "pointmap_err_mean")}
    s["pointmap_err_per_frame"] = np.mean([r["pointmap_err_per_frame"] for r in rows], 0).round(4).tolist()
    for k in ("rgb_psnr", "rgb_psnr_frame0"):
        if k in rows[0]:
            s[k] = float(np.mean([r[k] for r in rows]))
    fg = [r["fg_reproj_px"] for r in rows if r.get("fg_reproj_px") is not None]
    if fg:
        s["fg_reproj_px_median"] = float(np.median(fg))
    cams = [r["cameras"] for r in rows]
    s["scenes_consistent"] = int(sum(c["consistent"] for c in cams))
    s["scenes_all_registered"] = int(sum(c["all_registered"] for c in cams))
    s["rot_err_median_deg"] = float(np.median(np.concatenate([c["rot_err_deg"][1:] for c in cams])))
    s["focal_rel_err_median"] = float(np.median([c["focal_rel_err"] for c in cams]))
    return s


def check_targets(summary: dict[str, Any], targets: dict) -> dict[str, dict]:
    """``{key: {target, value, met}}`` of a candidate's summary against ``targets``."""
    return {k: {"target": f"{op} {v}", "value": summary[k], "met": bool(_OPS[op](summary[k], v))}
            for k, (op, v) in targets.items()}


def _vae_reconstruction(vae, clip) -> tuple[np.ndarray, np.ndarray]:
    """(xyz, rgb uint8) of the VAE's posterior-mean reconstruction of the clip's fused [RGB | XYZ] video."""
    import jax
    import jax.numpy as jnp

    w = clip.rgb.shape[2]
    fused = np.concatenate([clip.rgb.astype(np.float32) / 127.5 - 1.0, clip.xyz.astype(np.float32)], axis=2)[None]
    rec = np.asarray(jax.jit(lambda v: vae.decode(vae.encode(v).mean))(jnp.asarray(fused)))[0]
    return rec[:, :, w:], np.clip(np.round((rec[:, :, :w] / 2 + 0.5) * 255), 0, 255).astype(np.uint8)


def evaluate_vae(vae, clips: Sequence, dome_radius: float, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The VAE milestone: its reconstruction of each clip and the truth, scored; ``targets`` against
    :data:`VAE_TARGETS`."""
    fg = foreground_masks(clips, dome_radius)
    rows: dict[str, list] = {"vae_reconstruction": [], "ground_truth": []}
    for i, (c, f) in enumerate(zip(clips, fg)):
        xyz, rgb = _vae_reconstruction(vae, c)
        rows["vae_reconstruction"].append(score(c, xyz, rgb, f))
        rows["ground_truth"].append(score(c, c.xyz.astype(np.float32), c.rgb, f))
        log(f"eval: clip {i + 1}/{len(clips)}")
    summary = {k: summarize(v) for k, v in rows.items()}
    return {"summary": summary, "targets": check_targets(summary["vae_reconstruction"], VAE_TARGETS),
            "per_clip": rows}


def evaluate_bundle(bundle, settings, clips: Sequence, dome_radius: float, *, log: Callable[[str], None] = print
                    ) -> dict[str, Any]:
    """The model of ``bundle`` (:class:`~fourdnex_jax.pipelines.bundle.Bundle`) sampled with ``settings`` on each
    clip's first frame + caption, the plane prior, the VAE reconstruction and the truth, scored; ``targets``
    against :data:`TARGETS`; ``timings_s`` of the generation."""
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
    from fourdnex_jax.recipe import xyz_init_pointmap

    pipe = ImageTo4D.from_bundle(bundle, settings)
    t = settings.num_frames
    for c in clips:  # the clips must be at the size the pipeline samples them at
        if c.rgb.shape[:3] != (t, *pipe.sample_size(c.rgb[0])):
            raise InputError(f"clip {c.clip_id} is {c.rgb.shape[:3]}, the sampling settings want "
                             f"{(t, *pipe.sample_size(c.rgb[0]))}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    results = pipe([c.rgb[0] for c in clips], [c.caption for c in clips], timings=timings)
    log(f"eval: {len(clips)} scenes generated in {time.perf_counter() - t0:.0f}s")
    fg = foreground_masks(clips, dome_radius)
    plane = xyz_init_pointmap(*clips[0].rgb.shape[1:3])
    rows: dict[str, list] = {"model": [], "baseline_plane": [], "vae_reconstruction": [], "ground_truth": []}
    for i, (c, r, f) in enumerate(zip(clips, results, fg)):
        rec_xyz, rec_rgb = _vae_reconstruction(bundle.vae, c)
        cands = {"model": (r.xyz, r.rgb), "baseline_plane": (np.broadcast_to(plane, c.xyz.shape), None),
                 "vae_reconstruction": (rec_xyz, rec_rgb), "ground_truth": (c.xyz.astype(np.float32), c.rgb)}
        for name, (xyz, rgb) in cands.items():
            rows[name].append(score(c, xyz, rgb, f))
        log(f"eval: clip {i + 1}/{len(clips)} scored")
    summary = {k: summarize(v) for k, v in rows.items()}
    return {"summary": summary, "targets": check_targets(summary["model"], TARGETS), "per_clip": rows,
            "timings_s": timings}
