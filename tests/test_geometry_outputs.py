"""Exports, rendering, metrics and the one-call postprocess_scene (fourdnex_jax.geometry)."""

import json

import numpy as np

from fourdnex_jax.geometry import exports, metrics, render, scene, synthetic, trajectories
from fourdnex_jax.io_utils import atomic_save_npz


def test_depth_and_pose_metrics():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (3, 8, 8))
    m = metrics.depth_metrics(2.0 * gt + 0.0, gt, np.ones_like(gt, bool), "scale")
    assert m["abs_rel"] < 1e-12 and m["delta_1_25"] == 1.0
    m = metrics.depth_metrics(0.5 * gt + 3.0, gt, np.ones_like(gt, bool), "scale_shift", "l1")
    assert m["abs_rel"] < 1e-6
    _, tr = synthetic.pointmap_sequence(0, frames=6, height=24, width=32)
    c2w = tr["c2w"]
    s, r = 3.0, trajectories.look_at(np.array([0.0, 0, 0]), np.array([1.0, 0.2, 1]))[:3, :3]
    est = c2w.copy()
    est[:, :3, :3] = r @ c2w[:, :3, :3]
    est[:, :3, 3] = s * c2w[:, :3, 3] @ r.T + 1.0
    pm = metrics.pose_metrics(est, c2w)
    assert pm["ate"] < 1e-9 and pm["rpe_trans"] < 1e-9 and pm["rpe_rot_deg"] < 1e-5


def test_splatting_zbuffer():
    pts = np.array([[[0, 0, 2.0], [0, 0, 1.0], [0.3, 0, 1.0]]], np.float32)
    col = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    K = np.array([[10.0, 0, 4], [0, 10, 4], [0, 0, 1]])
    out = render.render_video(pts, col, np.ones((1, 3), bool), np.eye(4)[None], K, 9, 9)
    assert tuple(out["frames"][0, 4, 4]) == (0, 255, 0)  # the nearer of two points on one pixel wins
    assert tuple(out["frames"][0, 4, 7]) == (0, 0, 255)
    assert out["holes"][0].sum() == 81 - 2  # every other pixel is a visible hole


def test_postprocess_scene_end_to_end(tmp_path):
    inp, tr = synthetic.pointmap_sequence(0, frames=4, height=24, width=32)
    atomic_save_npz(tmp_path / "pointmaps.npz", **inp)
    summ = scene.postprocess_scene(tmp_path / "pointmaps.npz", tmp_path / "out", viewer_points_per_frame=500)
    out = tmp_path / "out"
    cams = json.loads((out / "cameras.json").read_text())
    assert cams["image_size"] == [24, 32]
    np.testing.assert_allclose(np.asarray(cams["K"]), tr["K"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cams["cam_to_world"]), tr["c2w"], atol=1e-6)
    tf = json.loads((out / "transforms.json").read_text())
    assert len(tf["frames"]) == 4 and tf["camera_model"] == "OPENCV"
    with np.load(out / "depth.npz") as z:
        assert z["depth"].shape == (4, 24, 32)
    p, c = exports.read_ply(out / "ply" / "frame_00000.ply")
    assert len(p) == inp["valid"][0].sum() and c.dtype == np.uint8
    np.testing.assert_allclose(p, (tr["xyz_metric"][0][inp["valid"][0]] / tr["scale"]), atol=1e-5)
    g = exports.read_glb_json(out / "scene.glb")
    assert len(g["meshes"]) == 5 and len(g["animations"][0]["channels"]) == 4
    html = (out / "viewer.html").read_text()
    assert "<script>" in html and "http" not in html.split("<script>")[1]
    assert (out / "novel_orbit.mp4").stat().st_size > 0 and summ["render_fps"] > 0
