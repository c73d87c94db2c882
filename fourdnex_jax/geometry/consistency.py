"""Is a registered pointmap video ONE 4D scene? The clip-level verdict next to the per-frame one.

:mod:`fourdnex_jax.geometry.status` judges every frame alone: does one pinhole camera explain this pointmap? That
passes a "video" whose frames come from different scenes, and a still frame repeated. This module asks what a 4D
scene must also satisfy, from the registration's own numbers (no ground truth):

* **agreement** between consecutive frames s = t-1 and t: frame s's points, moved into camera t by the recovered
  cameras, land on frame t's geometry. For every valid point of frame s that projects inside frame t onto a valid
  pixel q, compare its depth z in camera t with the depth z_q that frame t shows at q: *agree* if
  |z - z_q| <= :data:`DEPTH_TOL` z_q, *occluded* if it lies behind (z > z_q), *contradicting* if it lies in front
  (camera t should have seen it); given the frames' colours (a 6D video has them), an agreeing point must also keep
  its colour (:data:`COLOUR_TOL`): scenes of floor and sky are alike in geometry, not in colour. ``agreement`` =
  agreeing / all compared points (occluded ones count against: a
  different scene leaves about as many points behind as in front); moving objects contradict a little, so the
  bound :data:`MIN_AGREEMENT` is below 1.
  With the 4DNeX ``reference`` normalisation every frame is centred on its own bounding box, so frame s's points
  sit in frame t's coordinates up to an unknown translation; it is solved first (:func:`search_offset`, a coarse to
  fine search for the translation most points agree with: a consistent pair has one; frames of other scenes none).
* **a moving camera or a moving scene**: a video whose cameras do not move (every step under
  :data:`STILL_ROTATION_DEG` and :data:`STILL_TRANSLATION` scene radii) and whose points do not move either (fewer
  than :data:`MIN_MOVING_FRACTION` of the compared points contradict) is a still image, not a 4D scene.
* **plausible motion**: no step turns the camera by more than :data:`MAX_STEP_ROTATION_DEG`.

Thresholds are measured on the synthetic held-out scenes (truth, truth + noise, frames of other scenes, frozen
frames, model outputs): ``python -m benchmarks.consistency_verdict`` prints the table; docs/tiny_model.md records it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fourdnex_jax.geometry import se3

DEPTH_TOL = 0.05              # relative depth difference of an agreeing point
COLOUR_TOL = 0.1              # mean absolute RGB difference (range 1) of an agreeing point, when colours are given
MIN_AGREEMENT = 0.6           # per consecutive pair (truth + noise 0.01: >= 0.76; frames of other scenes: <= 0.47)
MAX_STEP_ROTATION_DEG = 30.0  # per frame step
STILL_ROTATION_DEG = 0.2      # a step under both of these is no camera motion
STILL_TRANSLATION = 0.01      # in scene radii
MIN_MOVING_FRACTION = 0.01    # of the compared points: less is no scene motion
TIE_BREAK = 0.1               # weight of the exact-match score that breaks ties of the agreement count
#: (half range, step) of each round of the offset search, in normalised units (the reference normalisation maps
#: the scene into [-1, 1]; consecutive frames' centres move by up to ~0.2 there on the synthetic orbits)
SEARCH = ((0.4, 0.05), (0.05, 0.0125), (0.0125, 0.003125))


@dataclasses.dataclass
class ClipVerdict:
    """The clip-level verdict (module docstring). Pairs are (t-1, t) for t = 1..T-1."""

    consistent: bool
    reason: str | None                 # why not, or None
    frames: int
    frames_registered: int
    agreement: list                    # (T-1,) float | None (a pair with an unregistered frame: None)
    contradicting: list                # (T-1,) float | None: fraction of compared points in front
    compared: list                     # (T-1,) int: points compared
    step_rotation_deg: list            # (T-1,) relative rotation of each step
    step_translation: list             # (T-1,) camera centre step / scene radius
    offsets: list                      # (T-1, 3) the translations solved per pair (0 without ICP)

    def message(self) -> str:
        """The one console line: ``4D: consistent, 9/9 frames registered, ...`` or ``not a consistent 4D scene:
        ...``."""
        if self.consistent:
            worst = min(a for a in self.agreement if a is not None) if self.agreement else 1.0
            return (f"4D: consistent, {self.frames_registered}/{self.frames} frames registered, consecutive frames "
                    f"agree on >= {worst:.0%} of their points")
        return f"not a consistent 4D scene: {self.reason}"

    def to_dict(self) -> dict:
        def r(x, n=4):
            return None if x is None else round(float(x), n)

        return {"consistent": self.consistent, "reason": self.reason, "message": self.message(),
                "frames": self.frames, "frames_registered": self.frames_registered,
                "pairs": [{"frames": [t, t + 1], "agreement": r(a), "contradicting": r(c), "compared": int(n),
                           "rotation_deg": r(rot, 3), "translation_scene_radii": r(tr), "offset": [r(v, 5) for v in o]}
                          for t, (a, c, n, rot, tr, o) in enumerate(zip(
                              self.agreement, self.contradicting, self.compared, self.step_rotation_deg,
                              self.step_translation, self.offsets))],
                "thresholds": {"depth_tol": DEPTH_TOL, "min_agreement": MIN_AGREEMENT,
                               "max_step_rotation_deg": MAX_STEP_ROTATION_DEG,
                               "still_rotation_deg": STILL_ROTATION_DEG, "still_translation": STILL_TRANSLATION,
                               "min_moving_fraction": MIN_MOVING_FRACTION}}


def _project(pc: np.ndarray, K: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera coordinates (..., 3) -> (row (...) int, column (...) int, inside (...) bool), nearest pixel."""
    z = pc[..., 2]
    zs = np.where(z > 1e-9, z, 1.0)
    qu = np.rint(K[0, 0] * pc[..., 0] / zs + K[0, 2])
    qv = np.rint(K[1, 1] * pc[..., 1] / zs + K[1, 2])
    inside = (z > 1e-9) & (qu >= 0) & (qu < w) & (qv >= 0) & (qv < h)
    return np.where(inside, qv, 0).astype(np.int64), np.where(inside, qu, 0).astype(np.int64), inside


def window_depth_range(depth: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of the valid depths in each pixel's 3 x 3 window ((H, W) each; +inf / -inf where the window has
    no valid pixel). A point agrees with a frame when its depth is within the tolerance of this range: the window
    absorbs the rounding of a projection to one pixel on steep surfaces (a floor seen at a grazing angle)."""
    from scipy import ndimage

    lo = ndimage.minimum_filter(np.where(ok, depth, np.inf), size=3, mode="nearest")
    hi = ndimage.maximum_filter(np.where(ok, depth, -np.inf), size=3, mode="nearest")
    return lo, hi


def _window_gap(z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Relative distance of depths ``z`` from the window ranges [lo, hi] (0 inside)."""
    with np.errstate(invalid="ignore"):
        gap = np.maximum(np.maximum(lo - z, z - hi), 0.0)
    return gap / np.maximum(z, 1e-9)


def compare_pair(src_cam: np.ndarray, src_ok: np.ndarray, dst_depth: np.ndarray, dst_ok: np.ndarray, K: np.ndarray,
                 offset: np.ndarray, src_rgb: np.ndarray | None = None, dst_rgb: np.ndarray | None = None) -> dict:
    """Frame s's points in camera t's coordinates ``src_cam`` (N, 3) moved by ``-offset`` (3,), against the depth
    frame t shows, ``dst_depth`` (H, W) (valid where ``dst_ok`` (H, W)). A point is compared when it projects inside
    frame t onto a valid pixel; it agrees when its depth lies within :data:`DEPTH_TOL` of the depths of that pixel's
    3 x 3 window (:func:`window_depth_range`) and, with colours (``src_rgb`` (N, 3), ``dst_rgb`` (H, W, 3) in
    [0, 1]), one pixel of that window shows its colour within :data:`COLOUR_TOL` (mean absolute difference over the
    channels); otherwise it is in front / behind by its own pixel. Returns the counts ``compared``, ``agree``,
    ``front``, ``behind``."""
    h, w = dst_depth.shape
    lo, hi = window_depth_range(dst_depth, dst_ok)
    pc = src_cam - offset
    qv, qu, inside = _project(pc, K, h, w)
    inside &= src_ok & dst_ok[qv, qu]
    z, qv, qu = pc[inside, 2], qv[inside], qu[inside]
    agree = _window_gap(z, lo[qv, qu], hi[qv, qu]) <= DEPTH_TOL
    if src_rgb is not None and dst_rgb is not None:
        col = np.asarray(src_rgb, np.float64)[inside]
        best = np.full(len(z), np.inf)
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                v2, u2 = np.clip(qv + dv, 0, h - 1), np.clip(qu + du, 0, w - 1)
                best = np.minimum(best, np.abs(dst_rgb[v2, u2] - col).mean(-1))
        agree &= best <= COLOUR_TOL
    front = z < dst_depth[qv, qu]
    return {"compared": int(inside.sum()), "agree": int(agree.sum()), "front": int((~agree & front).sum()),
            "behind": int((~agree & ~front).sum())}


def search_offset(src_cam: np.ndarray, src_ok: np.ndarray, dst_depth: np.ndarray, dst_ok: np.ndarray, K: np.ndarray,
                  sample: int = 600, seed: int = 0) -> np.ndarray:
    """The translation (3,) in camera t's coordinates that makes the most of frame s's points (``src_cam`` (N, 3))
    agree with frame t's depth (:func:`compare_pair`'s test): a grid search, coarse to fine (:data:`SEARCH`), on a
    fixed random sample of the points. The count is flat over a small plateau around the answer (the tolerance),
    so ties are broken by how exactly the points match at their own pixel (:data:`TIE_BREAK`). The reference
    normalisation's per-frame centring leaves a translation along a dominant floor nearly unconstrained for local
    methods (ICP settles near zero); a search over the whole range finds the one the objects and the sky agree
    with."""
    h, w = dst_depth.shape
    idx = np.flatnonzero(src_ok)
    if len(idx) < 10:
        return np.zeros(3)
    idx = np.random.default_rng(seed).choice(idx, min(sample, len(idx)), replace=False)
    pts = src_cam[idx]
    lo, hi = window_depth_range(dst_depth, dst_ok)
    centre = np.zeros(3)
    for half, step in SEARCH:
        g = np.arange(-half, half + step / 2, step)
        cand = centre + np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)  # (C, 3)
        score = np.zeros(len(cand))
        for k in range(0, len(cand), 512):  # bounded memory: 512 x sample points at a time
            pc = pts[None] - cand[k:k + 512, None]
            qv, qu, inside = _project(pc, K, h, w)
            ok = inside & dst_ok[qv, qu]
            z, zq = pc[..., 2], dst_depth[qv, qu]
            hard = ok & (_window_gap(z, lo[qv, qu], hi[qv, qu]) <= DEPTH_TOL)
            soft = np.where(ok, np.clip(1 - np.abs(z - zq) / (DEPTH_TOL * np.maximum(zq, 1e-9)), 0, None), 0)
            score[k:k + 512] = hard.sum(1) + TIE_BREAK * soft.sum(1)
        centre = cand[int(np.argmax(score))]
    return centre


def clip_verdict(points: np.ndarray, point_ok: np.ndarray, c2w: np.ndarray, Ks: np.ndarray, registered: np.ndarray,
                 h: int, w: int, solve_offsets: bool, rgb: np.ndarray | None = None) -> ClipVerdict:
    """The verdict of one registration: ``points`` (T, N, 3) each frame's points in the world frame (as the
    registration solved their cameras), ``point_ok`` (T, N) the usable ones (in front of their camera), ``c2w``
    (T, 4, 4), ``Ks`` (T, 3, 3), ``registered`` (T,) the per-frame verdict; ``solve_offsets``: frames carry unknown
    per-frame translations (the reference normalisation); ``rgb`` (T, N, 3) the frames' colours (uint8, or floats in
    [0, 1]) or None: agreeing points must then also keep their colour."""
    if rgb is not None:
        rgb = np.asarray(rgb)
        rgb = rgb / 255.0 if rgb.dtype == np.uint8 else np.asarray(rgb, np.float64)
        if rgb.size and not 0.0 <= float(np.nanmin(rgb)) <= float(np.nanmax(rgb)) <= 1.0:
            # colours in other units (floats in [0, 255]) would fail every colour check and read as "no agreement"
            raise ValueError(f"rgb must be uint8 or floats in [0, 1]; got {rgb.dtype} in "
                             f"[{float(np.nanmin(rgb)):g}, {float(np.nanmax(rgb)):g}]")
    tt = points.shape[0]
    registered = np.asarray(registered, bool)
    w2c = se3.invert_se3(c2w)
    n0 = point_ok[0].sum()
    radius = float(np.percentile(np.linalg.norm(points[0][point_ok[0]] - points[0][point_ok[0]].mean(0), axis=-1),
                                 98)) if n0 else float("nan")
    agreement, contra, compared, rots, trans, offs = [], [], [], [], [], []
    for t in range(1, tt):
        rel = w2c[t, :3, :3] @ c2w[t - 1, :3, :3]
        rots.append(float(np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1.0, 1.0)))))
        if not (registered[t - 1] and registered[t]):
            agreement.append(None), contra.append(None), compared.append(0), offs.append([0.0, 0.0, 0.0])
            trans.append(None)
            continue
        src_cam = points[t - 1] @ w2c[t, :3, :3].T + w2c[t, :3, 3]  # frame t-1's points in camera t
        dst_cam = points[t] @ w2c[t, :3, :3].T + w2c[t, :3, 3]
        depth = np.where(point_ok[t], dst_cam[:, 2], 0.0).reshape(h, w)
        ok_t = point_ok[t].reshape(h, w)
        off_cam = search_offset(src_cam, point_ok[t - 1], depth, ok_t, Ks[t]) if solve_offsets else np.zeros(3)
        offset = off_cam @ w2c[t, :3, :3]  # camera t -> world (rotation only)
        c = compare_pair(src_cam, point_ok[t - 1], depth, ok_t, Ks[t], off_cam,
                         *((rgb[t - 1], rgb[t].reshape(h, w, 3)) if rgb is not None else ()))
        n = max(c["compared"], 1)
        agreement.append(c["agree"] / n)
        contra.append(c["front"] / n)
        compared.append(c["compared"])
        offs.append(offset.tolist())
        # the camera step with the solved translation: centre t vs centre t-1 moved into frame t's coordinates
        trans.append(float(np.linalg.norm(c2w[t, :3, 3] - (c2w[t - 1, :3, 3] - offset)) / radius)
                     if math.isfinite(radius) and radius > 0 else None)
    n_reg = int(registered.sum())
    reason = None
    if tt < 2:
        reason = "a single frame has no time"
    elif n_reg < tt:
        bad = [i for i in range(tt) if not registered[i]]
        reason = f"{tt - n_reg}/{tt} frames have no camera (frames {', '.join(map(str, bad))})"
    else:
        low = [(t, a) for t, a in enumerate(agreement) if a < MIN_AGREEMENT]
        jumps = [(t, r) for t, r in enumerate(rots) if r > MAX_STEP_ROTATION_DEG]
        still = all(r < STILL_ROTATION_DEG for r in rots) and all(
            tr is not None and tr < STILL_TRANSLATION for tr in trans)
        if low:
            t, a = min(low, key=lambda x: x[1])
            reason = (f"consecutive frames disagree: frames {t}-{t + 1} agree on {a:.0%} of their points (need "
                      f">= {MIN_AGREEMENT:.0%}; {len(low)} of {tt - 1} pairs below)")
        elif jumps:
            t, r = max(jumps, key=lambda x: x[1])
            reason = (f"the camera jumps {r:.0f} degrees between frames {t} and {t + 1} (at most "
                      f"{MAX_STEP_ROTATION_DEG:g})")
        elif still and max(contra) < MIN_MOVING_FRACTION:
            reason = "nothing moves: the camera is still and no point moves (a still image, not a 4D scene)"
    return ClipVerdict(consistent=reason is None, reason=reason, frames=tt, frames_registered=n_reg,
                       agreement=agreement, contradicting=contra, compared=compared, step_rotation_deg=rots,
                       step_translation=trans, offsets=offs)
