"""Camera poses from 3D-2D pairs (fourdnex_jax.geometry.pose): calibrated DLT, P3P, Gauss-Newton, and the robust
batched solver (equal to the per-frame one, robust to outliers)."""

import numpy as np
import pytest

from fourdnex_jax.geometry import pose, se3
from fourdnex_jax.testing.scenes import pose_pairs, random_pose


def test_calibrated_dlt_exact():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    r, t = random_pose(rng)
    X = rng.normal(size=(200, 3)) + [0, 0, 6]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:]
    rc, tc = pose.calibrated_dlt(np.concatenate([uv, np.ones((200, 1))], 1) @ np.linalg.inv(K).T, X)
    np.testing.assert_allclose(rc, r, atol=1e-9)
    np.testing.assert_allclose(tc, t, atol=1e-8)


def test_calibrated_dlt_weights():
    rng = np.random.default_rng(8)
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    r, t = random_pose(rng)
    X, uv = pose_pairs(rng, 400, K, r, t)
    bad = np.arange(400) < 100
    X[bad] += 1.0
    b = np.concatenate([uv, np.ones((400, 1))], 1) @ np.linalg.inv(K).T
    rc, tc = pose.calibrated_dlt(b, X, w=(~bad).astype(float))  # zero weight = left out
    np.testing.assert_allclose(rc, r, atol=1e-9)
    np.testing.assert_allclose(tc, t, atol=1e-8)


def test_robust_pose_with_outliers():
    rng = np.random.default_rng(1)
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    r, t = random_pose(rng)
    X = rng.normal(size=(2000, 3)) + [0, 0, 5]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:] + rng.normal(size=(2000, 2)) * 0.3
    bad = rng.random(2000) < 0.3
    X[bad] += rng.normal(size=(bad.sum(), 3))
    res = pose.robust_pose(K, X, uv, seed=0)
    assert se3.rotation_angle_deg(res.R.T @ r) < 0.1
    assert np.linalg.norm(res.t - t) < 0.01
    assert (res.inliers[bad]).mean() < 0.1 and res.inliers[~bad].mean() > 0.9


def test_p3p_exact_on_random_triples():
    rng = np.random.default_rng(4)
    b = 200
    r = se3.project_to_so3(np.eye(3) + rng.normal(size=(b, 3, 3)))
    t = rng.normal(size=(b, 3))
    xc = rng.normal(size=(b, 3, 3)) + [0, 0, 6]  # camera-frame points
    xw = np.einsum("bji,bnj->bni", r, xc - t[:, None])  # world points with R xw + t = xc
    rs, ts, ok = pose.p3p(xc / np.linalg.norm(xc, axis=-1, keepdims=True), xw)
    err = np.abs(rs - r[:, None]).max((-1, -2)) + np.abs(ts - t[:, None]).max(-1)
    best = np.where(ok, err, np.inf).min(1)
    assert np.quantile(best, 0.99) < 1e-8 and (best < 1e-6).mean() > 0.99


def test_gauss_newton_converges_to_exact_pose():
    rng = np.random.default_rng(6)
    K = np.array([[300.0, 0, 160], [0, 310, 120], [0, 0, 1]])
    r, t = random_pose(rng)
    X, uv = pose_pairs(rng, 300, K, r, t)
    r0 = se3.project_to_so3(r + 0.02 * rng.normal(size=(3, 3)))
    r1, t1 = pose.gauss_newton_pose(K, r0, t + 0.05, X, uv, steps=6)
    np.testing.assert_allclose(r1, r, atol=1e-10)
    np.testing.assert_allclose(t1, t, atol=1e-10)
    r2, t2 = pose.irls_pose(K, r0, t + 0.05, X, uv, iters=8)
    np.testing.assert_allclose(r2, r, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)


@pytest.mark.parametrize("method", ["lmeds", "ransac"])
def test_batched_poses_equal_per_frame(method):
    """All frames in one vectorised pass = one call per frame with the same seed (different valid counts, per-frame
    K, an init hypothesis for some frames)."""
    rng = np.random.default_rng(7)
    tt, n = 5, 2500
    Ks = np.stack([np.array([[300.0 + 10 * i, 0, 160], [0, 300 + 10 * i, 120], [0, 0, 1]]) for i in range(tt)])
    X = np.zeros((tt, n, 3))
    uv = np.zeros((tt, n, 2))
    poses = [random_pose(rng) for _ in range(tt)]
    for i, (r, t) in enumerate(poses):
        X[i], uv[i] = pose_pairs(rng, n, Ks[i], r, t, noise=0.3, bad=0.25)
    valid = rng.random((tt, n)) < np.array([1.0, 0.9, 0.5, 0.3, 0.05])[:, None]  # 125 .. 2500 pairs
    init = (np.stack([p[0] for p in poses])[:, None], np.stack([p[1] for p in poses])[:, None] + 0.01)
    kw = dict(method=method, threshold=1.0 if method == "ransac" else None)
    res = pose.robust_pose_batch(Ks, X, uv, valid, init=init, seeds=[3, 1, 4, 1, 5], **kw)
    for i in range(tt):
        one = pose.robust_pose(Ks[i], X[i][valid[i]], uv[i][valid[i]], init=[(init[0][i, 0], init[1][i, 0])],
                               seed=[3, 1, 4, 1, 5][i], **kw)
        np.testing.assert_allclose(res.R[i], one.R, atol=1e-12)
        np.testing.assert_allclose(res.t[i], one.t, atol=1e-12)
        np.testing.assert_array_equal(res.inliers[i][valid[i]], one.inliers)
        assert not res.inliers[i][~valid[i]].any()
        assert res.threshold[i] == pytest.approx(one.threshold) and res.source[i] == one.source
        assert res.median_error[i] == pytest.approx(one.median_error)
        assert se3.rotation_angle_deg(one.R.T @ poses[i][0]) < 0.2
