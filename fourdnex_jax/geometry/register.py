"""Cameras, depth and a per-pixel inconsistency mask from a pointmap video, in closed form (NumPy, CPU).

Input: ``xyz`` (T, H, W, 3) in the first camera's frame (OpenCV axes), optionally ``valid`` (T, H, W).
``normalization`` says how it was produced (see :mod:`fourdnex_jax.geometry.normalize`):

* ``sequence`` (ours, or DUSt3R/VGGT-style, also ``metric``): one scale about camera 0, no shift. Frame 0 is a
  true camera-frame map: K follows from two robust line fits (:func:`fit_intrinsics_camera_frame`),
  camera 0 is the identity.
* ``reference`` (4DNeX ``build_wan_dataset.py``): every frame centred on its own bounding-box centre ``c_t``.
  Frame 0 then is ``K [I | c_0 / s]``: a full DLT + RQ recovers K and the offset exactly. The offsets of later
  frames are not stored by the model output, so each recovered camera centre is off by ``-(c_t - c_0) / s``;
  ``anchor='icp'`` (opt-in) estimates these offsets by translation-only trimmed ICP of each frame's consistent
  points against the previous frame (assumes mostly static, overlapping, non-planar content; on the synthetic
  floor-dominated scenes it only reduces the error by 5-20%); the default ``'none'`` leaves them.
  When the true ``centers`` and ``scale`` are given (``normalization='metric'`` in :mod:`scene`) the maps are
  de-normalised first and everything is exact.

Poses: frames 1..T-1 in ONE vectorised pass (:func:`pose.robust_pose_batch`: P3P hypotheses scored by LMedS,
a calibrated-DLT refit on the winner's inliers, robust Tukey Gauss-Newton) from the dense pairs (pixel (u, v) <->
X_t(u, v)) on a sample grid; a frame whose neighbour's pose fits it better is re-solved with that pose as an
extra hypothesis (:func:`_neighbour_fallback`). Then, densely and for all frames at once, depth = z of
``w2c_t X_t``, the reprojection residual (pixels) and masks: ``inconsistent`` (residual above a robust threshold:
the point is off its pixel's ray) and ``moving`` (the point disagrees with the previous frame's point seen at the
same place). ``timings`` (seconds): intrinsics (including input checks), poses, dense, motion (with the clip
verdict), outputs (the float32 result arrays) and total.

Failure is a result, not an exception: ``Registration.status`` (:mod:`fourdnex_jax.geometry.status`) says which
frames' cameras are estimates and which are rejected (and why), ``Registration.clip``
(:mod:`fourdnex_jax.geometry.consistency`) whether the registered frames agree with each other as one 4D scene;
implausible intrinsics are replaced by a stated
field-of-view prior and then no pose is solved. The points (``points_world``, ``point_valid``) never depend on the
poses: pointmaps are already in the first camera's frame, so a frame whose pose fails still has its points.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from fourdnex_jax.geometry import consistency, pose, robust, se3
from fourdnex_jax.geometry import status as status_lib
from fourdnex_jax.geometry.intrinsics import (
    decompose_projection,
    fit_intrinsics_camera_frame,
    fit_intrinsics_shifted,
    robust_projection,
)
from fourdnex_jax.geometry.normalize import denormalize

NORMALIZATIONS = ("sequence", "reference", "metric")


@dataclasses.dataclass
class Registration:
    K: np.ndarray                 # (3, 3) shared intrinsics (pixels): the estimate, or the prior (status)
    K_per_frame: np.ndarray | None  # (T, 3, 3) when estimated per frame
    c2w: np.ndarray               # (T, 4, 4) OpenCV camera-to-world, world = camera 0; a rejected frame's is
    #                               the solver's last estimate, or the identity where none was solved
    depth: np.ndarray             # (T, H, W) float32 z-depth in each recovered camera (0 where invalid)
    points_world: np.ndarray      # (T, H, W, 3) float32 points in the world frame (after anchoring), 0 where
    #                               not point_valid; independent of the poses
    point_valid: np.ndarray       # (T, H, W) bool: the pointmap's usable points (finite, given valid, unclipped)
    valid: np.ndarray             # (T, H, W) bool: point_valid and in front of the recovered camera
    residual: np.ndarray          # (T, H, W) float32 reprojection error (pixels; inf where invalid)
    inconsistent: np.ndarray      # (T, H, W) bool residual above threshold
    moving: np.ndarray            # (T, H, W) bool cross-frame disagreement
    frame_stats: list             # per frame dict: median residual, inlier ratio, threshold
    normalization: str
    offsets: np.ndarray           # (T, 3) anchoring offsets added to each frame's points (reference mode)
    timings: dict
    status: status_lib.CameraStatus  # which cameras are results (module docstring)
    clip: consistency.ClipVerdict  # whether the registered frames form one 4D scene

    @property
    def dynamic(self) -> np.ndarray:
        return self.inconsistent | self.moving

    @property
    def confidence(self) -> np.ndarray:
        """(T, H, W) float32 in [0, 1]: 1 for consistent points, decaying with the residual / threshold."""
        thr = np.array([np.nan if s["threshold_px"] is None else s["threshold_px"] for s in self.frame_stats],
                       np.float64)[:, None, None]
        thr = np.where(np.isfinite(thr), np.maximum(thr, 1e-6), 1.0)  # a rejected frame's may be None or inf
        ok = self.valid & ~self.moving
        c = 1.0 / (1.0 + (np.where(ok, self.residual, 0.0) / thr) ** 2)
        return np.where(ok, c, 0.0).astype(np.float32)


def clipped_mask(xyz: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Points sitting exactly on their frame's per-axis min or max (the reference's percentile clip puts every
    clipped point there): unreliable, excluded from estimation."""
    out = np.zeros(valid.shape, bool)
    for t in range(xyz.shape[0]):
        pts = xyz[t][valid[t]]
        if len(pts) == 0:
            continue
        lo, hi = pts.min(0), pts.max(0)
        out[t] = ((xyz[t] == lo) | (xyz[t] == hi)).any(-1) & valid[t]
    return out


def _sample_indices(h: int, w: int, n: int) -> np.ndarray:
    step = max(1, int(np.sqrt(h * w / max(n, 1))))
    v, u = np.meshgrid(np.arange(step // 2, h, step), np.arange(step // 2, w, step), indexing="ij")
    return (v * w + u).reshape(-1)


def anchor_offsets_icp(points: np.ndarray, keep: np.ndarray, iters: int = 15, sample: int = 6000,
                       trim: float = 0.7, seed: int = 0) -> np.ndarray:
    """Translation-only trimmed ICP of frame t against the last matched frame before it (already anchored),
    t = 1..T-1. points (T, N, 3) in a common orientation; keep (T, N) bool (non-finite points are dropped too).
    A frame with fewer than 10 usable points keeps the previous offset and is not used as a reference.
    Returns offsets (T, 3) with offsets[0] = 0."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    tt = points.shape[0]
    keep = keep & np.isfinite(points).all(-1)  # cKDTree rejects non-finite coordinates
    offs = np.zeros((tt, 3))
    prev = None
    for t in range(tt):
        idx = np.nonzero(keep[t])[0]
        if len(idx) > sample:
            idx = rng.choice(idx, sample, replace=False)
        src = points[t, idx]
        offs[t] = offs[t - 1] if t else 0.0
        if len(src) < 10:
            continue
        if prev is not None:
            tree = cKDTree(prev)
            o = offs[t].copy()
            for _ in range(iters):
                d, j = tree.query(src + o)
                sel = d <= np.quantile(d, trim)
                step = np.median(prev[j[sel]] - (src[sel] + o), axis=0)
                o += step
                if np.abs(step).max() < 1e-9:
                    break
            offs[t] = o
        prev = src + offs[t]
    return offs


def register(xyz: np.ndarray, valid: np.ndarray | None = None, *, rgb: np.ndarray | None = None,
             normalization: str = "sequence", centers: np.ndarray | None = None, scale: float | None = None,
             sample_points: int = 4800,
             method: str = "lmeds", hypotheses: int = 64, gn_steps: int = 3, principal_point: str = "fit",
             intrinsics: str = "auto", square_pixels: bool = True,
             per_frame_intrinsics: bool = False, anchor: str = "auto", min_residual_px: float = 0.75,
             motion_tol: float = 0.05, seed: int = 0) -> Registration:
    """Closed-form registration of a pointmap video (see module docstring); ``rgb`` (T, H, W, 3), the frames'
    colours, if known, for the clip verdict (:mod:`consistency`). ``principal_point``: 'fit', or
    'center' ((W-1)/2, (H-1)/2, the exact image centre with pixel centres at integers; used for unshifted maps
    only, the DLT always estimates it). The stages, in order: :func:`_frames` (input checks), :func:`_intrinsics`
    (from frame 0), :func:`_poses` (frames 1..T-1 in one batched pass), :func:`_dense` (depth, residual,
    inconsistency), :func:`_world` (world = camera 0, anchoring, the verdict), the motion mask and the clip
    verdict, the outputs."""
    t0 = time.perf_counter()
    f = _frames(xyz, valid, normalization, centers, scale, sample_points)
    if anchor == "auto":  # ICP is opt-in: translation along a dominant plane (a floor) is unobservable
        anchor = "none"
    K, K_est, pose0, problem = _intrinsics(f, intrinsics, principal_point, square_pixels, hypotheses, seed)
    t_k = time.perf_counter()
    w2c, Ks, stats, solve, pre_reasons = _poses(f, K, pose0, problem, per_frame_intrinsics, method, hypotheses,
                                                gn_steps, seed)
    t_pose = time.perf_counter()
    cam, residual, valid_d, inconsistent = _dense(f, w2c, Ks, stats, solve, min_residual_px)
    c2w, points, offsets = _world(f, w2c, inconsistent, solve, anchor, seed)
    status = _judge(stats, problem, K, K_est, c2w, points, f.vflat, valid_d, f.h, f.w, pre_reasons)
    t_dense = time.perf_counter()

    tt, h, w = f.tt, f.h, f.w
    moving = np.zeros_like(valid_d)
    if tt > 1 and (not f.shifted or anchor == "icp"):
        moving = _motion_mask(points, valid_d & ~inconsistent, c2w, Ks, h, w, motion_tol, cam)
        # decided only between two frames whose cameras are both results
        src = np.where(np.arange(tt) > 0, np.arange(tt) - 1, 1)
        moving &= (status.registered & status.registered[src])[:, None]
    clip = consistency.clip_verdict(points, valid_d, c2w, Ks, status.registered, h, w, solve_offsets=f.shifted,
                                    rgb=None if rgb is None else np.asarray(rgb).reshape(tt, -1, 3))
    t_motion = time.perf_counter()

    # -- outputs ----------------------------------------------------------------------------------------------
    depth = np.where(valid_d, cam[..., 2], 0.0).astype(np.float32).reshape(tt, h, w)
    point_valid = f.vflat & np.isfinite(points).all(-1)
    points_world = np.where(point_valid[..., None], points, 0.0).astype(np.float32).reshape(tt, h, w, 3)
    residual = residual.astype(np.float32).reshape(tt, h, w)
    t_end = time.perf_counter()
    return Registration(
        K=K, K_per_frame=Ks if per_frame_intrinsics else None, c2w=c2w, depth=depth, points_world=points_world,
        point_valid=point_valid.reshape(tt, h, w), valid=valid_d.reshape(tt, h, w), residual=residual,
        inconsistent=inconsistent.reshape(tt, h, w), moving=moving.reshape(tt, h, w), frame_stats=stats,
        normalization=normalization if not (centers is not None and scale is not None) else "metric",
        offsets=offsets,
        timings={"intrinsics_s": t_k - t0, "poses_s": t_pose - t_k, "dense_s": t_dense - t_pose,
                 "motion_s": t_motion - t_dense, "outputs_s": t_end - t_motion, "total_s": t_end - t0},
        status=status, clip=clip)


@dataclasses.dataclass
class _Frames:
    """The checked input, flattened: ``flat`` (T, H*W, 3) float64 points (0 where invalid), ``vflat`` (T, H*W)
    bool usable points, ``uv_all`` (H*W, 2) pixel coordinates, ``grid`` the solver's sample pixel indices,
    ``shifted`` (frames centred per frame: 'reference' without the true centres)."""

    flat: np.ndarray
    vflat: np.ndarray
    uv_all: np.ndarray
    grid: np.ndarray
    shifted: bool
    tt: int
    h: int
    w: int


def _frames(xyz, valid, normalization: str, centers, scale, sample_points: int) -> _Frames:
    """Input checks: shape, finite and unclipped points, de-normalisation when the true centres and scale are
    given."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    xyz = np.asarray(xyz, np.float64)
    if xyz.ndim != 4 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz must be (T, H, W, 3), got {xyz.shape}")
    tt, h, w, _ = xyz.shape
    ok = np.isfinite(xyz).all(-1)
    valid = ok if valid is None else (np.asarray(valid, bool) & ok)
    xyz = np.where(valid[..., None], xyz, 0.0)
    shifted = normalization == "reference"
    if shifted:
        valid = valid & ~clipped_mask(xyz, valid)
    if centers is not None and scale is not None:
        xyz = denormalize(xyz, np.asarray(centers, np.float64), float(scale))
        shifted = False
    u, v = se3.pixel_grid(h, w)
    return _Frames(xyz.reshape(tt, -1, 3), valid.reshape(tt, -1), np.stack([u, v], -1).reshape(-1, 2),
                   _sample_indices(h, w, sample_points), shifted, tt, h, w)


def _intrinsics(f: _Frames, intrinsics: str, principal_point: str, square_pixels: bool, hypotheses: int,
                seed: int):
    """K from frame 0: ``(K, K_est, pose0, problem)``. ``K_est`` the estimate (None where none was made),
    ``pose0`` frame 0's (R, t) for shifted maps, ``problem`` why the estimate is not used (then K is the
    field-of-view prior and no pose is solved)."""
    flat, uv_all, h, w = f.flat, f.uv_all, f.h, f.w
    sel = f.grid[f.vflat[0, f.grid]]
    if intrinsics == "auto":
        intrinsics = "shifted" if f.shifted else "camera"
    if intrinsics not in ("camera", "shifted", "dlt"):
        raise ValueError(f"intrinsics must be 'auto', 'camera', 'shifted' or 'dlt', got {intrinsics!r}")
    K_est, pose0, problem = None, None, None
    if len(sel) < status_lib.MIN_PAIRS:
        problem = f"frame 0 has too few valid points ({len(sel)} sample pairs) to estimate intrinsics"
    elif intrinsics == "camera" and not (flat[0, sel, 2] > 0).mean() > 0.5:
        problem = ("frame 0 is mostly behind the camera (a per-frame-centred 'reference' map given as "
                   "'sequence'?)")
    else:
        with np.errstate(all="ignore"):  # a pointmap that fits no camera gives non-finite candidates: judged below
            if intrinsics == "dlt":  # full 11-DoF DLT + RQ (general, but degenerate on plane-dominated frames)
                P, _ = robust_projection(flat[0, sel], uv_all[sel], hypotheses=hypotheses, seed=seed)
                K_est, r0, t0_ = decompose_projection(P)
                K_est[0, 1] = 0.0
                pose0 = (r0, t0_) if f.shifted else None
            elif intrinsics == "shifted":  # rotation known (identity), offset unknown
                K_est, off, _ = fit_intrinsics_shifted(flat[0, sel], uv_all[sel], hypotheses=2 * hypotheses,
                                                       square_pixels=square_pixels, seed=seed)
                pose0 = (np.eye(3), off) if f.shifted else None
            else:
                pp = None if principal_point == "fit" else ((w - 1) / 2, (h - 1) / 2)
                K_est, _ = fit_intrinsics_camera_frame(flat[0, sel], uv_all[sel], principal_point=pp,
                                                       square_pixels=square_pixels, seed=seed)
        problem = status_lib.intrinsics_problem(K_est, h, w)
        if problem is None and pose0 is not None and not np.isfinite(pose0[1]).all():
            problem = "the frame-0 offset estimate is not finite"
    if problem is not None:  # no pose is solved with a prior K (status module docstring)
        return status_lib.fov_prior_intrinsics(h, w), K_est, None, problem
    return K_est, K_est, pose0, problem


def _poses(f: _Frames, K, pose0, problem, per_frame_intrinsics: bool, method: str, hypotheses: int, gn_steps: int,
           seed: int):
    """Per-frame poses, frames 1..T-1 in one batched pass: ``(w2c (T, 4, 4), Ks (T, 3, 3), stats, solve,
    pre_reasons)``; ``solve`` the frames whose pose was solved (the others keep the identity and are rejected by
    the status), ``pre_reasons`` frames rejected before solving."""
    tt, h, w, flat, vflat, uv_all, grid = f.tt, f.h, f.w, f.flat, f.vflat, f.uv_all, f.grid
    Ks = np.broadcast_to(K, (tt, 3, 3)).copy()
    if len(grid) == h * w:  # every pixel (sample grid step 1): no copy
        xg, vg, uvg = flat, vflat, uv_all
    else:
        xg, vg, uvg = flat[:, grid], vflat[:, grid], uv_all[grid]
    counts = vg.sum(1)
    solve = [] if problem is not None else [t for t in range(1, tt) if counts[t] >= status_lib.MIN_PAIRS]
    pre_reasons: dict[int, str] = {}
    if per_frame_intrinsics:
        for t in list(solve):
            with np.errstate(all="ignore"):
                P, _ = robust_projection(xg[t][vg[t]], uvg[vg[t]], hypotheses=hypotheses, seed=seed + t)
                Ks[t], _, _ = decompose_projection(P)
            Ks[t, 0, 1] = 0.0
            why = status_lib.intrinsics_problem(Ks[t], h, w)
            if why is not None:
                pre_reasons[t] = f"per-frame intrinsics rejected: {why}"
                Ks[t] = K
                solve.remove(t)
    w2c = np.tile(np.eye(4), (tt, 1, 1))
    r0, tr0 = (np.eye(3), np.zeros(3)) if pose0 is None else pose0
    with np.errstate(all="ignore"):
        e = pose.reprojection_error(Ks[0], r0, tr0, xg[0][vg[0]], uvg[vg[0]])
        fin = np.isfinite(e)
        thr0 = max(2.5 * 1.4826 * float(robust.robust_level(e, fin)), 1e-3) if fin.any() else np.inf
    w2c[0, :3, :3], w2c[0, :3, 3] = r0, tr0
    stats = [{"frame": 0, "median_residual_px": float(np.median(e)) if len(e) else np.inf, "threshold_px": thr0,
              "inlier_ratio": float((e < thr0).mean()) if len(e) else 0.0, "pairs": int(counts[0]),
              "hypothesis": "frame0" if problem is None else "fov_prior"}]
    stats += [{"frame": t, "median_residual_px": np.inf, "threshold_px": np.inf, "inlier_ratio": 0.0,
               "pairs": int(counts[t]), "hypothesis": "none"} for t in range(1, tt)]
    if solve:
        idx = np.array(solve)
        sub = np.concatenate([[0], idx])  # frame 0 + the solved frames, in order: neighbours for the fallback
        kw = dict(method=method, hypotheses=hypotheses, gn_steps=gn_steps)
        res = pose.robust_pose_batch(Ks[idx], xg[idx], uvg, vg[idx], seeds=seed + idx, **kw)
        res = _neighbour_fallback(res, Ks[sub], xg[sub], uvg, vg[sub], (r0, tr0), seed, kw)
        w2c[idx, :3, :3], w2c[idx, :3, 3] = res.R, res.t
        for i, t in enumerate(solve):
            stats[t].update(median_residual_px=float(res.median_error[i]), threshold_px=float(res.threshold[i]),
                            inlier_ratio=float(res.inliers[i].sum() / counts[t]), hypothesis=res.source[i])
    return w2c, Ks, stats, solve, pre_reasons


def _dense(f: _Frames, w2c, Ks, stats: list, solve: list, min_residual_px: float):
    """Dense depth, residual and masks for all frames at once: ``(cam (T, N, 3) camera-frame points, residual
    (T, N) pixels, valid_d (T, N) in front of the camera, inconsistent (T, N))``; ``stats`` get the verdict's
    dense numbers."""
    tt, h, w, flat, vflat, uv_all = f.tt, f.h, f.w, f.flat, f.vflat, f.uv_all
    r, tv = w2c[:, :3, :3], w2c[:, :3, 3]
    cam = flat @ np.swapaxes(r, 1, 2) + tv[:, None, :]  # (T, N, 3)
    z = cam[..., 2]
    front = z > 1e-9
    zs = np.where(front, z, 1.0)
    du = Ks[:, 0, 0, None] * cam[..., 0] / zs + Ks[:, 0, 2, None] - uv_all[None, :, 0]
    dv = Ks[:, 1, 1, None] * cam[..., 1] / zs + Ks[:, 1, 2, None] - uv_all[None, :, 1]
    residual = np.where(front & vflat, np.hypot(du, dv), np.inf)
    valid_d = vflat & front
    thr = np.maximum(np.array([s["threshold_px"] for s in stats]), min_residual_px)
    # the verdict's numbers, densely on every usable pixel with the final threshold (the solver's sample-grid
    # figures used a threshold that can be ~0 on exact maps): median residual (inf if most points are behind
    # the camera) and the fraction within the threshold
    n_used = np.maximum(vflat.sum(1), 1)
    dense_median = np.array([np.median(residual[t][vflat[t]]) if vflat[t].any() else np.inf for t in range(tt)])
    # the verdict's inlier ratio counts a point within a few pixels as explained even when the adaptive threshold
    # collapsed (an exact sky makes the robust level ~0 and would call a 1-px-noisy foreground outliers)
    thr_inlier = np.maximum(thr, status_lib.inlier_floor_px(h, w))
    ratio = (vflat & np.isfinite(residual) & (residual <= thr_inlier[:, None])).sum(1) / n_used
    for t, (s, th, th_in, med, inl) in enumerate(zip(stats, thr, thr_inlier, dense_median, ratio)):
        if t == 0 or t in solve:
            s.update(threshold_px=float(th), inlier_threshold_px=float(th_in), median_residual_px=float(med),
                     inlier_ratio=float(inl))
        else:  # no pose was solved: no numbers to report
            s.update(threshold_px=None, inlier_threshold_px=None, median_residual_px=None, inlier_ratio=None)
    return cam, residual, valid_d, valid_d & (residual > thr[:, None])


def _world(f: _Frames, w2c, inconsistent, solve: list, anchor: str, seed: int):
    """World = camera 0: the frames' coordinates re-expressed in camera 0 (identity for unshifted maps), then
    anchored (``anchor='icp'``): ``(c2w (T, 4, 4), points (T, N, 3), offsets (T, 3))``."""
    tt, flat, vflat = f.tt, f.flat, f.vflat
    c2w = se3.invert_se3(w2c)
    to_cam0 = w2c[0].copy()
    points = flat if np.array_equal(to_cam0, np.eye(4)) else flat @ to_cam0[:3, :3].T + to_cam0[:3, 3]
    c2w = to_cam0[None] @ c2w
    offsets = np.zeros((tt, 3))
    if anchor == "icp" and tt > 1:  # translation-only: needs the points, not the poses (rejected frames too)
        judged = np.isin(np.arange(tt), [0] + solve)[:, None]
        offsets = anchor_offsets_icp(points, vflat & ~(inconsistent & judged), seed=seed)
        points = points + offsets[:, None, :]
        c2w[:, :3, 3] += offsets
    elif anchor not in ("none", "icp"):
        raise ValueError(f"anchor must be 'auto', 'icp' or 'none', got {anchor!r}")
    return c2w, points, offsets


def _judge(stats: list, problem: str | None, K: np.ndarray, K_est: np.ndarray | None, c2w: np.ndarray,
           points: np.ndarray, vflat: np.ndarray, valid_d: np.ndarray, h: int, w: int,
           pre_reasons: dict) -> status_lib.CameraStatus:
    """The :class:`status_lib.CameraStatus` of one registration: points (T, N, 3) in the world frame, vflat /
    valid_d (T, N) the usable points and those in front of their recovered camera."""
    tt = len(stats)
    n0 = vflat[0].sum()
    radius = float(np.percentile(np.linalg.norm(points[0][vflat[0]], axis=-1), 98)) if n0 else float("nan")
    with np.errstate(all="ignore"):
        front = valid_d.sum(1) / np.maximum(vflat.sum(1), 1)
        dist = np.linalg.norm(c2w[:, :3, 3], axis=-1)
    reasons = []
    for t in range(tt):
        if problem is not None:
            reasons.append(f"intrinsics rejected: {problem}")
        elif t in pre_reasons:
            reasons.append(pre_reasons[t])
        else:
            reasons.append(status_lib.frame_problem(stats[t], h, w, float(front[t]), float(dist[t]), radius))
    for s, f in zip(stats, front):
        s["front_fraction"] = None if s["inlier_ratio"] is None else float(f)  # None: no pose was solved
    return status_lib.CameraStatus(
        registered=np.array([r is None for r in reasons]), reasons=reasons,
        intrinsics_source="estimated" if problem is None else "fov_prior", intrinsics_reason=problem,
        K=np.asarray(K, np.float64), K_estimate=None if K_est is None else np.asarray(K_est, np.float64),
        image_size=(h, w))


def _neighbour_fallback(res: pose.PoseBatch, Ks: np.ndarray, xg: np.ndarray, uvg: np.ndarray, vg: np.ndarray,
                        pose0: tuple, seed: int, kw: dict, score_points: int = 600) -> pose.PoseBatch:
    """Safety net for the batched poses of frames 1..T-1 (``res``; xg (T, G, 3), vg (T, G), uvg (G, 2)): video
    motion is small, so the final poses of frames t-1 (frame 0: ``pose0``) and t+1 are scored on frame t (median
    reprojection error over a strided subset of its valid pairs); a frame where a neighbour's pose fits better
    than its own result is solved again with that pose as an extra hypothesis, and the new result is kept where
    it fits better. Usually nothing is re-solved."""
    tt = xg.shape[0]
    if tt < 3:
        return res
    rr = np.concatenate([np.asarray(pose0[0], np.float64)[None], res.R])  # (T, 3, 3) all frames
    ts = np.concatenate([np.asarray(pose0[1], np.float64)[None], res.t])
    cand_r = np.stack([rr[1:], rr[:-1], np.concatenate([rr[2:], rr[-1:]])], 1)  # own, t-1, t+1
    cand_t = np.stack([ts[1:], ts[:-1], np.concatenate([ts[2:], ts[-1:]])], 1)
    stride = max(1, xg.shape[1] // score_points)
    med = pose.pose_medians(Ks[1:], cand_r, cand_t, xg[1:, ::stride], uvg[::stride], vg[1:, ::stride])
    nb = 1 + np.argmin(med[:, 1:], 1)
    redo = np.flatnonzero(med[np.arange(tt - 1), nb] < med[:, 0])
    if len(redo) == 0:
        return res
    init = (cand_r[redo, nb[redo]][:, None], cand_t[redo, nb[redo]][:, None])
    again = pose.robust_pose_batch(Ks[1 + redo], xg[1 + redo], uvg, vg[1 + redo], init=init,
                                      seeds=seed + 1 + redo, **kw)
    for j, i in enumerate(redo):
        if again.median_error[j] < res.median_error[i]:
            res.R[i], res.t[i], res.inliers[i] = again.R[j], again.t[j], again.inliers[j]
            res.threshold[i], res.median_error[i], res.source[i] = (again.threshold[j], again.median_error[j],
                                                                    again.source[j])
            res.refit[i], res.irls_steps[i], res.gn_steps[i] = again.refit[j], again.irls_steps[j], again.gn_steps[j]
    return res


def _motion_mask(points: np.ndarray, ok: np.ndarray, c2w: np.ndarray, Ks: np.ndarray, h: int, w: int,
                 tol: float, cam: np.ndarray) -> np.ndarray:
    """Pixel of frame t moves if its world point, seen from camera s (s = t-1, or 1 for t = 0) at pixel q, lies
    in FRONT of what frame s shows at q by more than ``tol`` x depth (behind = occluded there: not decided).
    points (T, N, 3) world, ok (T, N), c2w (T, 4, 4), Ks (T, 3, 3), cam (T, N, 3) each frame's points in its own
    camera (what frame s shows at q, in camera s, is ``cam[s, q]``) -> (T, N) bool; all frames in one pass."""
    tt, n = ok.shape
    src = np.where(np.arange(tt) > 0, np.arange(tt) - 1, 1)
    w2c = se3.invert_se3(c2w)[src]
    pc = points @ np.swapaxes(w2c[:, :3, :3], 1, 2) + w2c[:, None, :3, 3]  # frame t's points in camera s
    z = pc[..., 2]
    zs = np.where(z > 1e-9, z, 1.0)
    kk = Ks[src]
    qu = np.rint(kk[:, 0, 0, None] * pc[..., 0] / zs + kk[:, 0, 2, None])
    qv = np.rint(kk[:, 1, 1, None] * pc[..., 1] / zs + kk[:, 1, 2, None])
    inside = (z > 1e-9) & (qu >= 0) & (qu < w) & (qv >= 0) & (qv < h) & ok
    q = (np.where(inside, qv * w + qu, 0) + (src * n)[:, None]).astype(np.int64)
    other = pose.gather_columns(cam.reshape(-1, 3).T, q)  # (T, 3, N): frame s at q, camera s
    decided = inside & np.take(ok.reshape(-1), q)
    dist = np.sqrt(((other - np.swapaxes(pc, 1, 2)) ** 2).sum(1))
    z_other = other[:, 2]
    return decided & (dist > tol * np.abs(z_other)) & (z < z_other * (1 - tol))
