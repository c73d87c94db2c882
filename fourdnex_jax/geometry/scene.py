"""One call from ``pointmaps.npz`` to usable 4D: registration, exports and a default novel-view video.

:func:`postprocess_scene` writes into ``out_dir``: ``cameras.json``, ``transforms.json`` (+ ``images/``),
``depth.npz`` (``depth``, ``valid``, ``residual``, ``inconsistent``, ``moving``, ``confidence``), ``ply/frame_*.ply``,
``scene.glb``, ``viewer.html`` and ``novel_<trajectory>.mp4``; returns a summary dict.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from fourdnex_jax.geometry import exports, register, render, trajectories
from fourdnex_jax.io_utils import _atomic, atomic_save_npz


def load_pointmaps(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        out = {k: z[k] for k in z.files}
    if "xyz" not in out:
        raise ValueError(f"{path}: no 'xyz' array")
    return out


def normalization_of(npz_path: str | Path, arrays: dict, default: str = "sequence") -> str:
    """'metric' if the file stores centers+scale, else ``summary.json: xyz_normalization`` next to it, else
    ``default``."""
    if "centers" in arrays and "scale" in arrays:
        return "metric"
    summ = Path(npz_path).with_name("summary.json")
    if summ.exists():
        try:
            norm = json.loads(summ.read_text()).get("xyz_normalization")
            if norm in register.NORMALIZATIONS:
                return norm
        except (OSError, ValueError):
            pass
    return default


def register_file(npz_path: str | Path, normalization: str | None = None, **kw) -> tuple[register.Registration, dict]:
    arrays = load_pointmaps(npz_path)
    norm = normalization or normalization_of(npz_path, arrays)
    centers = arrays.get("centers") if norm in ("metric", "reference") else None
    scale = float(arrays["scale"]) if centers is not None and "scale" in arrays else None
    reg = register.register(arrays["xyz"], arrays.get("valid"), normalization="reference" if norm == "reference"
                            else "sequence", centers=centers, scale=scale, **kw)
    return reg, arrays


def postprocess_scene(pointmaps_npz_path: str | Path, out_dir: str | Path, *, normalization: str | None = None,
                      trajectory: str = "orbit", video: bool = True, fps: int = 8, ply_stride: int = 1,
                      max_points_per_frame: int | None = 200_000, viewer_points_per_frame: int = 30_000,
                      drop_dynamic: bool = False, min_confidence: float = 0.0, write_images: bool = True,
                      splat: int = 2, **register_kw) -> dict:
    """Registration + exports + default novel-view video for one ``pointmaps.npz`` (see module docstring).
    ``drop_dynamic`` / ``min_confidence`` filter exported points (residual-based confidence in [0, 1])."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reg, arrays = register_file(pointmaps_npz_path, normalization, **register_kw)
    t, h, w = reg.depth.shape
    rgb = arrays.get("rgb")
    if rgb is None:  # colour by depth when no RGB is stored
        d = reg.depth / max(float(np.percentile(reg.depth[reg.valid], 99)), 1e-9) if reg.valid.any() else reg.depth
        rgb = (np.clip(1 - d, 0, 1)[..., None] * np.array([255, 200, 120])).astype(np.uint8)
    rgb = np.asarray(rgb, np.uint8)
    conf = reg.confidence
    keep = reg.valid & (conf >= min_confidence)
    if drop_dynamic:
        keep &= ~reg.dynamic
    image_paths = None
    if write_images:
        from PIL import Image

        image_paths = []
        for i in range(t):
            buf = io.BytesIO()
            Image.fromarray(rgb[i]).save(buf, format="PNG")
            name = f"images/frame_{i:05d}.png"
            _atomic(out / name, lambda f, b=buf.getvalue(): f.write(b))
            image_paths.append(name)
    exports.write_cameras(out, reg, (h, w), image_paths)
    atomic_save_npz(out / "depth.npz", depth=reg.depth, valid=reg.valid, residual=reg.residual,
                    inconsistent=reg.inconsistent, moving=reg.moving, confidence=conf,
                    K=reg.K, cam_to_world=reg.c2w)
    frames = [exports.select_points(reg.points_world[i], rgb[i], keep[i], ply_stride, max_points_per_frame, i)
              for i in range(t)]
    for i, (p, c) in enumerate(frames):
        exports.write_ply(out / "ply" / f"frame_{i:05d}.ply", p, c)
    glb = exports.glb_bytes(frames, reg.c2w, reg.K, (h, w), fps)
    _atomic(out / "scene.glb", lambda f: f.write(glb))
    pivot = float(np.median(reg.depth[0][reg.valid[0]])) if reg.valid[0].any() else 1.0
    light = [exports.select_points(reg.points_world[i], rgb[i], keep[i], 1, viewer_points_per_frame, i)
             for i in range(t)]
    html = exports.html_viewer(light, float(2 * np.arctan(h / 2 / reg.K[1, 1])), [0.0, 0.0, pivot], fps,
                               title=Path(out).name)
    _atomic(out / "viewer.html", lambda f: f.write(html.encode()))
    summary = {"frames": t, "height": h, "width": w, "normalization": reg.normalization,
               "focal_px": float(reg.K[0, 0]), "median_residual_px": float(np.median(
                   [s["median_residual_px"] for s in reg.frame_stats])),
               "inconsistent_fraction": float(reg.inconsistent[reg.valid].mean()) if reg.valid.any() else 0.0,
               "registration_s": reg.timings["total_s"],
               "files": ["cameras.json", "transforms.json", "depth.npz", "ply/", "scene.glb", "viewer.html"]}
    if video:
        c2w = trajectories.make_trajectory(trajectory, t, pivot)
        res = render.render_video(reg.points_world, rgb, keep, c2w, reg.K, h, w, splat=splat)
        name = f"novel_{trajectory}.mp4"
        render.write_mp4(out / name, res["frames"], fps)
        summary.update(render_fps=res["fps"], hole_fraction=res["hole_fraction"])
        summary["files"].append(name)
    return summary
