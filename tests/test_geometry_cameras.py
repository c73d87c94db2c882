"""Closed-form camera recovery from pointmaps (fourdnex_jax.geometry): exactness on clean synthetic maps,
tolerances on noisy/dynamic ones, and the building blocks (RQ, DLT, calibrated DLT)."""

import numpy as np
import pytest

from fourdnex_jax.geometry import cameras, register, synthetic


def _rand_pose(rng):
    r = cameras.project_to_so3(np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
    return r, rng.normal(size=3) * 0.5


def test_rq_and_dlt_decomposition_exact():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    r, t = _rand_pose(rng)
    X = rng.normal(size=(200, 3)) + [0, 0, 6]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:]
    k2, r2, t2 = cameras.decompose_projection(cameras.dlt_projection(X, uv))
    np.testing.assert_allclose(k2, K, atol=1e-6)
    np.testing.assert_allclose(r2, r, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-8)
    rc, tc = cameras.calibrated_dlt(np.concatenate([uv, np.ones((200, 1))], 1) @ np.linalg.inv(K).T, X)
    np.testing.assert_allclose(rc, r, atol=1e-9)
    np.testing.assert_allclose(tc, t, atol=1e-8)


def test_robust_pose_with_outliers():
    rng = np.random.default_rng(1)
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    r, t = _rand_pose(rng)
    X = rng.normal(size=(2000, 3)) + [0, 0, 5]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:] + rng.normal(size=(2000, 2)) * 0.3
    bad = rng.random(2000) < 0.3
    X[bad] += rng.normal(size=(bad.sum(), 3))
    res = cameras.robust_pose(K, X, uv, seed=0)
    assert cameras.rotation_angle_deg(res.R.T @ r) < 0.1
    assert np.linalg.norm(res.t - t) < 0.01
    assert (res.inliers[bad]).mean() < 0.1 and res.inliers[~bad].mean() > 0.9


@pytest.mark.parametrize("normalization", ["sequence", "reference"])
def test_clean_synthetic_exact(normalization):
    inp, tr = synthetic.pointmap_sequence(0, frames=6, height=36, width=48, normalization=normalization)
    kw = {"centers": tr["centers"], "scale": tr["scale"]} if normalization == "reference" else {}
    reg = register.register(inp["xyz"], inp["valid"], normalization=normalization, **kw)
    c2w = tr["c2w"].copy()
    if kw:
        c2w[:, :3, 3] *= tr["scale"]
    np.testing.assert_allclose(reg.K, tr["K"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reg.c2w, c2w, atol=1e-6)
    depth_scale = 1.0 if kw else tr["scale"]
    m = reg.valid
    np.testing.assert_allclose(reg.depth[m] * depth_scale, tr["depth"][m], rtol=1e-5)
    assert not reg.inconsistent.any()


def test_reference_normalization_without_centres_recovers_K_and_rotations():
    inp, tr = synthetic.pointmap_sequence(1, frames=6, height=36, width=48, normalization="reference")
    reg = register.register(inp["xyz"], inp["valid"], normalization="reference")
    np.testing.assert_allclose(reg.K, tr["K"], rtol=1e-6)
    rot = cameras.rotation_angle_deg(np.swapaxes(reg.c2w[:, :3, :3], 1, 2) @ tr["c2w"][:, :3, :3])
    assert rot.max() < 1e-5
    # frame 0 offset exactly recovered: its camera is the identity in the world frame
    np.testing.assert_allclose(reg.c2w[0], np.eye(4), atol=1e-9)


def test_noisy_dynamic_within_tolerance():
    inp, tr = synthetic.pointmap_sequence(2, frames=8, height=48, width=64, normalization="sequence", noise=0.005,
                                          dynamic_offset=0.1, outliers=0.01, seed=3)
    reg = register.register(inp["xyz"], inp["valid"], normalization="sequence")
    err = synthetic.pose_errors(reg.c2w, tr["c2w"])
    assert err["rot_deg_max"] < 0.3, err
    assert err["trans_rel_max"] < 0.01, err
    assert abs(reg.K[0, 0] - tr["K"][0, 0]) / tr["K"][0, 0] < 0.01
    # the displaced moving objects are flagged as inconsistent
    dyn = tr["dynamic"] & reg.valid
    assert reg.inconsistent[dyn].mean() > 0.5
    assert reg.inconsistent[reg.valid & ~tr["dynamic"]].mean() < 0.1


def _pairs(rng, n, K, r, t, noise=0.0, bad=0.0):
    X = rng.normal(size=(n, 3)) + [0, 0, 5]
    p = (X @ r.T + t) @ K.T
    uv = p[:, :2] / p[:, 2:] + rng.normal(size=(n, 2)) * noise
    out = rng.random(n) < bad
    X[out] += rng.normal(size=(int(out.sum()), 3))
    return X, uv


def test_p3p_exact_on_random_triples():
    rng = np.random.default_rng(4)
    b = 200
    r = cameras.project_to_so3(np.eye(3) + rng.normal(size=(b, 3, 3)))
    t = rng.normal(size=(b, 3))
    xc = rng.normal(size=(b, 3, 3)) + [0, 0, 6]  # camera-frame points
    xw = np.einsum("bji,bnj->bni", r, xc - t[:, None])  # world points with R xw + t = xc
    rs, ts, ok = cameras.p3p(xc / np.linalg.norm(xc, axis=-1, keepdims=True), xw)
    err = np.abs(rs - r[:, None]).max((-1, -2)) + np.abs(ts - t[:, None]).max(-1)
    best = np.where(ok, err, np.inf).min(1)
    assert np.quantile(best, 0.99) < 1e-8 and (best < 1e-6).mean() > 0.99


def test_masked_quantile_matches_sorting():
    rng = np.random.default_rng(5)
    e = rng.random((7, 40))
    mask = rng.random((7, 40)) < 0.6
    mask[0] = True
    for q in (0.3, 0.5):
        got = cameras.masked_quantile(e, mask, q)
        want = [np.sort(row[m])[int(q * m.sum())] for row, m in zip(e, mask)]
        np.testing.assert_array_equal(got, want)
    assert cameras.masked_median(e[:1], np.zeros((1, 40), bool))[0] == np.inf


def test_gauss_newton_converges_to_exact_pose():
    rng = np.random.default_rng(6)
    K = np.array([[300.0, 0, 160], [0, 310, 120], [0, 0, 1]])
    r, t = _rand_pose(rng)
    X, uv = _pairs(rng, 300, K, r, t)
    r0 = cameras.project_to_so3(r + 0.02 * rng.normal(size=(3, 3)))
    r1, t1 = cameras.gauss_newton_pose(K, r0, t + 0.05, X, uv, steps=6)
    np.testing.assert_allclose(r1, r, atol=1e-10)
    np.testing.assert_allclose(t1, t, atol=1e-10)
    r2, t2 = cameras.irls_pose(K, r0, t + 0.05, X, uv, iters=8)
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
    poses = [_rand_pose(rng) for _ in range(tt)]
    for i, (r, t) in enumerate(poses):
        X[i], uv[i] = _pairs(rng, n, Ks[i], r, t, noise=0.3, bad=0.25)
    valid = rng.random((tt, n)) < np.array([1.0, 0.9, 0.5, 0.3, 0.05])[:, None]  # 125 .. 2500 pairs
    init = (np.stack([p[0] for p in poses])[:, None], np.stack([p[1] for p in poses])[:, None] + 0.01)
    kw = dict(method=method, threshold=1.0 if method == "ransac" else None)
    res = cameras.robust_pose_batch(Ks, X, uv, valid, init=init, seeds=[3, 1, 4, 1, 5], **kw)
    for i in range(tt):
        one = cameras.robust_pose(Ks[i], X[i][valid[i]], uv[i][valid[i]], init=[(init[0][i, 0], init[1][i, 0])],
                                  seed=[3, 1, 4, 1, 5][i], **kw)
        np.testing.assert_allclose(res.R[i], one.R, atol=1e-12)
        np.testing.assert_allclose(res.t[i], one.t, atol=1e-12)
        np.testing.assert_array_equal(res.inliers[i][valid[i]], one.inliers)
        assert not res.inliers[i][~valid[i]].any()
        assert res.threshold[i] == pytest.approx(one.threshold) and res.source[i] == one.source
        assert res.median_error[i] == pytest.approx(one.median_error)
        assert cameras.rotation_angle_deg(one.R.T @ poses[i][0]) < 0.2


def test_calibrated_dlt_weights_and_robust_projection():
    rng = np.random.default_rng(8)
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    r, t = _rand_pose(rng)
    X, uv = _pairs(rng, 400, K, r, t)
    bad = np.arange(400) < 100
    X[bad] += 1.0
    b = np.concatenate([uv, np.ones((400, 1))], 1) @ np.linalg.inv(K).T
    rc, tc = cameras.calibrated_dlt(b, X, w=(~bad).astype(float))  # zero weight = left out
    np.testing.assert_allclose(rc, r, atol=1e-9)
    np.testing.assert_allclose(tc, t, atol=1e-8)
    P, inl = cameras.robust_projection(X, uv, seed=0)
    k2, r2, _ = cameras.decompose_projection(P)
    np.testing.assert_allclose(k2, K, atol=1e-5)
    assert inl[~bad].all() and not inl[bad].any()


def test_per_frame_intrinsics_clean_exact():
    inp, tr = synthetic.pointmap_sequence(0, frames=4, height=36, width=48, normalization="sequence")
    reg = register.register(inp["xyz"], inp["valid"], per_frame_intrinsics=True)
    np.testing.assert_allclose(reg.K_per_frame, np.broadcast_to(tr["K"], (4, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(reg.c2w, tr["c2w"], atol=1e-6)


def test_neighbour_fallback_repairs_a_wrong_frame():
    inp, tr = synthetic.pointmap_sequence(2, frames=6, height=36, width=48, normalization="sequence", noise=0.003)
    reg = register.register(inp["xyz"], inp["valid"])
    xg = inp["xyz"].reshape(6, -1, 3).astype(np.float64)
    vg = inp["valid"].reshape(6, -1)
    u, v = np.meshgrid(np.arange(48.0), np.arange(36.0))
    uvg = np.stack([u, v], -1).reshape(-1, 2)
    Ks = np.broadcast_to(reg.K, (6, 3, 3))
    w2c = np.linalg.inv(reg.c2w)
    res = cameras.robust_pose_batch(Ks[1:], xg[1:], uvg, vg[1:], seeds=np.arange(1, 6))
    good_r = res.R[2].copy()
    res.R[2] = cameras.project_to_so3(good_r + 0.3)  # a failed frame: far off, large median error
    res.median_error[2] = np.inf
    fixed = register._neighbour_fallback(res, Ks, xg, uvg, vg, (w2c[0, :3, :3], w2c[0, :3, 3]), 0, {})
    assert np.isfinite(fixed.median_error[2])
    assert cameras.rotation_angle_deg(fixed.R[2].T @ good_r) < 0.05
