"""Data layer geometry: back-projection conventions, poses, normalisation contract, resize/crop, frame selection,
and the synthetic ray caster's exactness."""

import numpy as np
import pytest

from fourdnex_jax.data import geometry, normalize, resize, synthetic, temporal
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.data.annotations import ClipConfig, to_clip6d


@pytest.fixture(scope="module")
def scene():
    return synthetic.render(synthetic.make_scene(synthetic.split_seed("train", 3)), 9, 32, 48)


def test_backproject_project_roundtrip():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (2, 6, 8))
    K = geometry.intrinsics_matrix([50.0, 60.0], [55.0, 40.0], [3.7, 4.1], [2.2, 2.9])
    pts = geometry.backproject(depth, K)
    u, v, z = geometry.project(pts, K)
    uu, vv = geometry.pixel_grid(6, 8)
    np.testing.assert_allclose(u, np.broadcast_to(uu, u.shape), atol=1e-9)
    np.testing.assert_allclose(v, np.broadcast_to(vv, v.shape), atol=1e-9)
    np.testing.assert_allclose(z, depth)


def test_reference_intrinsics_quirk():
    K = geometry.intrinsics_matrix(100.0, 80.0, 10.3, 7.9)
    R = geometry.reference_intrinsics(K[None], 15, 21)[0]
    assert (R[0, 0], R[1, 1], R[0, 2], R[1, 2]) == (100.0, 100.0, 10, 7)


def test_quaternions_and_tum():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(5, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.sign(q[:, :1])
    R = geometry.quaternion_to_matrix(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(geometry.matrix_to_quaternion(R), q, atol=1e-12)
    traj = np.concatenate([np.arange(5)[:, None], rng.normal(size=(5, 3)), q], 1)
    c2w = geometry.tum_to_c2w(traj)
    np.testing.assert_allclose(c2w[:, :3, 3], traj[:, 1:4])
    rel = geometry.relative_to_first(c2w)
    np.testing.assert_allclose(rel[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(geometry.invert_se3(c2w) @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-12)


def test_look_at_is_opencv():
    c2w = geometry.look_at(np.array([0.0, -1.0, -5.0]), np.array([0.0, -1.0, 0.0]))
    np.testing.assert_allclose(c2w[:3, :3], np.eye(3), atol=1e-12)  # looking along +z, y down, x right


def test_synthetic_depth_is_exact(scene):
    """Back-projecting the rendered depth with K and c2w reproduces the ray-cast world points."""
    cam = geometry.backproject(scene["depths"], scene["intrinsics"])
    world = geometry.transform_points(scene["cam_c2w"], cam)
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


def _xyz(seed=0, t=4):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(t, 10, 12, 3)) * [1.0, 2.0, 0.5] + [0.0, 0.0, 4.0]
    xyz += np.arange(t)[:, None, None, None] * 0.3  # frames drift, so per-frame centres differ
    return xyz


def test_normalize_reference_contract():
    xyz = _xyz()
    valid = np.ones(xyz.shape[:-1], bool)
    valid[1, 2, 3] = False
    xyz[1, 2, 3] = np.nan
    n, centers, scale = normalize.normalize(xyz, valid, "reference")
    assert n.dtype == np.float32 and np.abs(n).max() <= 1.0 and np.abs(n).max() == pytest.approx(1.0)
    assert n[1, 2, 3].tolist() == [0, 0, 0]
    for t in range(len(xyz)):  # per-frame centre = mid of the 2-98 percentile box, one global scale
        lo, hi = np.percentile(xyz[t][valid[t]], [2, 98], axis=0)
        np.testing.assert_allclose(centers[t], (lo + hi) / 2)
        inside = valid[t] & np.all((xyz[t] >= lo) & (xyz[t] <= hi), -1)
        back = normalize.denormalize(n, centers, scale)[t]
        np.testing.assert_allclose(back[inside], xyz[t][inside], rtol=1e-6, atol=1e-6 * scale)
    assert len(np.unique(centers, axis=0)) == len(xyz)


def test_normalize_sequence_exact_inverse():
    xyz = _xyz(1)
    n, centers, scale = normalize.normalize(xyz, None, "sequence")
    assert np.all(centers == 0) and np.abs(n).max() == pytest.approx(1.0)
    np.testing.assert_allclose(normalize.denormalize(n, centers, scale), xyz, rtol=1e-6, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize.normalize(xyz, None, "mean")


def test_pingpong_and_ranges():
    assert temporal.pingpong_indices(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert temporal.pingpong_indices(60, 49).tolist() == list(range(49))
    assert temporal.pingpong_indices(1, 3).tolist() == [0, 0, 0]
    assert temporal.parse_clip_range("abc_12-80") == (12, 80) and temporal.parse_clip_range("abc") is None


def test_cover_crop_and_intrinsics():
    plan = resize.cover_crop_plan(288, 512, 480, 720)
    assert (plan.resized_h, plan.resized_w, plan.top, plan.left) == (480, 853, 0, 66)
    # a point at the centre of source pixel (u, v) lands on the centre of its resized + cropped pixel
    K = geometry.intrinsics_matrix(300.0, 310.0, 255.5, 143.5)
    K2 = resize.adjust_intrinsics(K, plan)
    p = np.array([0.3, -0.2, 2.0])
    u, v, _ = geometry.project(p, K)
    u2, v2, _ = geometry.project(p, K2)
    assert u2 == pytest.approx((u + 0.5) * plan.scale_x - 0.5 - plan.left)
    assert v2 == pytest.approx((v + 0.5) * plan.scale_y - 0.5 - plan.top)
    arr = np.arange(2 * 4 * 6).reshape(2, 4, 6)
    out = resize.resize_nearest(arr, resize.cover_crop_plan(4, 6, 8, 12))
    np.testing.assert_array_equal(out, arr.repeat(2, 1).repeat(2, 2))
    rgb = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    assert resize.resize_rgb(rgb, resize.cover_crop_plan(20, 30, 10, 10)).shape == (3, 10, 10, 3)


@pytest.mark.parametrize("intrinsics", ["full", "reference"])
def test_convert_recovers_first_camera_points(scene, intrinsics):
    raw = RawClip("c", scene["images"], scene["cam_c2w"], K=scene["intrinsics"], depth=scene["depths"],
                  dynamic_mask=scene["dynamic_mask"], caption="cap", source="synthetic")
    clip = to_clip6d(raw, ClipConfig(num_frames=12, height=32, width=48, normalization="sequence",
                                     intrinsics=intrinsics))
    assert clip.frame_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 7, 6, 5]
    truth = geometry.transform_points(np.linalg.inv(scene["cam_c2w"][0]), scene["xyz_world"][clip.frame_index])
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
    u, v, _ = geometry.project(pts, clip.intrinsics[0])
    uu, vv = geometry.pixel_grid(20, 20)
    # nearest sampling: the source pixel centre is within half a source pixel of the output centre
    half = 0.5 * resize.cover_crop_plan(32, 48, 20, 20).scale_x + 1e-3
    assert np.abs(u - uu).max() <= half and np.abs(v - vv).max() <= half
