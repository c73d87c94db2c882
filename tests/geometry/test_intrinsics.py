"""Intrinsics (fourdnex_jax.geometry.intrinsics): the 4DNeX quirk, the full DLT + RQ split, the robust DLT."""

import numpy as np

from fourdnex_jax.geometry import intrinsics
from fourdnex_jax.testing.scenes import pose_pairs, random_pose


def test_reference_intrinsics_quirk():
    K = intrinsics.intrinsics_matrix(100.0, 80.0, 10.3, 7.9)
    R = intrinsics.reference_intrinsics(K[None], 15, 21)[0]
    assert (R[0, 0], R[1, 1], R[0, 2], R[1, 2]) == (100.0, 100.0, 10, 7)


def test_rq_and_dlt_decomposition_exact():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    r, t = random_pose(rng)
    X = rng.normal(size=(200, 3)) + [0, 0, 6]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:]
    k2, r2, t2 = intrinsics.decompose_projection(intrinsics.dlt_projection(X, uv))
    np.testing.assert_allclose(k2, K, atol=1e-6)
    np.testing.assert_allclose(r2, r, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-8)


def test_robust_projection_rejects_outliers():
    rng = np.random.default_rng(8)
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    r, t = random_pose(rng)
    X, uv = pose_pairs(rng, 400, K, r, t)
    bad = np.arange(400) < 100
    X[bad] += 1.0
    P, inl = intrinsics.robust_projection(X, uv, seed=0)
    k2, r2, _ = intrinsics.decompose_projection(P)
    np.testing.assert_allclose(k2, K, atol=1e-5)
    assert inl[~bad].all() and not inl[bad].any()
