"""Synthetic scenes for tests and benchmarks: pointmap videos with exact ground truth, and annotation folders.

``pointmap_sequence`` (:func:`fourdnex_jax.data.synthetic.pointmap_sequence`, re-exported) renders a synthetic
scene as a model output would look, with its ground truth. :func:`pose_errors` compares two trajectories;
:func:`random_pose` and :func:`pose_pairs` make random 3D-2D pairs for the pose solvers.

The ``write_*`` functions write the 4DNeX-10M annotation layouts (exactly the formats the readers take) from a
rendered synthetic clip (:func:`fourdnex_jax.data.synthetic.generate_clip`'s arrays).
"""

from __future__ import annotations

import io
import os

import numpy as np
from etils import epath

from fourdnex_jax.data.captions import write_caption_csv as write_caption_csv
from fourdnex_jax.data.readers import monst3r
from fourdnex_jax.data.synthetic import pointmap_sequence as pointmap_sequence
from fourdnex_jax.geometry import se3
from fourdnex_jax.media import io as media_io


# -- pointmap videos with ground truth: fourdnex_jax.data.synthetic.pointmap_sequence (a product: the geometry
# evaluation runs on it) ----------------------------------------------------------------------------------------
def pose_errors(c2w_est: np.ndarray, c2w_true: np.ndarray) -> dict[str, float]:
    """Max rotation error (deg) and max translation error (relative to the true path's extent), no alignment
    (both trajectories (T, 4, 4) c2w are relative to camera 0 in the same units)."""
    rot = se3.rotation_angle_deg(np.swapaxes(c2w_est[:, :3, :3], 1, 2) @ c2w_true[:, :3, :3])
    extent = max(np.linalg.norm(c2w_true[:, :3, 3], axis=-1).max(), 1e-12)
    tr = np.linalg.norm(c2w_est[:, :3, 3] - c2w_true[:, :3, 3], axis=-1) / extent
    return {"rot_deg_max": float(rot.max()), "trans_rel_max": float(tr.max())}


def random_pose(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random world -> camera pose: R (3, 3) near the identity (a perturbation projected onto SO(3)), t (3,)."""
    r = se3.project_to_so3(np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
    return r, rng.normal(size=3) * 0.5


def pose_pairs(rng: np.random.Generator, n: int, K: np.ndarray, r: np.ndarray, t: np.ndarray, noise: float = 0.0,
               bad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random world points X (n, 3) about (0, 0, 5) and their pixels uv (n, 2) under K and the pose (r, t),
    with Gaussian pixel noise of ``noise`` px; a fraction ``bad`` of the points is then moved off its ray
    (unit Gaussian offsets: outliers)."""
    X = rng.normal(size=(n, 3)) + [0, 0, 5]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:] + rng.normal(size=(n, 2)) * noise
    out = rng.random(n) < bad
    X[out] += rng.normal(size=(int(out.sum()), 3))
    return X, uv


# -- annotation layouts -----------------------------------------------------------------------------------------
def write_monst3r(folder: str | os.PathLike, r: dict[str, np.ndarray], *, frames: str = "png",
                  masks: bool = True) -> epath.Path:
    """MonST3R folder: pred_traj.txt (TUM c2w), pred_intrinsics.txt (9 per line), frame_XXXX.npy (float16 depth),
    dynamic_mask_t.png, RGB as frame_XXXX.png (``frames='png'``) or ``{folder}.mp4`` next to it (``'mp4'``)."""
    folder = epath.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c2w = r["cam_c2w"]
    q = se3.matrix_to_quaternion(c2w[:, :3, :3])
    lines = [" ".join(f"{v:.10g}" for v in [i, *c2w[i, :3, 3], *q[i]]) for i in range(len(c2w))]
    (folder / monst3r.TRAJ).write_text("\n".join(lines) + "\n")
    (folder / monst3r.INTRINSICS).write_text(
        "\n".join(" ".join(f"{v:.10g}" for v in k.reshape(-1)) for k in r["intrinsics"]) + "\n")
    for i, d in enumerate(r["depths"]):
        buf = io.BytesIO()
        np.save(buf, d.astype(np.float16))
        (folder / monst3r.DEPTH.format(i)).write_bytes(buf.getvalue())
        if masks:
            media_io.write_png(folder / monst3r.MASK.format(i), r["dynamic_mask"][i])
        if frames == "png":
            media_io.write_png(folder / monst3r.FRAME.format(i), r["images"][i])
    if frames == "mp4":
        media_io.write_video(folder.parent / f"{folder.name}.mp4", r["images"])
    return folder


def _npz(path, **arrays) -> epath.Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    epath.Path(path).write_bytes(buf.getvalue())
    return epath.Path(path)


def write_megasam(path: str | os.PathLike, r: dict[str, np.ndarray]) -> epath.Path:
    """MegaSaM npz: images, depths, intrinsic (3, 3, shared), cam_c2w."""
    return _npz(path, images=r["images"], depths=r["depths"], intrinsic=r["intrinsics"][0], cam_c2w=r["cam_c2w"])


def write_dust3r(path: str | os.PathLike, r: dict[str, np.ndarray], *, with_images: bool = False) -> epath.Path:
    """DUSt3R npz: pts3d (T, H, W, 3) world points, poses (T, 4, 4) c2w (+ images when asked)."""
    extra = {"images": r["images"]} if with_images else {}
    return _npz(path, pts3d=r["xyz_world"], poses=r["cam_c2w"], **extra)
