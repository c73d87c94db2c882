"""The pipeline's save step (fourdnex_jax.pipelines.outputs.save_result): the files of one result, and geometry
written only when asked, from the arrays in memory."""

import dataclasses
import json

import numpy as np

from fourdnex_jax.media.io import read_image, read_video
from fourdnex_jax.media.publish import MARKER
from fourdnex_jax.pipelines.outputs import save_result, valid_mask
from fourdnex_jax.testing import scenes


@dataclasses.dataclass
class _Result:  # the fields save_result reads from a pipeline output
    rgb: np.ndarray
    xyz: np.ndarray
    image: np.ndarray
    prompt: str
    seed: int
    xyz_normalization: str


def _result() -> _Result:
    inp, _ = scenes.pointmap_sequence(0, frames=4, height=24, width=32)
    return _Result(rgb=inp["rgb"], xyz=inp["xyz"], image=inp["rgb"][0], prompt="a ball POINTMAP_STYLE.", seed=7,
                   xyz_normalization="sequence")


def test_save_result_without_geometry(tmp_path):
    res = _result()
    s = save_result(res, tmp_path, geometry=False, summary={"config": "tiny"}, fps=5)
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert s["config"] == "tiny" and s["prompt"] == res.prompt and s["seed"] == 7 and s["fps"] == 5
    assert s["xyz_normalization"] == "sequence" and (s["frames"], s["height"], s["width"]) == (4, 24, 32)
    assert "not computed" in s["cameras"] and not (tmp_path / "cameras.json").exists()
    with np.load(tmp_path / "pointmaps.npz") as z:
        np.testing.assert_array_equal(z["xyz"], res.xyz)
        np.testing.assert_array_equal(z["valid"], valid_mask(res.xyz, "sequence"))
        assert s["valid_fraction"] == float(z["valid"].mean())
    np.testing.assert_array_equal(read_image(tmp_path / "input.png"), res.image)
    assert read_video(tmp_path / "rgb.mp4").shape == (4, 24, 32, 3) == read_video(tmp_path / "xyz.mp4").shape
    assert sorted(s["files"]) == sorted(p.name for p in tmp_path.iterdir() if p.name != MARKER)  # + our marker


def test_save_result_with_geometry(tmp_path):
    s = save_result(_result(), tmp_path, geometry=True)
    assert s["cameras"] == "cameras.json" and s["geometry"]["normalization"] == "sequence"
    cams = json.loads((tmp_path / "cameras.json").read_text())
    assert np.asarray(cams["cam_to_world"]).shape == (4, 4, 4)
    assert (tmp_path / "depth.npz").exists() and (tmp_path / "scene.glb").exists()
    assert (tmp_path / "novel_orbit.mp4").exists()


def test_api_result_registers_once_when_cameras_are_read_before_save(tmp_path, monkeypatch):
    """``Result.cameras`` then ``Result.save()``: one registration, shared (the saved cameras are the ones read)."""
    from fourdnex_jax.geometry import register
    from fourdnex_jax.pipelines.api import Result

    calls = []
    real = register.register
    monkeypatch.setattr(register, "register", lambda *a, **k: calls.append(1) or real(*a, **k))
    r = _result()
    out = dataclasses.make_dataclass("Out", [("valid", np.ndarray), ("sizing", dict)], bases=(_Result,))(
        **dataclasses.asdict(r), valid=valid_mask(r.xyz, "sequence"), sizing={})
    res = Result(out, {"config": "tiny"})
    cams = res.cameras
    res.save(tmp_path / "a")
    assert len(calls) == 1
    saved = json.loads((tmp_path / "a" / "cameras.json").read_text())
    np.testing.assert_allclose(np.asarray(saved["cam_to_world"]), cams["cam_to_world"], atol=1e-6)
