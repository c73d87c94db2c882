"""Synthetic clips and their conversion to clip6d (fourdnex_jax.data): the ray caster's exactness and determinism,
frame selection, and the first-camera points / resize of to_clip6d."""

import numpy as np
import pytest

from fourdnex_jax.data import synthetic, temporal
from fourdnex_jax.data.annotations import ClipConfig, to_clip6d
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.geometry import se3
from fourdnex_jax.media import resize


@pytest.fixture(scope="module")
def scene():
    return synthetic.render(synthetic.make_scene(synthetic.split_seed("train", 3)), 9, 32, 48)


def test_synthetic_depth_is_exact(scene):
    """Back-projecting the rendered depth with K and c2w reproduces the ray-cast world points."""
    cam = se3.backproject(scene["depths"], scene["intrinsics"])
    world = se3.transform_points(scene["cam_c2w"], cam)
    np.testing.assert_allclose(world, scene["xyz_world"], rtol=0, atol=1e-4 * np.abs(world).max())
    assert scene["images"].dtype == np.uint8 and scene["images"].shape == (9, 32, 48, 3)
    oid = scene["object_id"]
    assert scene["dynamic_mask"].any() and not scene["dynamic_mask"][oid < 0].any()


def test_synthetic_is_deterministic_and_splits_differ():
    a = synthetic.generate_clip("train", 5, 5, 16, 24)
    b = synthetic.generate_clip("train", 5, 5, 16, 24)
    c = synthetic.generate_clip("heldout", 5, 5, 16, 24)
    assert a[0] == b[0] and a[2] == b[2]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])
    assert c[0] != a[0] and not np.array_equal(c[1]["images"], a[1]["images"])
    assert synthetic.split_seed("heldout", 0) > synthetic.split_seed("train", 999_999_999)


def test_pingpong_and_ranges():
    assert temporal.pingpong_indices(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert temporal.pingpong_indices(60, 49).tolist() == list(range(49))
    assert temporal.pingpong_indices(1, 3).tolist() == [0, 0, 0]
    assert temporal.parse_clip_range("abc_12-80") == (12, 80) and temporal.parse_clip_range("abc") is None


@pytest.mark.parametrize("intrinsics", ["full", "reference"])
def test_convert_recovers_first_camera_points(scene, intrinsics):
    raw = RawClip("c", scene["images"], scene["cam_c2w"], K=scene["intrinsics"], depth=scene["depths"],
                  dynamic_mask=scene["dynamic_mask"], caption="cap", source="synthetic")
    clip = to_clip6d(raw, ClipConfig(num_frames=12, height=32, width=48, normalization="sequence",
                                     intrinsics=intrinsics))
    assert clip.frame_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 7, 6, 5]
    truth = se3.transform_points(np.linalg.inv(scene["cam_c2w"][0]), scene["xyz_world"][clip.frame_index])
    err = np.abs(clip.metric_xyz() - truth).max() / np.abs(truth).max()
    if intrinsics == "full":
        assert err < 1e-5
    else:  # the reference quirk (fx only, principal point W//2, H//2) is measurably off
        assert err > 1e-3
    np.testing.assert_allclose(clip.c2w[0], np.eye(4), atol=1e-6)
    assert clip.has_dynamic_mask and clip.dynamic_mask.any()


def test_convert_resizes_consistently(scene):
    """Resized XYZ stays pixel-aligned: projecting each output pixel's point with the adjusted K gives that pixel
    (frame 0, first camera = camera 0; sequence normalisation, which clips nothing)."""
    raw = RawClip("c", scene["images"], scene["cam_c2w"], K=scene["intrinsics"], depth=scene["depths"],
                  caption="cap")
    clip = to_clip6d(raw, ClipConfig(num_frames=9, height=20, width=20, normalization="sequence"))
    pts = clip.metric_xyz()[0]
    u, v, _ = se3.project(pts, clip.intrinsics[0])
    uu, vv = se3.pixel_grid(20, 20)
    # nearest sampling: the source pixel centre is within half a source pixel of the output centre
    half = 0.5 * resize.cover_crop_plan(32, 48, 20, 20).scale_x + 1e-3
    assert np.abs(u - uu).max() <= half and np.abs(v - vv).max() <= half
