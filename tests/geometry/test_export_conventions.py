"""What the files open as in the tools people use: the GLB read back as glTF (y up: the floor below the sky, cameras
looking down -z at the scene), the PLY header naming its axes, transforms.json only with registered frames and in
the structure nerfstudio's data parser reads, and a re-render of a result whose cameras were all rejected."""

import json
import struct

import numpy as np
import pytest

from fourdnex_jax.geometry import exports, scene
from fourdnex_jax.media.io import atomic_save_npz, read_video
from fourdnex_jax.testing import scenes

COMPONENTS = {5126: np.float32, 5121: np.uint8}
WIDTH = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_glb(path):
    """(the glTF JSON, accessor index -> numpy array), read with the standard library and numpy only: the JSON
    chunk, the BIN chunk, and every accessor through its buffer view, as any glTF loader does."""
    data = path.read_bytes()
    magic, version, total = struct.unpack("<III", data[:12])
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    n, kind = struct.unpack("<II", data[12:20])
    assert kind == 0x4E4F534A
    gltf = json.loads(data[20:20 + n])
    m, kind = struct.unpack("<II", data[20 + n:28 + n])
    assert kind == 0x004E4942
    blob = data[28 + n:28 + n + m]

    def accessor(i):
        acc = gltf["accessors"][i]
        view = gltf["bufferViews"][acc["bufferView"]]
        count, width = acc["count"], WIDTH[acc["type"]]
        arr = np.frombuffer(blob, COMPONENTS[acc["componentType"]], count * width,
                            view.get("byteOffset", 0) + acc.get("byteOffset", 0))
        return arr.reshape(count, width)

    return gltf, accessor


def test_glb_reads_back_y_up_with_the_floor_below_the_sky(tmp_path):
    """Frame 0 of a synthetic clip, sky dome (object id -2) included, through the GLB writer with camera 0 at the
    origin: in the file the floor (id -1) is below the sky and camera 0 looks down -z at the scene, y up."""
    inp, tr = scenes.pointmap_sequence(0, frames=1, height=24, width=32)
    ids = tr["object_id"][0].reshape(-1)
    points = inp["xyz"][0].reshape(-1, 3)
    assert (ids == -1).any() and (ids == -2).any()
    colors = inp["rgb"][0].reshape(-1, 3)
    (tmp_path / "scene.glb").write_bytes(exports.glb_bytes([(points, colors)], np.eye(4)[None], tr["K"], (24, 32)))
    gltf, accessor = read_glb(tmp_path / "scene.glb")
    got = accessor(gltf["meshes"][gltf["nodes"][0]["mesh"]]["primitives"][0]["attributes"]["POSITION"])
    assert len(got) == len(ids)
    assert np.median(got[ids == -1, 1]) < np.median(got[ids == -2, 1])  # floor below sky
    assert np.median(got[ids == -1, 1]) < 0  # and below camera 0, which stands above it
    cam = next(n for n in gltf["nodes"] if n["name"] == "camera_00000")
    m = np.asarray(cam["matrix"]).reshape(4, 4).T  # column-major
    assert np.median(got @ -m[:3, 2]) > 0  # a glTF camera looks down its -z: the scene is in front of it
    assert m[:3, 1] @ np.array([0.0, 1.0, 0.0]) > 0.99  # its up (+y) is the world's up
    assert "y up" in gltf["extras"]["axes"]


def test_generated_glb_has_the_floor_below_the_camera(tmp_path):
    """The same through the geometry stage (registration, then exports): floor points below camera 0."""
    inp, tr = scenes.pointmap_sequence(0, frames=3, height=24, width=32)
    scene.postprocess_scene(inp["xyz"], inp["valid"], inp["rgb"], "sequence", tmp_path, video=False,
                            viewer_points_per_frame=100)
    gltf, accessor = read_glb(tmp_path / "scene.glb")
    got = accessor(gltf["meshes"][gltf["nodes"][0]["mesh"]]["primitives"][0]["attributes"]["POSITION"])
    ids = tr["object_id"][0][inp["valid"][0]]  # the exported points are the valid pixels in row-major order
    assert len(got) == len(ids) and np.median(got[ids == -1, 1]) < 0 < np.median(-got[:, 2])


def test_ply_header_names_its_axes(tmp_path):
    p = np.array([[0.0, 1.0, 2.0]], np.float32)
    exports.write_ply(tmp_path / "a.ply", p, np.array([[1, 2, 3]], np.uint8))
    header = (tmp_path / "a.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert "comment axes OpenCV" in header and "y down" in header
    got, _ = exports.read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(got, p)


def nerfstudio_problems(folder) -> list[str]:
    """What nerfstudio's data parser (nerfstudio_dataparser.py, 1.1) needs from transforms.json: frames (it indexes
    the first one; an empty list fails with an IndexError inside it), each with an existing ``file_path`` and a
    4x4 ``transform_matrix``; ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` at the top level or per frame; a
    camera model it knows; distortion k1, k2, p1, p2 numbers."""
    meta = json.loads((folder / "transforms.json").read_text())
    problems = []
    if not meta.get("frames"):
        return ["no frames"]
    if meta.get("camera_model", "OPENCV") not in ("OPENCV", "PERSPECTIVE", "OPENCV_FISHEYE", "EQUIRECTANGULAR"):
        problems.append(f"camera_model {meta['camera_model']}")
    for key in ("k1", "k2", "p1", "p2"):
        if not isinstance(meta.get(key, 0.0), (int, float)):
            problems.append(key)
    for i, frame in enumerate(meta["frames"]):
        if not (folder / frame["file_path"]).is_file():
            problems.append(f"frame {i}: {frame['file_path']} missing")
        if np.asarray(frame["transform_matrix"]).shape != (4, 4):
            problems.append(f"frame {i}: transform_matrix")
        for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
            if key not in meta and key not in frame:
                problems.append(f"frame {i}: {key}")
    return problems


def test_transforms_json_holds_the_registered_frames_in_nerfstudio_structure(tmp_path):
    inp, tr = scenes.pointmap_sequence(0, frames=4, height=24, width=32)
    summ = scene.postprocess_scene(inp["xyz"], inp["valid"], inp["rgb"], "sequence", tmp_path, video=False,
                                   viewer_points_per_frame=100)
    assert nerfstudio_problems(tmp_path) == []
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert len(meta["frames"]) == 4 and summ["transforms"].startswith("transforms.json: the 4 registered")
    # nerfstudio's camera axes (OpenGL: y up, looking down -z) in the OpenCV world of cameras.json
    c2w = np.asarray(meta["frames"][1]["transform_matrix"])
    np.testing.assert_allclose(c2w, tr["c2w"][1] @ np.diag([1.0, -1.0, -1.0, 1.0]), atol=1e-6)


def test_no_registered_camera_no_transforms_json(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(3, 16, 24, 3)).astype(np.float32)  # not a pinhole camera's pointmap
    summ = scene.postprocess_scene(xyz, None, None, "sequence", tmp_path, video=False, viewer_points_per_frame=50)
    assert summ["frames_registered"] == 0
    assert not (tmp_path / "transforms.json").exists() and "transforms.json" not in summ["files"]
    assert summ["transforms"].startswith("transforms.json: not written, no camera")
    assert (tmp_path / "cameras.json").exists() and "images/" in summ["files"]


def test_render_uses_the_pointmaps_when_no_camera_is_registered(tmp_path):
    """A result whose cameras were all rejected has no depth; its pointmaps still render (the demo's case), and a
    folder with nothing to render is refused instead of writing a black video."""
    inp, _ = scenes.pointmap_sequence(0, frames=3, height=24, width=32)
    xyz = inp["xyz"].copy()
    xyz[..., :2] *= 40.0  # stretched sideways: no pinhole camera explains it, the points are still a scene
    out = tmp_path / "result"
    summ = scene.postprocess_scene(xyz, inp["valid"], inp["rgb"], "sequence", out, video=False,
                                   viewer_points_per_frame=50)
    assert summ["frames_registered"] == 0
    atomic_save_npz(out / "pointmaps.npz", xyz=xyz, rgb=inp["rgb"], valid=inp["valid"])
    for trajectory in ("spiral", "orbit"):
        report = scene.render_scene(out, tmp_path / f"{trajectory}.mp4", trajectory=trajectory)
        assert report["points_from"] == "pointmaps" and report["hole_fraction"] < 0.99, report
        assert read_video(tmp_path / f"{trajectory}.mp4").max() > 0
    (out / "pointmaps.npz").unlink()
    with pytest.raises(ValueError, match="nothing of the scene is in view"):
        scene.render_scene(out, tmp_path / "black.mp4", trajectory="spiral")
    assert not (tmp_path / "black.mp4").exists()
