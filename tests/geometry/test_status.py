"""Honest geometry (fourdnex_jax.geometry.status through scene.postprocess_scene): pointmaps that cannot be
registered give strict JSON, no non-positive focal, no empty PLY and a clear status; clean synthetic maps still
register every frame with the true focal; every --anchor option survives non-finite points."""

import json

import numpy as np
import pytest

from fourdnex_jax.geometry import exports, register, scene, status
from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.testing import scenes


def _strict(path):
    def bad(token):
        raise AssertionError(f"{path}: non-strict JSON constant {token}")
    return json.loads(path.read_text(), parse_constant=bad)


def _check_exports(out, t, registered):
    cams = _strict(out / "cameras.json")
    # transforms.json only when a camera is a result (nerfstudio cannot read one without frames)
    tf = _strict(out / "transforms.json") if any(registered) else None
    assert (out / "transforms.json").exists() == any(registered)
    g = exports.read_glb_json(out / "scene.glb")
    for K in [np.asarray(cams["K"])] + ([np.array([[tf["fl_x"]], [tf["fl_y"]]])] if tf else []):
        assert (K[:2].diagonal() if K.shape == (3, 3) else K.ravel()).min() > 0
    yfov = g["cameras"][0]["perspective"]["yfov"]
    assert 0 < yfov < np.pi
    lo, hi = status.FOV_RANGE_DEG
    assert lo <= cams["intrinsics"]["fov_x_deg"] <= hi
    for i in range(t):  # the point clouds never depend on a pose
        p, _ = exports.read_ply(out / "ply" / f"frame_{i:05d}.ply")
        assert len(p) > 0, i
    flags = [f["status"] == "registered" for f in cams["frames"]]
    assert flags == list(registered)
    assert [c is not None for c in cams["cam_to_world"]] == list(registered)
    if tf is not None:
        assert len(tf["frames"]) == sum(registered) and len(tf["rejected_frames"]) == t - sum(registered)
    assert sum(n["name"].startswith("camera_0") for n in g["nodes"]) == sum(registered)
    with np.load(out / "depth.npz") as z:
        np.testing.assert_array_equal(z["registered"], registered)
        for i in range(t):
            if not registered[i]:
                assert not z["valid"][i].any() and np.isnan(z["cam_to_world"][i]).all()
    return cams


def test_unregistrable_maps_are_reported_not_exported_as_results(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (6, 24, 32, 3)).astype(np.float32)  # independent random per-frame maps
    xyz[..., 2] = np.abs(xyz[..., 2]) + 0.1
    xyz[2, :3] = np.nan  # and some non-finite points
    summ = scene.postprocess_scene(xyz, None, None, "sequence", tmp_path / "out", viewer_points_per_frame=200)
    cams = _check_exports(tmp_path / "out", 6, [False] * 6)
    assert summ["state"] == "failed" and summ["frames_registered"] == 0 and summ["focal_px"] is None
    assert summ["message"].startswith("cameras: 0/6 frames registered;") and "prior" in summ["message"]
    assert cams["intrinsics"]["source"] == "fov_prior"
    assert cams["intrinsics"]["rejected_estimate"]["reason"]
    assert all(f["reason"] for f in cams["frames"])
    json.dumps(summ, allow_nan=False)  # what save_result writes into summary.json


def test_frames_that_fit_no_camera_are_rejected_with_their_numbers(tmp_path):
    inp, tr = scenes.pointmap_sequence(0, frames=6, height=24, width=32)
    xyz = inp["xyz"].copy()
    rng = np.random.default_rng(1)
    xyz[3:] = rng.uniform(-1, 1, xyz[3:].shape)  # frames 3..5 replaced by noise: K stays right
    xyz[3:, ..., 2] = np.abs(xyz[3:, ..., 2]) + 0.1
    summ = scene.postprocess_scene(xyz, inp["valid"], inp["rgb"], "sequence", tmp_path / "out", video=False)
    registered = [True, True, True, False, False, False]
    cams = _check_exports(tmp_path / "out", 6, registered)
    assert summ["state"] == "partial" and summ["message"].startswith("cameras: 3/6 frames registered")
    assert "not consistent across frames" in summ["message"]
    np.testing.assert_allclose(summ["focal_px"], tr["K"][0, 0], rtol=1e-6)
    for f in cams["frames"][3:]:
        assert f["status"] == "rejected" and f["reason"]
        assert f["median_residual_px"] is None or f["median_residual_px"] > status.max_residual_px(24, 32) or \
            f["inlier_ratio"] < status.MIN_INLIER_RATIO


@pytest.mark.parametrize("normalization", ["sequence", "reference"])
def test_clean_synthetic_maps_register_every_frame_with_the_true_focal(tmp_path, normalization):
    inp, tr = scenes.pointmap_sequence(0, frames=9, height=48, width=64, normalization=normalization)
    summ = scene.postprocess_scene(inp["xyz"], inp["valid"], inp["rgb"], normalization, tmp_path / "out",
                                   video=False, viewer_points_per_frame=500)
    _check_exports(tmp_path / "out", 9, [True] * 9)
    assert summ["state"] == "registered" and summ["frames_registered"] == 9
    np.testing.assert_allclose(summ["focal_px"], tr["K"][0, 0], rtol=1e-6)
    assert summ["message"] == f"cameras: 9/9 frames, focal {tr['K'][0, 0]:.1f} px " \
                              f"({status.fov_deg(tr['K'][0, 0], 64):.0f} degree field of view)"


@pytest.mark.parametrize("anchor", ["auto", "none", "icp"])
@pytest.mark.parametrize("normalization", ["sequence", "reference"])
def test_every_anchor_handles_non_finite_and_invalid_points(anchor, normalization):
    inp, _ = scenes.pointmap_sequence(1, frames=5, height=24, width=32, normalization=normalization)
    xyz = inp["xyz"].copy()
    xyz[1, :4] = np.inf
    xyz[2, 5:9] = np.nan
    xyz[4] = np.nan  # a whole frame without a usable point
    reg = register.register(xyz, inp["valid"], normalization=normalization, anchor=anchor)
    assert np.isfinite(reg.points_world).all() and np.isfinite(reg.offsets).all()
    assert reg.status.registered[:4].all() and not reg.status.registered[4]
    assert "too few valid points" in reg.status.reasons[4]


def test_atomic_save_json_refuses_non_finite_numbers(tmp_path):
    with pytest.raises(ValueError, match=r"\$\['a'\]\[1\].*null"):
        atomic_save_json(tmp_path / "x.json", {"a": [1.0, float("inf")]})
    assert not (tmp_path / "x.json").exists()


def test_implausible_intrinsics_are_named():
    assert status.intrinsics_problem(np.diag([-0.16, -0.16, 1.0]), 48, 64).startswith("the focal length estimate is "
                                                                                     "not positive")
    assert "field of view" in status.intrinsics_problem(np.diag([0.135, 0.135, 1.0]), 48, 64)
    assert status.intrinsics_problem(status.fov_prior_intrinsics(48, 64), 48, 64) is None
    assert status.fov_deg(status.fov_prior_intrinsics(48, 64)[0, 0], 64) == pytest.approx(status.FOV_PRIOR_DEG)


def test_icp_skips_non_finite_points():
    rng = np.random.default_rng(2)
    pts = np.repeat(rng.uniform(-1, 1, (1, 400, 3)), 3, 0) + np.array([[[0, 0, 0]], [[0.05, 0, 0]], [[0.1, 0, 0]]])
    pts[1, :50] = np.inf  # cKDTree.query raised "'x' must be finite" on such points
    pts[2, 60:90] = np.nan
    offs = register.anchor_offsets_icp(pts, np.ones(pts.shape[:2], bool))
    np.testing.assert_allclose(offs, [[0, 0, 0], [-0.05, 0, 0], [-0.1, 0, 0]], atol=1e-6)
