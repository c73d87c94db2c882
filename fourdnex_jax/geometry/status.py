"""Which recovered cameras are results: per-frame verdicts, plausible intrinsics and a stated fallback.

:func:`fourdnex_jax.geometry.register.register` always produces numbers; a pointmap video that is not consistent
with one moving pinhole camera (a generative model's failure, or independent per-frame maps) still yields a "K"
and "poses". This module decides, from the numbers the solver already has, which of them are estimates:

* intrinsics (frame 0): finite, positive focal lengths whose horizontal and vertical fields of view lie in
  :data:`FOV_RANGE_DEG`, and a principal point inside the image; otherwise the estimate is *rejected*, recorded
  as such, and :func:`fov_prior_intrinsics` (:data:`FOV_PRIOR_DEG` horizontal, principal point at the image
  centre) stands in for exports that need a K (GLB camera, viewer, novel-view video), flagged
  ``source: fov_prior``. No pose is solved with the prior: every frame is then rejected.
* each frame: registered when its pose explains the pointmap -- at least :data:`MIN_PAIRS` valid pairs, an inlier
  ratio >= :data:`MIN_INLIER_RATIO` (within the adaptive threshold, never below :func:`inlier_floor_px`), a finite
  median reprojection residual <= :func:`max_residual_px` (a fraction
  of the image diagonal, since a model's errors scale with the resolution), at least :data:`MIN_FRONT_FRACTION`
  of its valid points in front of the camera and the camera centre within :data:`MAX_CAMERA_DISTANCE` scene radii
  of camera 0. Otherwise rejected, with the reason and the numbers.

Thresholds, measured with tests/geometry/test_status.py's inputs (48x64, diagonal 80 px): clean synthetic maps
have residuals ~1e-6 px; 0.5% depth noise with displaced moving objects ~0.3 px; independent random per-frame maps
and the pre-retraining tiny model's output tens of px with inlier ratios near 0 or focal lengths under 1 px.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

FOV_PRIOR_DEG = 60.0          # horizontal; the synthetic training scenes span 50-70 degrees, phones ~65
FOV_RANGE_DEG = (10.0, 150.0)  # plausible horizontal and vertical fields of view
MIN_PAIRS = 12                # fewer valid sample pairs cannot constrain a pose robustly
MIN_INLIER_RATIO = 0.5
MAX_RESIDUAL_FRACTION = 0.05  # of the image diagonal
INLIER_FLOOR_FRACTION = 0.02  # of the image diagonal: the inlier ratio's threshold is never below this
MIN_FRONT_FRACTION = 0.8
MAX_CAMERA_DISTANCE = 10.0    # in units of the scene radius (98th percentile of frame 0's point distances)


def max_residual_px(height: int, width: int) -> float:
    """Largest median reprojection residual (pixels) of a registered frame: :data:`MAX_RESIDUAL_FRACTION` of the
    image diagonal, at least 1 px."""
    return max(1.0, MAX_RESIDUAL_FRACTION * math.hypot(height, width))


def inlier_floor_px(height: int, width: int) -> float:
    """Smallest residual threshold (pixels) of the inlier ratio: :data:`INLIER_FLOOR_FRACTION` of the diagonal, at
    least 1 px. The registration's adaptive threshold follows the robust residual level, which an exact sky drives
    to ~0; measured on held-out truth with noise 0.01 on the floor and objects only (``python -m
    benchmarks.consistency_verdict``): 95/144 frames registered without the floor, 144/144 with it."""
    return max(1.0, INLIER_FLOOR_FRACTION * math.hypot(height, width))


def finite_or_none(x) -> float | None:
    """``float(x)``, or None when it is NaN/Infinity (strict JSON; the status says why)."""
    x = float(x)
    return x if math.isfinite(x) else None


def fov_deg(focal_px: float, size_px: int) -> float:
    """Field of view (degrees) of ``size_px`` pixels at focal length ``focal_px`` (NaN if the focal is not
    positive and finite)."""
    if not (math.isfinite(focal_px) and focal_px > 0):
        return float("nan")
    return math.degrees(2 * math.atan(size_px / 2 / focal_px))


def fov_prior_intrinsics(height: int, width: int, fov_deg_h: float = FOV_PRIOR_DEG) -> np.ndarray:
    """(3, 3) K of a ``fov_deg_h`` horizontal field of view, square pixels, principal point at the image centre
    ((W-1)/2, (H-1)/2, pixel centres at integers)."""
    f = (width / 2) / math.tan(math.radians(fov_deg_h) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def intrinsics_problem(K: np.ndarray | None, height: int, width: int) -> str | None:
    """Why ``K`` is not a plausible camera of an ``height`` x ``width`` image, or None if it is."""
    if K is None:
        return "no intrinsics could be estimated"
    K = np.asarray(K, np.float64)
    if not np.isfinite(K).all():
        return "the intrinsics estimate is not finite"
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if fx <= 0 or fy <= 0:
        return f"the focal length estimate is not positive (fx {fx:.3g}, fy {fy:.3g} px)"
    fh, fv = fov_deg(fx, width), fov_deg(fy, height)
    lo, hi = FOV_RANGE_DEG
    if not (lo <= fh <= hi and lo <= fv <= hi):
        return (f"the focal length estimate {fx:.3g} px gives a {fh:.1f} x {fv:.1f} degree field of view, outside "
                f"the plausible {lo:g}-{hi:g} degrees")
    if not (-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5):
        return f"the principal point ({cx:.3g}, {cy:.3g}) lies outside the {width}x{height} image"
    return None


def frame_problem(stat: dict, height: int, width: int, front_fraction: float, camera_distance: float,
                  scene_radius: float) -> str | None:
    """Why one frame's recovered camera is not a result (None if it is): ``stat`` is its
    ``Registration.frame_stats`` entry (``pairs``, ``inlier_ratio``, ``median_residual_px``)."""
    if stat["pairs"] < MIN_PAIRS:
        return f"too few valid points ({stat['pairs']} sample pairs, need {MIN_PAIRS})"
    med, ratio = stat["median_residual_px"], stat["inlier_ratio"]
    limit = max_residual_px(height, width)
    if med is None or not math.isfinite(med):
        return "no pose places the points in front of the camera (median residual is infinite)"
    if ratio < MIN_INLIER_RATIO:
        return f"inlier ratio {ratio:.2f} < {MIN_INLIER_RATIO}: the pointmap fits no single camera"
    if med > limit:
        return f"median reprojection residual {med:.3g} px > {limit:.3g} px"
    if front_fraction < MIN_FRONT_FRACTION:
        return f"only {front_fraction:.0%} of the points are in front of the camera"
    if not math.isfinite(camera_distance) or camera_distance > MAX_CAMERA_DISTANCE * scene_radius:
        return (f"camera centre {camera_distance:.3g} from camera 0, more than {MAX_CAMERA_DISTANCE:g}x the scene "
                f"radius {scene_radius:.3g}")
    return None


@dataclasses.dataclass
class CameraStatus:
    """The verdict on one registration (see module docstring)."""

    registered: np.ndarray        # (T,) bool
    reasons: list                 # (T,) str | None: why each frame was rejected
    intrinsics_source: str        # 'estimated' | 'fov_prior'
    intrinsics_reason: str | None  # why the estimate was rejected (fov_prior only)
    K: np.ndarray                 # (3, 3) what exports use: the estimate, or the prior
    K_estimate: np.ndarray | None  # (3, 3) the solver's estimate (kept for diagnosis), None if there was none
    image_size: tuple             # (H, W)

    @property
    def frames(self) -> int:
        return len(self.registered)

    @property
    def num_registered(self) -> int:
        return int(np.sum(self.registered))

    @property
    def state(self) -> str:
        """'registered' (every frame), 'partial' or 'failed' (no frame)."""
        n = self.num_registered
        return "registered" if n == self.frames else ("failed" if n == 0 else "partial")

    def message(self) -> str:
        """The one console line: ``cameras: 9/9 frames, focal 74.0 px`` or what failed and why."""
        t, n = self.frames, self.num_registered
        h, w = self.image_size
        if self.intrinsics_source == "fov_prior":
            return (f"cameras: {n}/{t} frames registered; {self.intrinsics_reason}, so no camera was recovered "
                    f"(exports use a {FOV_PRIOR_DEG:g} degree field-of-view prior); the pointmaps are not "
                    "consistent with one pinhole camera")
        focal = f"focal {self.K[0, 0]:.1f} px ({fov_deg(self.K[0, 0], w):.0f} degree field of view)"
        if n == t:
            return f"cameras: {t}/{t} frames, {focal}"
        bad = [i for i in range(t) if not self.registered[i]]
        return (f"cameras: {n}/{t} frames registered ({focal}); the pointmaps are not consistent across frames "
                f"(rejected: frames {', '.join(map(str, bad))}; first reason, frame {bad[0]}: "
                f"{self.reasons[bad[0]]})")

    def intrinsics_dict(self) -> dict:
        h, w = self.image_size
        out = {"source": self.intrinsics_source, "K": np.asarray(self.K).tolist(),
               "focal_px": float(self.K[0, 0]), "fov_x_deg": fov_deg(self.K[0, 0], w),
               "fov_y_deg": fov_deg(self.K[1, 1], h)}
        if self.intrinsics_source == "fov_prior":
            out["prior_fov_x_deg"] = FOV_PRIOR_DEG
            out["rejected_estimate"] = {
                "reason": self.intrinsics_reason,
                "K": None if self.K_estimate is None else [[finite_or_none(x) for x in row]
                                                           for row in np.asarray(self.K_estimate)]}
        return out

    def to_dict(self, frame_stats: list) -> dict:
        """JSON-ready summary (strict: no NaN/Infinity): state, counts, intrinsics, and per frame its status,
        reason and the numbers behind it."""
        frames = []
        for i, s in enumerate(frame_stats):
            f = {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in s.items()}
            f["status"] = "registered" if self.registered[i] else "rejected"
            f["reason"] = self.reasons[i]
            frames.append(f)
        return {"state": self.state, "frames": self.frames, "frames_registered": self.num_registered,
                "message": self.message(), "intrinsics": self.intrinsics_dict(),
                "thresholds": {"min_pairs": MIN_PAIRS, "min_inlier_ratio": MIN_INLIER_RATIO,
                               "inlier_floor_px": inlier_floor_px(*self.image_size),
                               "max_median_residual_px": max_residual_px(*self.image_size),
                               "min_front_fraction": MIN_FRONT_FRACTION,
                               "max_camera_distance_scene_radii": MAX_CAMERA_DISTANCE,
                               "fov_range_deg": list(FOV_RANGE_DEG)},
                "per_frame": frames}
