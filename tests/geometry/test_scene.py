"""The one-call geometry stage (fourdnex_jax.geometry.scene): arrays in, files out; the saved-file variant and a
re-render of the written folder."""

import json

import numpy as np
import pytest

from fourdnex_jax.geometry import exports, scene
from fourdnex_jax.media.io import atomic_save_npz, read_video
from fourdnex_jax.testing import scenes


def test_postprocess_scene_end_to_end(tmp_path):
    inp, tr = scenes.pointmap_sequence(0, frames=4, height=24, width=32)
    summ = scene.postprocess_scene(inp["xyz"], inp["valid"], inp["rgb"], "sequence", tmp_path / "out",
                                   viewer_points_per_frame=500)
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
    assert summ["normalization"] == "sequence" and (out / "images" / "frame_00003.png").exists()

    # the saved-file variant gives the same cameras; a re-render of the folder gives a video of the asked size
    atomic_save_npz(tmp_path / "pointmaps.npz", **inp)
    scene.postprocess_scene_file(tmp_path / "pointmaps.npz", tmp_path / "again", normalization="sequence",
                                 video=False, write_images=False)
    again = json.loads((tmp_path / "again" / "cameras.json").read_text())
    np.testing.assert_allclose(again["cam_to_world"], cams["cam_to_world"], atol=1e-12)
    assert not list((tmp_path / "again").glob("*.mp4"))
    report = scene.render_scene(out, tmp_path / "novel.mp4", trajectory="dolly", frames=3, size=(16, 20))
    assert report["frames"] == 3 and report["size"] == [16, 20]
    assert read_video(tmp_path / "novel.mp4").shape == (3, 16, 20, 3)


def test_metric_normalization_needs_centres(tmp_path):
    inp, tr = scenes.pointmap_sequence(0, frames=3, height=24, width=32, normalization="reference")
    with pytest.raises(ValueError, match="metric"):
        scene.postprocess_scene(inp["xyz"], inp["valid"], None, "metric", tmp_path)
    reg = scene.register_pointmaps(inp["xyz"], inp["valid"], "metric", centers=tr["centers"], scale=tr["scale"])
    assert reg.normalization == "metric"
    np.testing.assert_allclose(reg.K, tr["K"], rtol=1e-6, atol=1e-6)
