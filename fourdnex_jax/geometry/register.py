"""Cameras, depth and a per-pixel inconsistency mask from a pointmap video, in closed form (NumPy, CPU).

Input: ``xyz`` (T, H, W, 3) in the first camera's frame (OpenCV axes), optionally ``valid`` (T, H, W).
``normalization`` says how it was produced (see :mod:`fourdnex_jax.data.normalize`):

* ``sequence`` (ours, or DUSt3R/VGGT-style, also ``metric``): one scale about camera 0, no shift. Frame 0 is a
  true camera-frame map: K follows from two robust line fits (:func:`cameras.fit_intrinsics_camera_frame`),
  camera 0 is the identity.
* ``reference`` (4DNeX ``build_wan_dataset.py``): every frame centred on its own bounding-box centre ``c_t``.
  Frame 0 then is ``K [I | c_0 / s]``: a full DLT + RQ recovers K and the offset exactly. The offsets of later
  frames are not stored by the model output, so each recovered camera centre is off by ``-(c_t - c_0) / s``;
  ``anchor='icp'`` (opt-in) estimates these offsets by translation-only trimmed ICP of each frame's consistent
  points against the previous frame (assumes mostly static, overlapping, non-planar content; on the synthetic
  floor-dominated scenes it only reduces the error by 5-20%); the default ``'none'`` leaves them.
  When the file carries the true ``centers`` and ``scale`` the maps are de-normalised first and everything is
  exact.

Poses: frames 1..T-1 in ONE vectorised pass (:func:`cameras.robust_pose_batch`: P3P hypotheses scored by LMedS,
a calibrated-DLT refit on the winner's inliers, robust Tukey Gauss-Newton) from the dense pairs (pixel (u, v) <->
X_t(u, v)) on a sample grid; a frame whose neighbour's pose fits it better is re-solved with that pose as an
extra hypothesis (:func:`_neighbour_fallback`). Then, densely and for all frames at once, depth = z of
``w2c_t X_t``, the reprojection residual (pixels) and masks: ``inconsistent`` (residual above a robust threshold:
the point is off its pixel's ray) and ``moving`` (the point disagrees with the previous frame's point seen at the
same place). ``timings`` (seconds): intrinsics (including input checks), poses, dense, motion, outputs (the
float32 result arrays) and total.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from fourdnex_jax.data import geometry
from fourdnex_jax.data.normalize import denormalize
from fourdnex_jax.geometry import cameras

NORMALIZATIONS = ("sequence", "reference", "metric")


@dataclasses.dataclass
class Registration:
    K: np.ndarray                 # (3, 3) shared intrinsics (pixels)
    K_per_frame: np.ndarray | None  # (T, 3, 3) when estimated per frame
    c2w: np.ndarray               # (T, 4, 4) OpenCV camera-to-world, world = camera 0
    depth: np.ndarray             # (T, H, W) float32 z-depth (0 where invalid)
    points_world: np.ndarray      # (T, H, W, 3) float32 points in the world frame (after anchoring)
    valid: np.ndarray             # (T, H, W) bool: finite, in front, used
    residual: np.ndarray          # (T, H, W) float32 reprojection error (pixels; inf where invalid)
    inconsistent: np.ndarray      # (T, H, W) bool residual above threshold
    moving: np.ndarray            # (T, H, W) bool cross-frame disagreement
    frame_stats: list             # per frame dict: median residual, inlier ratio, threshold
    normalization: str
    offsets: np.ndarray           # (T, 3) anchoring offsets added to each frame's points (reference mode)
    timings: dict

    @property
    def dynamic(self) -> np.ndarray:
        return self.inconsistent | self.moving

    @property
    def confidence(self) -> np.ndarray:
        """(T, H, W) float32 in [0, 1]: 1 for consistent points, decaying with the residual / threshold."""
        thr = np.array([s["threshold_px"] for s in self.frame_stats], np.float32)[:, None, None]
        c = 1.0 / (1.0 + (self.residual / np.maximum(thr, 1e-6)) ** 2)
        return np.where(self.valid & ~self.moving, c, 0.0).astype(np.float32)


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
    """Translation-only trimmed ICP of frame t against frame t-1 (already anchored), t = 1..T-1.
    points (T, N, 3) in a common orientation; keep (T, N) bool. Returns offsets (T, 3) with offsets[0] = 0."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    tt = points.shape[0]
    offs = np.zeros((tt, 3))
    prev = None
    for t in range(tt):
        idx = np.nonzero(keep[t])[0]
        if len(idx) > sample:
            idx = rng.choice(idx, sample, replace=False)
        src = points[t, idx]
        if t == 0 or prev is None or len(src) < 10:
            offs[t] = offs[t - 1] if t else 0.0
        else:
            tree = cKDTree(prev)
            o = offs[t - 1].copy()
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


def register(xyz: np.ndarray, valid: np.ndarray | None = None, *, normalization: str = "sequence",
             centers: np.ndarray | None = None, scale: float | None = None, sample_points: int = 4800,
             method: str = "lmeds", hypotheses: int = 64, gn_steps: int = 3, principal_point: str = "fit",
             intrinsics: str = "auto", square_pixels: bool = True,
             per_frame_intrinsics: bool = False, anchor: str = "auto", min_residual_px: float = 0.75,
             motion_tol: float = 0.05, seed: int = 0) -> Registration:
    """Closed-form registration of a pointmap video (see module docstring). ``principal_point``: 'fit', or
    'center' ((W-1)/2, (H-1)/2, the exact image centre with pixel centres at integers; used for unshifted maps
    only, the DLT always estimates it)."""
    t0 = time.perf_counter()
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
    if anchor == "auto":  # ICP is opt-in: translation along a dominant plane (a floor) is unobservable
        anchor = "none"

    u, v = geometry.pixel_grid(h, w)
    uv_all = np.stack([u, v], -1).reshape(-1, 2)
    grid = _sample_indices(h, w, sample_points)
    flat = xyz.reshape(tt, -1, 3)
    vflat = valid.reshape(tt, -1)

    # -- intrinsics from frame 0 ------------------------------------------------------------------------------
    sel = grid[vflat[0, grid]]
    if len(sel) < 12:
        raise ValueError("frame 0 has too few valid points to estimate intrinsics")
    if intrinsics == "auto":
        intrinsics = "shifted" if shifted else "camera"
    pose0 = None
    if intrinsics == "dlt":  # full 11-DoF DLT + RQ (general, but degenerate on plane-dominated frames)
        P, _ = cameras.robust_projection(flat[0, sel], uv_all[sel], hypotheses=hypotheses, seed=seed)
        K, r0, t0_ = cameras.decompose_projection(P)
        K[0, 1] = 0.0
        pose0 = (r0, t0_) if shifted else None
    elif intrinsics == "shifted":  # rotation known (identity), offset unknown
        K, off, _ = cameras.fit_intrinsics_shifted(flat[0, sel], uv_all[sel], hypotheses=2 * hypotheses,
                                                  square_pixels=square_pixels, seed=seed)
        pose0 = (np.eye(3), off) if shifted else None
    elif intrinsics == "camera":
        if not (flat[0, sel, 2] > 0).mean() > 0.5:
            raise ValueError("frame 0 is mostly behind the camera: is this a per-frame-centred (reference) map?")
        pp = None if principal_point == "fit" else ((w - 1) / 2, (h - 1) / 2)
        K, _ = cameras.fit_intrinsics_camera_frame(flat[0, sel], uv_all[sel], principal_point=pp,
                                                     square_pixels=square_pixels, seed=seed)
    else:
        raise ValueError(f"intrinsics must be 'auto', 'camera', 'shifted' or 'dlt', got {intrinsics!r}")
    t_k = time.perf_counter()

    # -- per-frame poses (frames 1..T-1 in one batched pass) ---------------------------------------------------
    Ks = np.broadcast_to(K, (tt, 3, 3)).copy()
    if len(grid) == h * w:  # every pixel (sample grid step 1): no copy
        xg, vg, uvg = flat, vflat, uv_all
    else:
        xg, vg, uvg = flat[:, grid], vflat[:, grid], uv_all[grid]
    counts = vg.sum(1)
    if counts.min() < 12:
        raise ValueError(f"frame {int(np.argmin(counts))} has too few valid points for a pose")
    if per_frame_intrinsics:
        for t in range(1, tt):
            P, _ = cameras.robust_projection(xg[t][vg[t]], uvg[vg[t]], hypotheses=hypotheses, seed=seed + t)
            Ks[t], _, _ = cameras.decompose_projection(P)
            Ks[t, 0, 1] = 0.0
    w2c = np.tile(np.eye(4), (tt, 1, 1))
    r0, tr0 = (np.eye(3), np.zeros(3)) if pose0 is None else pose0
    e = cameras.reprojection_error(Ks[0], r0, tr0, xg[0][vg[0]], uvg[vg[0]])
    thr0 = max(2.5 * 1.4826 * float(cameras.robust_level(e, np.isfinite(e))), 1e-3)  # as for the other frames
    w2c[0, :3, :3], w2c[0, :3, 3] = r0, tr0
    stats = [{"frame": 0, "median_residual_px": float(np.median(e)), "threshold_px": thr0,
              "inlier_ratio": float((e < thr0).mean()), "pairs": int(counts[0]), "hypothesis": "frame0"}]
    if tt > 1:
        kw = dict(method=method, hypotheses=hypotheses, gn_steps=gn_steps)
        res = cameras.robust_pose_batch(Ks[1:], xg[1:], uvg, vg[1:], seeds=seed + np.arange(1, tt), **kw)
        res = _neighbour_fallback(res, Ks, xg, uvg, vg, (r0, tr0), seed, kw)
        w2c[1:, :3, :3], w2c[1:, :3, 3] = res.R, res.t
        for i in range(tt - 1):
            stats.append({"frame": i + 1, "median_residual_px": float(res.median_error[i]),
                          "threshold_px": float(res.threshold[i]),
                          "inlier_ratio": float(res.inliers[i].sum() / counts[i + 1]), "pairs": int(counts[i + 1]),
                          "hypothesis": res.source[i]})
    t_pose = time.perf_counter()

    # -- dense depth, residual, masks ---------------------------------------------------------------------------
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
    for s, th in zip(stats, thr):
        s["threshold_px"] = float(th)
    inconsistent = valid_d & (residual > thr[:, None])

    # world = camera 0: re-express the frames' coordinates in camera 0 (identity for unshifted maps)
    c2w = geometry.invert_se3(w2c)
    to_cam0 = w2c[0].copy()
    points = flat if np.array_equal(to_cam0, np.eye(4)) else flat @ to_cam0[:3, :3].T + to_cam0[:3, 3]
    c2w = to_cam0[None] @ c2w
    offsets = np.zeros((tt, 3))
    if anchor == "icp" and tt > 1:
        offsets = anchor_offsets_icp(points, valid_d & ~inconsistent, seed=seed)
        points = points + offsets[:, None, :]
        c2w[:, :3, 3] += offsets
    elif anchor not in ("none", "icp"):
        raise ValueError(f"anchor must be 'auto', 'icp' or 'none', got {anchor!r}")
    t_dense = time.perf_counter()

    moving = np.zeros_like(valid_d)
    if tt > 1 and (not shifted or anchor == "icp"):
        moving = _motion_mask(points, valid_d & ~inconsistent, c2w, Ks, h, w, motion_tol, cam)
    t_motion = time.perf_counter()

    depth = np.where(valid_d, z, 0.0).astype(np.float32).reshape(tt, h, w)
    points_world = np.where(valid_d[..., None], points, 0.0).astype(np.float32).reshape(tt, h, w, 3)
    residual = residual.astype(np.float32).reshape(tt, h, w)
    t_end = time.perf_counter()
    return Registration(
        K=K, K_per_frame=Ks if per_frame_intrinsics else None, c2w=c2w, depth=depth, points_world=points_world,
        valid=valid_d.reshape(tt, h, w), residual=residual,
        inconsistent=inconsistent.reshape(tt, h, w), moving=moving.reshape(tt, h, w), frame_stats=stats,
        normalization=normalization if not (centers is not None and scale is not None) else "metric",
        offsets=offsets,
        timings={"intrinsics_s": t_k - t0, "poses_s": t_pose - t_k, "dense_s": t_dense - t_pose,
                 "motion_s": t_motion - t_dense, "outputs_s": t_end - t_motion, "total_s": t_end - t0})


def _neighbour_fallback(res: "cameras.PoseBatch", Ks: np.ndarray, xg: np.ndarray, uvg: np.ndarray, vg: np.ndarray,
                        pose0: tuple, seed: int, kw: dict, score_points: int = 600) -> "cameras.PoseBatch":
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
    med = cameras.pose_medians(Ks[1:], cand_r, cand_t, xg[1:, ::stride], uvg[::stride], vg[1:, ::stride])
    nb = 1 + np.argmin(med[:, 1:], 1)
    redo = np.flatnonzero(med[np.arange(tt - 1), nb] < med[:, 0])
    if len(redo) == 0:
        return res
    init = (cand_r[redo, nb[redo]][:, None], cand_t[redo, nb[redo]][:, None])
    again = cameras.robust_pose_batch(Ks[1 + redo], xg[1 + redo], uvg, vg[1 + redo], init=init,
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
    w2c = geometry.invert_se3(c2w)[src]
    pc = points @ np.swapaxes(w2c[:, :3, :3], 1, 2) + w2c[:, None, :3, 3]  # frame t's points in camera s
    z = pc[..., 2]
    zs = np.where(z > 1e-9, z, 1.0)
    kk = Ks[src]
    qu = np.rint(kk[:, 0, 0, None] * pc[..., 0] / zs + kk[:, 0, 2, None])
    qv = np.rint(kk[:, 1, 1, None] * pc[..., 1] / zs + kk[:, 1, 2, None])
    inside = (z > 1e-9) & (qu >= 0) & (qu < w) & (qv >= 0) & (qv < h) & ok
    q = (np.where(inside, qv * w + qu, 0) + (src * n)[:, None]).astype(np.int64)
    other = cameras.gather_columns(cam.reshape(-1, 3).T, q)  # (T, 3, N): frame s at q, camera s
    decided = inside & np.take(ok.reshape(-1), q)
    dist = np.sqrt(((other - np.swapaxes(pc, 1, 2)) ** 2).sum(1))
    z_other = other[:, 2]
    return decided & (dist > tol * np.abs(z_other)) & (z < z_other * (1 - tol))
