"""Turning a generated 6D video into files: ``rgb.mp4``, ``xyz.mp4``, ``pointmaps.npz``, ``summary.json``.

``pointmaps.npz``:
  * ``xyz`` float32 (T, H, W, 3): the generated pointmap in the first camera's frame, OpenCV axes (x right, y down,
    z forward), in the *normalised* units the model was trained on (``summary.json: xyz_normalization``):
    ``sequence`` -- one unknown global scale about the first camera (z > 0 in front of it); ``reference`` (4DNeX)
    -- additionally each frame re-centred on its bounding-box centre, which is not recoverable from the output.
  * ``rgb`` uint8 (T, H, W, 3); ``valid`` bool (T, H, W): finite, not saturated at the [-1, 1] clip of the VAE
    decode and, for ``sequence``, in front of the first camera.

Camera/depth recovery and 3D exports are the next step: :data:`POSTPROCESS_HOOKS` are called with the output
folder and the arrays after the files are written (none registered yet).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fourdnex_jax.data.media import write_video
from fourdnex_jax.io_utils import _atomic, atomic_save_json, atomic_save_npz

SATURATION = 0.999
#: ``hook(out_dir, arrays: dict, summary: dict) -> dict | None``; a returned dict is merged into the summary.
POSTPROCESS_HOOKS: list[Callable[[Path, dict[str, np.ndarray], dict[str, Any]], dict | None]] = []


def valid_mask(xyz: np.ndarray, normalization: str) -> np.ndarray:
    ok = np.isfinite(xyz).all(-1) & (np.abs(xyz) < SATURATION).all(-1)
    if normalization == "sequence":
        ok &= xyz[..., 2] > 0
    return ok


def xyz_to_uint8(xyz: np.ndarray) -> np.ndarray:
    """Visualisation of a normalised pointmap, as 4DNeX stores its XYZ videos: ``(xyz + 1) * 127.5``."""
    return np.clip(np.round((np.nan_to_num(xyz) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _even(frames: np.ndarray) -> np.ndarray:  # yuv420p needs even sizes
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames[:, :h, :w]


def write_video_atomic(path: Path, frames: np.ndarray, fps: int) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        write_video(tmp, _even(frames), fps=fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def geometry_hook(out: Path, arrays: dict[str, np.ndarray], summary: dict[str, Any]) -> dict[str, Any]:
    """Camera recovery, depth, PLY/GLB/viewer exports and a default novel-view video for one result
    (:func:`fourdnex_jax.geometry.scene.postprocess_scene`); register it in :data:`POSTPROCESS_HOOKS`."""
    from fourdnex_jax.geometry.scene import postprocess_scene

    del arrays
    report = postprocess_scene(out / "pointmaps.npz", out, normalization=summary["xyz_normalization"],
                               fps=summary.get("fps", 8))
    return {"cameras": "cameras.json", "geometry": report}


def write_result(out_dir: str | os.PathLike, rgb: np.ndarray, xyz: np.ndarray, summary: dict[str, Any], *,
                 normalization: str, fps: int = 8, input_image: np.ndarray | None = None) -> dict[str, Any]:
    """Writes the four outputs (each atomically; ``summary.json`` last) and returns the summary written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xyz = np.asarray(xyz, np.float32)
    valid = valid_mask(xyz, normalization)
    write_video_atomic(out / "rgb.mp4", rgb, fps)
    write_video_atomic(out / "xyz.mp4", xyz_to_uint8(xyz), fps)
    arrays = {"xyz": xyz, "rgb": np.asarray(rgb, np.uint8), "valid": valid}
    atomic_save_npz(out / "pointmaps.npz", **arrays)
    if input_image is not None:
        from PIL import Image
        import io

        buf = io.BytesIO()
        Image.fromarray(np.asarray(input_image, np.uint8)).save(buf, format="PNG")
        _atomic(out / "input.png", lambda f: f.write(buf.getvalue()))
    summary = dict(summary, xyz_normalization=normalization, valid_fraction=float(valid.mean()),
                   frames=int(xyz.shape[0]), height=int(xyz.shape[1]), width=int(xyz.shape[2]), fps=fps,
                   files=["rgb.mp4", "xyz.mp4", "pointmaps.npz", "summary.json"], cameras="not computed (next step)")
    for hook in POSTPROCESS_HOOKS:
        extra = hook(out, arrays, summary)
        if extra:
            summary.update(extra)
    atomic_save_json(out / "summary.json", summary)
    return summary
