"""Cover + centre-crop plans and their intrinsics (fourdnex_jax.media.resize); the Pillow-exact kernel is checked
against Pillow in tests/models/test_image_encoder_parity.py."""

import numpy as np
import pytest

from fourdnex_jax.geometry import se3
from fourdnex_jax.geometry.intrinsics import intrinsics_matrix
from fourdnex_jax.media import resize


def test_cover_crop_and_intrinsics():
    plan = resize.cover_crop_plan(288, 512, 480, 720)
    assert (plan.resized_h, plan.resized_w, plan.top, plan.left) == (480, 853, 0, 66)
    # a point at the centre of source pixel (u, v) lands on the centre of its resized + cropped pixel
    K = intrinsics_matrix(300.0, 310.0, 255.5, 143.5)
    K2 = resize.adjust_intrinsics(K, plan)
    p = np.array([0.3, -0.2, 2.0])
    u, v, _ = se3.project(p, K)
    u2, v2, _ = se3.project(p, K2)
    assert u2 == pytest.approx((u + 0.5) * plan.scale_x - 0.5 - plan.left)
    assert v2 == pytest.approx((v + 0.5) * plan.scale_y - 0.5 - plan.top)
    arr = np.arange(2 * 4 * 6).reshape(2, 4, 6)
    out = resize.resize_nearest(arr, resize.cover_crop_plan(4, 6, 8, 12))
    np.testing.assert_array_equal(out, arr.repeat(2, 1).repeat(2, 2))
    rgb = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    assert resize.resize_rgb(rgb, resize.cover_crop_plan(20, 30, 10, 10)).shape == (3, 10, 10, 3)
