"""Camera conventions and rigid motions (fourdnex_jax.geometry.se3): back-projection, projection, quaternions,
TUM trajectories, SE(3) inverse, look-at."""

import numpy as np

from fourdnex_jax.geometry import se3
from fourdnex_jax.geometry.intrinsics import intrinsics_matrix


def test_backproject_project_roundtrip():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (2, 6, 8))
    K = intrinsics_matrix([50.0, 60.0], [55.0, 40.0], [3.7, 4.1], [2.2, 2.9])
    pts = se3.backproject(depth, K)
    u, v, z = se3.project(pts, K)
    uu, vv = se3.pixel_grid(6, 8)
    np.testing.assert_allclose(u, np.broadcast_to(uu, u.shape), atol=1e-9)
    np.testing.assert_allclose(v, np.broadcast_to(vv, v.shape), atol=1e-9)
    np.testing.assert_allclose(z, depth)


def test_quaternions_and_tum():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(5, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.sign(q[:, :1])
    R = se3.quaternion_to_matrix(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(se3.matrix_to_quaternion(R), q, atol=1e-12)
    traj = np.concatenate([np.arange(5)[:, None], rng.normal(size=(5, 3)), q], 1)
    c2w = se3.tum_to_c2w(traj)
    np.testing.assert_allclose(c2w[:, :3, 3], traj[:, 1:4])
    rel = se3.relative_to_first(c2w)
    np.testing.assert_allclose(rel[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(se3.invert_se3(c2w) @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-12)


def test_look_at_is_opencv():
    c2w = se3.look_at(np.array([0.0, -1.0, -5.0]), np.array([0.0, -1.0, 0.0]))
    np.testing.assert_allclose(c2w[:3, :3], np.eye(3), atol=1e-12)  # looking along +z, y down, x right
