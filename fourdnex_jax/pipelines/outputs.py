"""Saving one generated 6D result: ``rgb.mp4``, ``xyz.mp4``, ``pointmaps.npz``, ``input.png``, ``summary.json``,
and, when asked, the geometry (cameras, depth, exports, a novel-view video) computed from the arrays in memory.

``pointmaps.npz``:
  * ``xyz`` float32 (T, H, W, 3): the generated pointmap in the first camera's frame, OpenCV axes (x right, y down,
    z forward), in the *normalised* units the model was trained on (``summary.json: xyz_normalization``):
    ``sequence`` -- one unknown global scale about the first camera (z > 0 in front of it); ``reference`` (4DNeX)
    -- additionally each frame re-centred on its bounding-box centre, which is not recoverable from the output.
  * ``rgb`` uint8 (T, H, W, 3); ``valid`` bool (T, H, W) (:func:`valid_mask`).

With ``official=True`` :func:`save_result` also writes the official 4DNeX layout (``inference.py: save_pointmap`` of
3DTopia/4DNeX), from the decoded canvas ``video`` (T, H, 2W, 3) in [-1, 1]:

* ``official_canvas.mp4``: the [RGB | XYZ] canvas, ``canvas = video / 2 + 0.5`` then
  ``(canvas * 255).clip(0, 255).astype(uint8)`` (truncation, as the official code; ``rgb.mp4`` rounds) at
  :data:`OFFICIAL_FPS` (24) whatever ``fps`` is;
* ``official_pointmap.npz`` (never a pickle; the official ``.pkl`` pickles a ``Pointmap``): its fields that hold
  data, float32 in [0, 1]: ``pcd`` (T, H * W, 3) = the XYZ half of ``canvas`` (so ``xyz = 2 pcd - 1``),
  ``rgb`` (T, H, W, 3) = the RGB half clipped to [0, 1], ``colors`` (T, H * W, 3) = ``rgb`` flattened. The official
  ``mask`` / ``cams2world`` / ``K`` / ``depth`` are placeholders there (``init_dummy``) and are not written.

With ``geometry=True`` :func:`save_result` also writes what
:func:`fourdnex_jax.geometry.scene.postprocess_scene` writes (``cameras.json``, ``depth.npz``, PLY/GLB/viewer,
``novel_orbit.mp4``) into the same folder, and ``summary.json: geometry`` holds its report: ``status``
(``registered`` / ``partial`` / ``failed``), ``message`` (the one line a tool prints, e.g. ``cameras: 9/9 frames,
focal 74.0 px``), ``frames_registered``, ``intrinsics`` (estimate or field-of-view prior) and ``per_frame`` (status,
reason, inlier ratio, median residual px, ...); a library call writes cameras only when asked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fourdnex_jax.geometry.scene import postprocess_scene
from fourdnex_jax.media.io import atomic_save_json, atomic_save_npz, write_png, write_video
from fourdnex_jax.media.publish import publish_dir

SATURATION = 0.999
#: Frame rate of the official 4DNeX canvas video (``imageio.mimwrite(..., fps=24)``).
OFFICIAL_FPS = 24
#: The files ``official=True`` adds.
OFFICIAL_FILES = ("official_canvas.mp4", "official_pointmap.npz")


def valid_mask(xyz: np.ndarray, normalization: str) -> np.ndarray:
    """(T, H, W) bool of a decoded pointmap (T, H, W, 3): finite, not saturated at the [-1, 1] clip of the VAE
    decode (``|x| < 0.999`` on every axis) and, for ``sequence``, in front of the first camera (z > 0)."""
    ok = np.isfinite(xyz).all(-1) & (np.abs(xyz) < SATURATION).all(-1)
    if normalization == "sequence":
        ok &= xyz[..., 2] > 0
    return ok


def xyz_to_uint8(xyz: np.ndarray) -> np.ndarray:
    """Visualisation of a normalised pointmap, as 4DNeX stores its XYZ videos: ``(xyz + 1) * 127.5``."""
    return np.clip(np.round((np.nan_to_num(xyz) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def official_layout(video: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The official outputs of one decoded canvas ``video`` (T, H, 2W, 3) float in [-1, 1] (module docstring):
    the canvas frames (T, H, 2W, 3) uint8 (truncated) and the pointmap arrays ``pcd`` / ``colors`` / ``rgb``."""
    canvas = np.asarray(video, np.float32) / 2 + 0.5  # tokenizer.decode: decoded / 2 + 0.5, float32
    frames = (canvas * 255).clip(0, 255).astype(np.uint8)  # save_pointmap: truncation, not rounding
    t, h, w2, _ = canvas.shape
    rgb = canvas[:, :, : w2 // 2].clip(0, 1)
    pcd = np.ascontiguousarray(canvas[:, :, w2 // 2:]).reshape(t, h * (w2 // 2), 3)
    return frames, {"pcd": pcd, "colors": rgb.reshape(t, -1, 3), "rgb": np.ascontiguousarray(rgb)}


def save_result(result: Any, out_dir: str | os.PathLike, *, geometry: bool, summary: dict[str, Any] | None = None,
                fps: int = 8, overwrite: bool = False, registration: Any = None, official: bool = False,
                inputs: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Writes one result into ``out_dir`` and returns the summary written: the caller's ``summary`` plus what the
    result knows and the files written. The folder is published as a unit
    (:func:`fourdnex_jax.media.publish.publish_dir`: written into a hidden temporary sibling, marked as ours, then
    renamed), so a kill leaves the previous complete result or none, never a mix; a folder that already holds a
    result is kept (:class:`~fourdnex_jax.utils.errors.OutputExistsError`) unless ``overwrite``, which replaces only
    a folder fourdnex wrote and keeps the user's other files in it; a folder holding one of ``inputs`` is refused.

    ``result`` is one pipeline output: ``rgb`` (T, H, W, 3) uint8, ``xyz`` (T, H, W, 3) float32, ``image``
    (H, W, 3) uint8 (written as ``input.png``), ``prompt``, ``seed``, ``xyz_normalization``; ``valid`` (T, H, W)
    bool and ``sizing`` (a dict) when it has them (``valid`` is :func:`valid_mask` otherwise). ``geometry``:
    also run :func:`~fourdnex_jax.geometry.scene.postprocess_scene` on the arrays (module docstring), reusing
    ``registration`` (the result's registration, when the caller already computed it); ``official``: also write the
    official 4DNeX layout from ``result.video`` (module docstring)."""
    if official and getattr(result, "video", None) is None:
        raise ValueError("official=True needs the decoded canvas (result.video, (T, H, 2W, 3) in [-1, 1])")
    with publish_dir(out_dir, overwrite, writer="generate", inputs=inputs) as tmp:
        return _write_result(result, tmp, geometry=geometry, summary=summary, fps=fps, registration=registration,
                             official=official)


def _write_result(result: Any, out: Path, *, geometry: bool, summary: dict[str, Any] | None, fps: int,
                  registration: Any = None, official: bool = False) -> dict[str, Any]:
    normalization = result.xyz_normalization
    xyz = np.asarray(result.xyz, np.float32)
    rgb = np.asarray(result.rgb, np.uint8)
    valid = getattr(result, "valid", None)
    valid = valid_mask(xyz, normalization) if valid is None else np.asarray(valid, bool)
    write_video(out / "rgb.mp4", rgb, fps)
    write_video(out / "xyz.mp4", xyz_to_uint8(xyz), fps)
    atomic_save_npz(out / "pointmaps.npz", xyz=xyz, rgb=rgb, valid=valid)
    write_png(out / "input.png", np.asarray(result.image, np.uint8))
    summary = dict(summary or {}, prompt=result.prompt, seed=result.seed, xyz_normalization=normalization,
                   valid_fraction=float(valid.mean()), frames=int(xyz.shape[0]), height=int(xyz.shape[1]),
                   width=int(xyz.shape[2]), fps=fps,
                   files=["rgb.mp4", "xyz.mp4", "pointmaps.npz", "input.png", "summary.json"])
    if official:
        frames, arrays = official_layout(result.video)
        write_video(out / OFFICIAL_FILES[0], frames, OFFICIAL_FPS)
        atomic_save_npz(out / OFFICIAL_FILES[1], **arrays)
        summary["files"] += list(OFFICIAL_FILES)
        summary["official_outputs"] = {
            "layout": "3DTopia/4DNeX inference.py save_pointmap (mode xyzrgb)", "fps": OFFICIAL_FPS,
            "canvas": "[RGB | XYZ], uint8 = trunc(255 * (video / 2 + 0.5)) clipped to [0, 255]",
            "pointmap": "pcd (T, H*W, 3) in [0, 1], xyz = 2 * pcd - 1; rgb (T, H, W, 3) and colors (T, H*W, 3) "
                        "in [0, 1]; float32"}
    if getattr(result, "sizing", None) is not None:
        summary["sizing"] = result.sizing
    if geometry:
        report = postprocess_scene(xyz, valid, rgb, normalization, out, fps=fps, registration=registration)
        summary.update(cameras="cameras.json", geometry=report)
    else:
        summary["cameras"] = "not computed (save_result(..., geometry=False))"
    atomic_save_json(out / "summary.json", summary)
    return summary
