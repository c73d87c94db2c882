"""viewer.html in a real headless browser (Chromium, WebGL through SwiftShader): the first frame draws a non-empty
point cloud framed from its bounds, also when every camera was rejected, and the panel names the unreliable
cameras. Skips where no Chromium is installed (Debian: ``apt-get install chromium``)."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from fourdnex_jax.geometry import scene
from fourdnex_jax.media.io import read_image
from fourdnex_jax.testing import scenes

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path, html, *args):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=640,480",
           "--virtual-time-budget=3000", *args, html.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _viewer(tmp_path, xyz, valid, rgb, normalization):
    out = tmp_path / "out"
    summ = scene.postprocess_scene(xyz, valid, rgb, normalization, out, video=False, write_images=False,
                                   viewer_points_per_frame=3000)
    return out / "viewer.html", summ


def _drawn(tmp_path, html):
    dom = _chromium(tmp_path, html, "--dump-dom")
    body = re.search(r"<body[^>]*>", dom).group(0)
    return int(re.search(r'data-drawn-pixels="(\d+)"', body).group(1)), \
        int(re.search(r'data-first-frame="(\d+)"', body).group(1)), dom


def test_viewer_draws_the_registered_cloud(tmp_path):
    inp, _ = scenes.pointmap_sequence(0, frames=5, height=48, width=64)
    valid = inp["valid"].copy()
    valid[0] = False  # an empty first frame: the viewer must start on frame 1
    html, summ = _viewer(tmp_path, inp["xyz"], valid, inp["rgb"], "sequence")
    drawn, first, dom = _drawn(tmp_path, html)
    assert first == 1
    assert drawn > 0.5 * min(3000, summ["points_per_frame"][1]), drawn  # 2x2-pixel points, some overlapping
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, html, f"--screenshot={shot}")
    img = read_image(shot).astype(np.int64)[120:]  # below the panel
    lit = np.abs(img - 18).sum(-1) > 6  # not the background colour
    cols = np.flatnonzero(lit.any(0))
    assert lit.mean() > 0.005 and cols[-1] - cols[0] > 0.5 * img.shape[1]  # framed: spans most of the width


def test_viewer_shows_points_and_says_cameras_are_unreliable(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (4, 24, 32, 3)).astype(np.float32)  # fits no camera: every frame rejected
    xyz[..., 2] = np.abs(xyz[..., 2]) + 0.1
    html, summ = _viewer(tmp_path, xyz, None, None, "sequence")
    assert summ["frames_registered"] == 0
    drawn, first, dom = _drawn(tmp_path, html)
    assert first == 0 and drawn > 100, drawn
    assert "cameras: 0/4 frames registered" in dom and "camera rejected" in dom
