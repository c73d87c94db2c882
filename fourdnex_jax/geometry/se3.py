"""Camera conventions and rigid motions: pixel grids, projection and back-projection, SE(3) transforms, rotations,
quaternions, TUM trajectories and look-at cameras (NumPy, float64 in, float64 out unless stated).

Conventions (fixed once for the whole package, and for the data layer that reads it):
  * OpenCV camera: x right, y down, z forward; depth = z in the camera frame.
  * Pixel centres at integer coordinates: pixel (row v, column u) is the point (u, v); the image spans
    [-0.5, W - 0.5] x [-0.5, H - 0.5].
  * Intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in those pixel units, one (3, 3) per frame
    (:mod:`fourdnex_jax.geometry.intrinsics`).
  * Trajectories are camera-to-world (``c2w``) 4x4 matrices, one per frame; ``X_world = c2w @ X_cam``. ``w2c``
    maps world points into the camera (``x_cam = R X + t``).
  * "First-camera frame": world re-expressed so that frame 0's camera is the identity,
    ``X_cam0 = inv(c2w[0]) @ X_world`` and ``rel_c2w[t] = inv(c2w[0]) @ c2w[t]`` (4DNeX's target frame).

All functions work on whole clips at once.
"""

from __future__ import annotations

import numpy as np


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel-centre coordinates, each (H, W) float64: u = column index, v = row index."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    return u, v


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Depth (T, H, W) and intrinsics (T, 3, 3) or (3, 3) -> camera-frame points (T, H, W, 3) float64.

    ``X = (u - cx) / fx * d, Y = (v - cy) / fy * d, Z = d`` with the full intrinsics (pixel centres at integers)."""
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 3:
        raise ValueError(f"depth must be (T, H, W), got {depth.shape}")
    t, h, w = depth.shape
    K = np.broadcast_to(np.asarray(K, np.float64), (t, 3, 3))
    u, v = pixel_grid(h, w)
    fx, fy, cx, cy = (K[:, i, j][:, None, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=-1)


def project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame points (..., 3) -> pixel (u, v) and depth z. K is one (3, 3), or (T, 3, 3) for points
    (T, ..., 3)."""
    p = np.asarray(points_cam, np.float64)
    K = np.asarray(K, np.float64)
    if K.ndim == 3:
        K = K.reshape((K.shape[0],) + (1,) * (p.ndim - 2) + (3, 3))
    z = p[..., 2]
    u = K[..., 0, 0] * p[..., 0] / z + K[..., 0, 2]
    v = K[..., 1, 1] * p[..., 1] / z + K[..., 1, 2]
    return u, v, z


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies 4x4 transforms (T, 4, 4) (or one (4, 4)) to points (T, H, W, 3) (or (..., 3) for one transform)."""
    T = np.asarray(T, np.float64)
    p = np.asarray(points, np.float64)
    if T.ndim == 2:
        return p @ T[:3, :3].T + T[:3, 3]
    r, t = T[:, :3, :3], T[:, :3, 3]
    flat = p.reshape(p.shape[0], -1, 3)
    out = flat @ np.swapaxes(r, 1, 2) + t[:, None, :]  # batched BLAS matmul (much faster than einsum here)
    return out.reshape(p.shape)


def invert_se3(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms (..., 4, 4) via the transpose of the rotation (exact for rotations)."""
    T = np.asarray(T, np.float64)
    r, t = T[..., :3, :3], T[..., :3, 3]
    out = np.zeros_like(T)
    rt = np.swapaxes(r, -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, t)
    out[..., 3, 3] = 1.0
    return out


def project_to_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation(s) (Frobenius) to (..., 3, 3) matrices with positive determinant."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def rotation_angle_deg(r: np.ndarray) -> np.ndarray:
    """Angle(s) in degrees of rotation matrices (..., 3, 3)."""
    c = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def relative_to_first(c2w: np.ndarray) -> np.ndarray:
    """(T, 4, 4) camera-to-world -> poses relative to camera 0: ``inv(c2w[0]) @ c2w[t]`` (frame 0 = identity).

    Uses a general inverse for ``c2w[0]`` so that non-rigid (scaled) annotation poses are handled too."""
    c2w = np.asarray(c2w, np.float64)
    return np.linalg.inv(c2w[0])[None] @ c2w


def quaternion_to_matrix(q_wxyz: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) as (qw, qx, qy, qz) -> rotation matrices (..., 3, 3). Normalises first."""
    q = np.asarray(q_wxyz, np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError("zero-length quaternion")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) (qw, qx, qy, qz) with qw >= 0 (for writing TUM)."""
    R = np.asarray(R, np.float64)
    m = R.reshape(-1, 3, 3)
    out = np.zeros((m.shape[0], 4))
    for i, r in enumerate(m):  # Shepperd's method, branch per matrix (only used for small files / tests)
        tr = np.trace(r)
        if tr > 0:
            s = np.sqrt(tr + 1.0) * 2
            q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
            s = np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
            q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
        elif r[1, 1] > r[2, 2]:
            s = np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
            q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
        else:
            s = np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
            q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
        q = np.asarray(q)
        out[i] = q if q[0] >= 0 else -q
    return out.reshape(R.shape[:-2] + (4,))


def tum_to_c2w(traj: np.ndarray) -> np.ndarray:
    """TUM rows (T, 8) ``id tx ty tz qw qx qy qz`` (MonST3R's ``pred_traj.txt`` order) -> (T, 4, 4) c2w."""
    traj = np.asarray(traj, np.float64)
    if traj.ndim != 2 or traj.shape[1] != 8:
        raise ValueError(f"TUM trajectory must be (T, 8) 'id tx ty tz qw qx qy qz', got {traj.shape}")
    c2w = np.tile(np.eye(4), (traj.shape[0], 1, 1))
    c2w[:, :3, :3] = quaternion_to_matrix(traj[:, 4:8])
    c2w[:, :3, 3] = traj[:, 1:4]
    return c2w


def look_at(position: np.ndarray, target: np.ndarray, down=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV c2w (…, 4, 4) of cameras at ``position`` (…, 3) looking at ``target``; ``down`` = world "down"."""
    position = np.asarray(position, np.float64)
    z = np.asarray(target, np.float64) - position
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(np.broadcast_to(np.asarray(down, np.float64), z.shape), z)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    c2w = np.zeros(position.shape[:-1] + (4, 4))
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, position
    c2w[..., 3, 3] = 1.0
    return c2w
