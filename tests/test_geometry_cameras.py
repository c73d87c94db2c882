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
