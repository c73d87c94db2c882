"""Point splatting (fourdnex_jax.geometry.render): z-buffer and visible holes."""

import numpy as np

from fourdnex_jax.geometry import render


def test_splatting_zbuffer():
    pts = np.array([[[0, 0, 2.0], [0, 0, 1.0], [0.3, 0, 1.0]]], np.float32)
    col = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    K = np.array([[10.0, 0, 4], [0, 10, 4], [0, 0, 1]])
    out = render.render_video(pts, col, np.ones((1, 3), bool), np.eye(4)[None], K, 9, 9)
    assert tuple(out["frames"][0, 4, 4]) == (0, 255, 0)  # the nearer of two points on one pixel wins
    assert tuple(out["frames"][0, 4, 7]) == (0, 0, 255)
    assert out["holes"][0].sum() == 81 - 2  # every other pixel is a visible hole
