"""Media IO (fourdnex_jax.media.io): atomic writes leave no partial file, PNG and mp4 round trips."""

import json
import os

import numpy as np
import pytest

from fourdnex_jax.media import io as media_io


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    path = tmp_path / "sub" / "a.json"
    media_io.atomic_save_json(path, {"b": 1, "a": [2]})
    assert json.loads(path.read_text()) == {"a": [2], "b": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        media_io.atomic_write(path, fail)
    assert json.loads(path.read_text()) == {"a": [2], "b": 1}  # the old content survives
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left
    media_io.atomic_save_npz(tmp_path / "x.npz", x=np.arange(3))
    np.testing.assert_array_equal(media_io.load_npz(tmp_path / "x.npz")["x"], np.arange(3))


def test_png_and_video_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    media_io.write_png(tmp_path / "i.png", img)
    np.testing.assert_array_equal(media_io.read_image(tmp_path / "i.png"), img)
    mask = rng.random((7, 9)) < 0.5
    media_io.write_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(media_io.read_mask(tmp_path / "m.png"), mask)
    frames = np.full((3, 17, 23, 3), 128, np.uint8)  # odd sizes lose their last row / column
    media_io.write_video(tmp_path / "v.mp4", frames, fps=8)
    back = media_io.read_video(tmp_path / "v.mp4")
    assert back.shape == (3, 16, 22, 3) and np.abs(back.astype(int) - 128).max() <= 3
    assert media_io.read_video(tmp_path / "v.mp4", 1, 2).shape == (1, 16, 22, 3)
