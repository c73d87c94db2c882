"""Closed-form registration of pointmap videos (fourdnex_jax.geometry.register): exactness on clean synthetic maps,
tolerances on noisy/dynamic ones, per-frame intrinsics and the neighbour fallback."""

import numpy as np
import pytest

from fourdnex_jax.geometry import pose, register, se3
from fourdnex_jax.testing import scenes


@pytest.mark.parametrize("normalization", ["sequence", "reference"])
def test_clean_synthetic_exact(normalization):
    inp, tr = scenes.pointmap_sequence(0, frames=6, height=36, width=48, normalization=normalization)
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
    inp, tr = scenes.pointmap_sequence(1, frames=6, height=36, width=48, normalization="reference")
    reg = register.register(inp["xyz"], inp["valid"], normalization="reference")
    np.testing.assert_allclose(reg.K, tr["K"], rtol=1e-6)
    rot = se3.rotation_angle_deg(np.swapaxes(reg.c2w[:, :3, :3], 1, 2) @ tr["c2w"][:, :3, :3])
    assert rot.max() < 1e-5
    # frame 0 offset exactly recovered: its camera is the identity in the world frame
    np.testing.assert_allclose(reg.c2w[0], np.eye(4), atol=1e-9)


def test_noisy_dynamic_within_tolerance():
    inp, tr = scenes.pointmap_sequence(2, frames=8, height=48, width=64, normalization="sequence", noise=0.005,
                                       dynamic_offset=0.1, outliers=0.01, seed=3)
    reg = register.register(inp["xyz"], inp["valid"], normalization="sequence")
    err = scenes.pose_errors(reg.c2w, tr["c2w"])
    assert err["rot_deg_max"] < 0.3, err
    assert err["trans_rel_max"] < 0.01, err
    assert abs(reg.K[0, 0] - tr["K"][0, 0]) / tr["K"][0, 0] < 0.01
    # the displaced moving objects are flagged as inconsistent
    dyn = tr["dynamic"] & reg.valid
    assert reg.inconsistent[dyn].mean() > 0.5
    assert reg.inconsistent[reg.valid & ~tr["dynamic"]].mean() < 0.1


def test_per_frame_intrinsics_clean_exact():
    inp, tr = scenes.pointmap_sequence(0, frames=4, height=36, width=48, normalization="sequence")
    reg = register.register(inp["xyz"], inp["valid"], per_frame_intrinsics=True)
    np.testing.assert_allclose(reg.K_per_frame, np.broadcast_to(tr["K"], (4, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(reg.c2w, tr["c2w"], atol=1e-6)


def test_neighbour_fallback_repairs_a_wrong_frame():
    inp, tr = scenes.pointmap_sequence(2, frames=6, height=36, width=48, normalization="sequence", noise=0.003)
    reg = register.register(inp["xyz"], inp["valid"])
    xg = inp["xyz"].reshape(6, -1, 3).astype(np.float64)
    vg = inp["valid"].reshape(6, -1)
    u, v = np.meshgrid(np.arange(48.0), np.arange(36.0))
    uvg = np.stack([u, v], -1).reshape(-1, 2)
    Ks = np.broadcast_to(reg.K, (6, 3, 3))
    w2c = np.linalg.inv(reg.c2w)
    res = pose.robust_pose_batch(Ks[1:], xg[1:], uvg, vg[1:], seeds=np.arange(1, 6))
    good_r = res.R[2].copy()
    res.R[2] = se3.project_to_so3(good_r + 0.3)  # a failed frame: far off, large median error
    res.median_error[2] = np.inf
    fixed = register._neighbour_fallback(res, Ks, xg, uvg, vg, (w2c[0, :3, :3], w2c[0, :3, 3]), 0, {})
    assert np.isfinite(fixed.median_error[2])
    assert se3.rotation_angle_deg(fixed.R[2].T @ good_r) < 0.05
