"""From a pointmap video in memory to usable 4D: registration, exports and a default novel-view video.

:func:`postprocess_scene` takes the arrays (``xyz`` (T, H, W, 3) in the first camera's frame, OpenCV axes, in the
units named by ``normalization``; ``valid`` (T, H, W) bool; ``rgb`` (T, H, W, 3) uint8) and writes into
``out_dir``: ``cameras.json``, ``transforms.json`` (when a camera is registered) + ``images/``, ``depth.npz``
(``depth``, ``valid``, ``residual``, ``inconsistent``, ``moving``, ``confidence``, ``K``, ``cam_to_world``,
``registered``), ``ply/frame_*.ply``, ``scene.glb``, ``viewer.html`` and ``novel_<trajectory>.mp4`` (unless nothing
is in view); it returns a summary dict whose ``message`` is the one console line about the cameras and whose
``transforms`` says whether transforms.json was written.

Honesty contract (:mod:`fourdnex_jax.geometry.status`): every frame is ``registered`` or ``rejected`` with its
reason and numbers (cameras.json, the summary); a rejected frame's camera is ``null`` in cameras.json, absent from
transforms.json (not written at all when no camera is registered) and the GLB, ``NaN`` in ``depth.npz:
cam_to_world``, and its depth is all invalid (``depth.npz: registered[t]`` False); rejected intrinsics are replaced
by a field-of-view prior, flagged as such.
The point clouds (PLY, GLB, viewer, novel-view video) are the pointmaps themselves in the first camera's frame, so
they never depend on a pose: a frame with valid points is never exported empty. ``drop_dynamic`` /
``min_confidence`` filter registered frames only (a rejected frame has no residuals to judge by).
:func:`postprocess_scene_file` is the same for a saved ``pointmaps.npz`` (the command-line tools), and
:func:`render_scene` renders another novel-view video of a folder it wrote.

``normalization`` (:data:`fourdnex_jax.geometry.register.NORMALIZATIONS`) is always given by the caller:
``sequence`` (one scale about camera 0), ``reference`` (4DNeX: each frame centred on its own bounding box) or
``metric`` (de-normalised with the true ``centers`` (T, 3) and ``scale``, which must then be given; ``reference``
uses them too when given).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fourdnex_jax.geometry import exports, register, render, se3, trajectories
from fourdnex_jax.media.io import (
    atomic_save_npz,
    atomic_write_bytes,
    load_npz_checked,
    read_image,
    rgb_to_uint8,
    write_png,
    write_video,
)
from fourdnex_jax.utils.errors import InputError

POINTMAP_ARRAYS = ("xyz", "valid", "rgb", "centers", "scale")


def load_pointmaps(path: str | Path, ignored: list[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a ``pointmaps.npz``, checked: ``xyz`` float (T, H, W, 3) required; optional ``valid`` bool
    (T, H, W), ``rgb`` (T, H, W, 3) uint8 or floats in [0, 1] (converted to uint8), ``centers`` (T, 3), ``scale``
    scalar. Other arrays next to ``xyz`` (the ground truth of ``examples/*_gt.npz``: ``depth``, ``c2w``,
    ``intrinsics``) are left out and their names appended to ``ignored`` (for the caller to say so). A file that is
    not an .npz, holds pickled objects, lacks ``xyz``, has other shapes, or has no finite valid point raises
    :class:`~fourdnex_jax.utils.errors.InputError` naming the file and the array."""
    arrays = load_npz_checked(path, "pointmaps")
    where = f"{path}"
    unknown = sorted(set(arrays) - set(POINTMAP_ARRAYS))
    if "xyz" in arrays and unknown:
        arrays = {k: v for k, v in arrays.items() if k in POINTMAP_ARRAYS}
        if ignored is not None:
            ignored.extend(unknown)
        unknown = []
    if "xyz" not in arrays or unknown:
        raise InputError(f"{where}: arrays {sorted(arrays)}; a pointmaps.npz holds 'xyz' (T, H, W, 3) and optionally "
                         f"{', '.join(repr(k) for k in POINTMAP_ARRAYS[1:])}"
                         + (f" (unknown: {unknown})" if unknown else " ('xyz' missing)"))
    xyz = arrays["xyz"]
    if xyz.ndim != 4 or xyz.shape[-1] != 3 or min(xyz.shape[:3]) < 1 or xyz.dtype.kind not in "fiu":
        raise InputError(f"{where}: 'xyz' is {xyz.shape} {xyz.dtype}; expected float (T, H, W, 3)")
    xyz = arrays["xyz"] = xyz.astype(np.float32)
    t, h, w = xyz.shape[:3]
    if "valid" in arrays:
        v = arrays["valid"]
        if v.shape != (t, h, w) or v.dtype.kind not in "biu":
            raise InputError(f"{where}: 'valid' is {v.shape} {v.dtype}; expected bool {(t, h, w)}")
        arrays["valid"] = v.astype(bool)
    if "rgb" in arrays:
        if arrays["rgb"].shape != (t, h, w, 3):
            raise InputError(f"{where}: 'rgb' is {arrays['rgb'].shape}; expected {(t, h, w, 3)} like 'xyz'")
        arrays["rgb"] = rgb_to_uint8(arrays["rgb"], f"{where}: 'rgb'")
    if "centers" in arrays and arrays["centers"].shape != (t, 3):
        raise InputError(f"{where}: 'centers' is {arrays['centers'].shape}; expected {(t, 3)}")
    if "scale" in arrays and (arrays["scale"].size != 1 or not np.isfinite(arrays["scale"]).all()):
        raise InputError(f"{where}: 'scale' must be one finite number, got shape {arrays['scale'].shape}")
    usable = np.isfinite(xyz).all(-1) & (arrays["valid"] if "valid" in arrays else True)
    if not usable.any():
        raise InputError(f"{where}: no usable point (every xyz is NaN/inf or marked invalid); nothing to register")
    return arrays


def register_pointmaps(xyz: np.ndarray, valid: np.ndarray | None, normalization: str, *,
                       centers: np.ndarray | None = None, scale: float | None = None,
                       **register_kw) -> register.Registration:
    """:func:`register.register` of one pointmap video under the caller's ``normalization`` (module docstring);
    ``centers`` / ``scale`` are used for ``metric`` (required) and ``reference`` (optional) only."""
    if normalization not in register.NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {register.NORMALIZATIONS}, got {normalization!r}")
    if normalization == "sequence" or centers is None or scale is None:
        if normalization == "metric":
            raise ValueError("normalization='metric' needs the true centers and scale")
        centers = scale = None
    return register.register(xyz, valid, normalization="reference" if normalization == "reference" else "sequence",
                             centers=centers, scale=None if scale is None else float(scale), **register_kw)


def postprocess_scene(xyz: np.ndarray, valid: np.ndarray | None, rgb: np.ndarray | None, normalization: str,
                      out_dir: str | Path, *, centers: np.ndarray | None = None, scale: float | None = None,
                      trajectory: str = "orbit", video: bool = True, fps: int = 8, ply_stride: int = 1,
                      max_points_per_frame: int | None = 200_000, viewer_points_per_frame: int = 30_000,
                      drop_dynamic: bool = False, min_confidence: float = 0.0, write_images: bool = True,
                      splat: int = 2, registration: register.Registration | None = None, **register_kw) -> dict:
    """Registration + exports + default novel-view video of one pointmap video (see module docstring).
    ``rgb=None`` colours the points by depth. ``drop_dynamic`` / ``min_confidence`` filter exported points
    (residual-based confidence in [0, 1]); the other keywords go to :func:`register.register`. Returns the
    summary (strict-JSON-ready): ``status`` / ``message`` / ``frames_registered`` / ``intrinsics`` /
    ``per_frame`` (:meth:`status.CameraStatus.to_dict`), ``scene_4d`` (the clip verdict,
    :meth:`consistency.ClipVerdict.to_dict`: ``consistent``, ``reason``, ``message``, per frame pair) plus figures of
    the exports. ``registration``: the :func:`register_pointmaps` result of these same arrays (``rgb`` included),
    already computed by the caller (not computed again)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if registration is not None and register_kw:
        raise ValueError(f"registration= is already computed; {sorted(register_kw)} cannot change it")
    reg = registration if registration is not None else register_pointmaps(xyz, valid, normalization,
                                                                           centers=centers, scale=scale, rgb=rgb,
                                                                           **register_kw)
    st = reg.status
    t, h, w = reg.depth.shape
    reg_t = st.registered[:, None, None]
    if rgb is None:  # colour by the pointmap's own z (no camera needed)
        z = reg.points_world[..., 2]
        zv = z[reg.point_valid]
        lo, hi = (float(np.percentile(zv, 1)), float(np.percentile(zv, 99))) if len(zv) else (0.0, 1.0)
        d = (z - lo) / max(hi - lo, 1e-9)
        rgb = (np.clip(1 - d, 0, 1)[..., None] * np.array([255, 200, 120])).astype(np.uint8)
    rgb = rgb_to_uint8(rgb, "rgb")  # floats in [0, 1] scaled, never cast to near-black
    conf = reg.confidence
    judged = reg.point_valid & (conf >= min_confidence)
    if drop_dynamic:
        judged &= ~reg.dynamic
    keep = np.where(reg_t, judged, reg.point_valid)  # module docstring: rejected frames keep their points
    image_paths = None
    if write_images:
        image_paths = [f"images/frame_{i:05d}.png" for i in range(t)]
        for i, name in enumerate(image_paths):
            write_png(out / name, rgb[i])
    transforms_note = exports.write_cameras(out, reg, (h, w), image_paths)
    depth_ok = reg.valid & reg_t
    c2w_out = np.where(st.registered[:, None, None], reg.c2w, np.nan)
    atomic_save_npz(out / "depth.npz", depth=np.where(depth_ok, reg.depth, 0.0).astype(np.float32),
                    valid=depth_ok, residual=reg.residual, inconsistent=reg.inconsistent & reg_t,
                    moving=reg.moving & reg_t, confidence=np.where(reg_t, conf, 0.0).astype(np.float32),
                    K=st.K, cam_to_world=c2w_out, registered=st.registered)
    frames = [exports.select_points(reg.points_world[i], rgb[i], keep[i], ply_stride, max_points_per_frame, i)
              for i in range(t)]
    for i, (p, c) in enumerate(frames):
        exports.write_ply(out / "ply" / f"frame_{i:05d}.ply", p, c)
    verdict = st.to_dict(reg.frame_stats)
    notes = [None if ok else ("intrinsics rejected (see below)" if st.intrinsics_source == "fov_prior" else r)
             for ok, r in zip(st.registered, st.reasons)]
    glb_extras = {"camera_status": {"state": verdict["state"], "message": verdict["message"],
                                    "intrinsics_source": st.intrinsics_source,
                                    "rejected_frames": [i for i in range(t) if not st.registered[i]]}}
    atomic_write_bytes(out / "scene.glb", exports.glb_bytes(frames, reg.c2w, st.K, (h, w), fps,
                                                            registered=st.registered, extras=glb_extras))
    pivot, look = start_view(reg)
    light = [exports.select_points(reg.points_world[i], rgb[i], keep[i], 1, viewer_points_per_frame, i)
             for i in range(t)]
    html = exports.html_viewer(light, float(2 * np.arctan(h / 2 / st.K[1, 1])), fps, title=out.name, notes=notes,
                               cameras=verdict["message"])
    atomic_write_bytes(out / "viewer.html", html.encode())
    used = reg.valid & reg_t
    meds = [s["median_residual_px"] for s, ok in zip(verdict["per_frame"], st.registered) if ok]
    summary = dict(verdict, scene_4d=reg.clip.to_dict(), height=h, width=w, normalization=reg.normalization,
                   focal_px=float(st.K[0, 0]) if st.intrinsics_source == "estimated" else None,
                   median_residual_px=float(np.median(meds)) if meds else None,
                   inconsistent_fraction=float(reg.inconsistent[used].mean()) if used.any() else None,
                   points_per_frame=[len(p) for p, _ in frames], registration_s=reg.timings["total_s"],
                   transforms=transforms_note,
                   files=["cameras.json"] + (["transforms.json"] if (out / "transforms.json").exists() else [])
                   + (["images/"] if write_images else []) + ["depth.npz", "ply/", "scene.glb", "viewer.html"])
    if video:  # the pointmaps seen along a trajectory around camera 0 (no recovered pose is needed)
        c2w = trajectories.make_trajectory(trajectory, t, pivot)
        c2w[:, :3, 3] += look
        res = render.render_video(reg.points_world, rgb, keep, c2w, st.K, h, w, splat=splat)
        name = f"novel_{trajectory}.mp4"
        summary.update(render_fps=res["fps"], hole_fraction=res["hole_fraction"],
                       novel_view_intrinsics=st.intrinsics_source)
        if res["hole_fraction"] > EMPTY_VIEW:  # an all-background video is no result
            summary["novel_view"] = f"{name} not written: nothing of the scene in view along '{trajectory}'"
        else:
            write_video(out / name, res["frames"], fps)
            summary["files"].append(name)
    return summary


def start_view(reg: register.Registration) -> tuple[float, np.ndarray]:
    """(pivot distance, offset of the start camera) of a novel-view trajectory around a registration's points: camera
    0 looking at frame 0's median depth when frame 0 is a camera-frame map; else (rejected intrinsics) a camera
    placed in front of frame 0's cloud (its median, 98 % radius) so that the cloud fills the view."""
    st = reg.status
    h = reg.depth.shape[1]
    p0 = reg.points_world[0][reg.point_valid[0]]
    if st.intrinsics_source == "estimated" and len(p0) and np.median(p0[:, 2]) > 0:
        return float(np.median(p0[:, 2])), np.zeros(3)
    if len(p0):
        centre = np.median(p0, 0)
        radius = float(np.percentile(np.linalg.norm(p0 - centre, axis=-1), 98))
        pivot = max(radius / np.tan(np.arctan(h / 2 / st.K[1, 1])) * 1.1, 1e-6)
        return pivot, centre - np.array([0.0, 0.0, pivot])
    return 1.0, np.zeros(3)


#: Rendered videos with more than this fraction of empty pixels are refused (nothing of the scene in view).
EMPTY_VIEW = 0.999


def postprocess_scene_file(pointmaps_npz_path: str | Path, out_dir: str | Path, *, normalization: str,
                           **kw) -> dict:
    """:func:`postprocess_scene` of a saved ``pointmaps.npz`` (``xyz``, optional ``valid``, ``rgb``, and
    ``centers`` + ``scale`` for ``metric`` / ``reference``)."""
    arrays = load_pointmaps(pointmaps_npz_path)
    return postprocess_scene(arrays["xyz"], arrays.get("valid"), arrays.get("rgb"), normalization, out_dir,
                             centers=arrays.get("centers"), scale=arrays.get("scale"), **kw)


def load_scene(scene_dir: str | Path, pointmaps: str | Path | None = None) -> dict[str, np.ndarray]:
    """A folder written by :func:`postprocess_scene`, read back: ``points`` (T, H, W, 3) float32 world points (each
    frame's de-projected depth placed by its recovered camera), ``rgb`` (T, H, W, 3) uint8, ``valid`` (T, H, W)
    (all False on a frame whose camera was rejected: it has no depth),
    ``K`` (3, 3), ``depth`` (T, H, W). Colours come from the ``rgb`` of ``pointmaps`` (default: ``pointmaps.npz``
    in the folder or next to it), else from ``images/``, else a flat grey."""
    scene_dir = Path(scene_dir)
    cams = json.loads((scene_dir / "cameras.json").read_text())
    with np.load(scene_dir / "depth.npz") as z:
        depth, valid = z["depth"], z["valid"]
    K = np.asarray(cams["K"])
    # a rejected frame's camera is null and its depth all invalid: any placeholder pose leaves it without points
    c2w = np.stack([np.eye(4) if c is None else np.asarray(c, np.float64) for c in cams["cam_to_world"]])
    pts = se3.transform_points(c2w, se3.backproject(depth, K))
    rgb = None
    for cand in ([Path(pointmaps)] if pointmaps else []) + [scene_dir / "pointmaps.npz",
                                                             scene_dir.parent / "pointmaps.npz"]:
        if cand.exists():
            with np.load(cand) as z:
                if "rgb" in z.files:
                    rgb = z["rgb"]
                    break
    if rgb is None and (scene_dir / "images").is_dir():
        rgb = np.stack([read_image(p) for p in sorted((scene_dir / "images").glob("*.png"))])
    if rgb is None:
        rgb = np.full(depth.shape + (3,), 200, np.uint8)
    return {"points": pts.astype(np.float32), "rgb": rgb, "valid": valid, "K": K, "depth": depth}


def _find_pointmaps(scene_dir: Path, pointmaps: str | Path | None) -> Path | None:
    for cand in ([Path(pointmaps)] if pointmaps else []) + [scene_dir / "pointmaps.npz",
                                                             scene_dir.parent / "pointmaps.npz"]:
        if cand.is_file():
            return cand
    return None


def render_scene(scene_dir: str | Path, out_path: str | Path, *, trajectory: str = "orbit",
                 frames: int | None = None, size: tuple[int, int] | None = None, splat: int = 2, fps: int = 8,
                 hole_color: tuple[int, int, int] = (0, 0, 0), pointmaps: str | Path | None = None) -> dict:
    """A novel-view mp4 of a folder written by :func:`postprocess_scene` along ``trajectory`` (a kind of
    :data:`trajectories.KINDS` with ``frames`` frames (default T), or a JSON file of world = camera 0 OpenCV
    ``cam_to_world``, :func:`trajectories.load_trajectory`), at ``size`` (H, W) (default: the scene's; K rescaled,
    pixel centres at integers). The points are those the folder's exports show: the pointmaps themselves
    (``pointmaps``, default ``pointmaps.npz`` in the folder or next to it; registered again under the folder's
    normalization, so they never depend on a recovered pose) and a generated trajectory starts where
    :func:`postprocess_scene`'s novel view starts (:func:`start_view`). Without a pointmaps file, the folder's
    depth placed by its registered cameras (:func:`load_scene`). A video with nothing of the scene in view (hole
    fraction above :data:`EMPTY_VIEW`) is not written: ValueError saying why. Returns the report printed by
    ``fourdnex render`` (frames, size, splatting fps, first-frame seconds, hole fraction)."""
    scene_dir = Path(scene_dir)
    found = _find_pointmaps(scene_dir, pointmaps)
    look = np.zeros(3)
    if found is not None:
        cams = json.loads((scene_dir / "cameras.json").read_text())
        arrays = load_pointmaps(found)
        reg = register_pointmaps(arrays["xyz"], arrays.get("valid"), cams.get("normalization", "sequence"),
                                 centers=arrays.get("centers"), scale=arrays.get("scale"))
        points, valid, K = reg.points_world, reg.point_valid, np.asarray(reg.status.K)
        rgb = arrays.get("rgb")
        if rgb is None:
            rgb = load_scene(scene_dir, found)["rgb"]
        pivot, look = start_view(reg)
        source = f"the pointmaps of {found}"
    else:
        sc = load_scene(scene_dir)
        points, valid, K, rgb = sc["points"], sc["valid"], sc["K"], sc["rgb"]
        pivot = float(np.median(sc["depth"][0][valid[0]])) if valid[0].any() else 1.0
        source = f"the depth of the registered cameras of {scene_dir} (no pointmaps.npz found: --pointmaps)"
    t, h, w = valid.shape
    oh, ow = size if size else (h, w)
    Ko = K.copy()
    Ko[0] *= ow / w
    Ko[1] *= oh / h
    Ko[0, 2] = (K[0, 2] + 0.5) * ow / w - 0.5
    Ko[1, 2] = (K[1, 2] + 0.5) * oh / h - 0.5
    if str(trajectory).endswith(".json"):
        c2w, kf = trajectories.load_trajectory(trajectory)
        Ko = kf if kf is not None else Ko
    else:
        c2w = trajectories.make_trajectory(trajectory, frames or t, pivot)
        c2w[:, :3, 3] += look
    res = render.render_video(points, rgb, valid, c2w, Ko, oh, ow, splat=splat, hole_color=hole_color)
    if res["hole_fraction"] > EMPTY_VIEW:
        raise ValueError(f"trajectory {trajectory}: nothing of the scene is in view (hole fraction "
                         f"{res['hole_fraction']:.4f}; points from {source}); no video written"
                         + ("" if valid.any() else ": the scene has no point to render"))
    write_video(out_path, res["frames"], fps)
    return {"out": str(out_path), "frames": len(c2w), "size": [oh, ow], "fps": round(res["fps"], 2),
            "first_frame_s": round(res["first_frame_s"], 3), "hole_fraction": round(res["hole_fraction"], 4),
            "points_from": "pointmaps" if found is not None else "depth of the registered cameras"}
