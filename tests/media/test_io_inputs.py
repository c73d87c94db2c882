"""Input readers never corrupt silently (media/io.py): every image mode converts to the right 8-bit RGB, EXIF
orientation is applied, bad files are InputErrors naming the file; folders are published as a unit."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fourdnex_jax.media import io as mio
from fourdnex_jax.media import publish
from fourdnex_jax.utils.errors import InputError, OutputExistsError


def _png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG of (H, W) grey or (H, W, 3|4) uint16, written chunk by chunk (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    color = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_grey_png_scales_to_8bit(tmp_path):
    grey = np.array([[0, 257, 32768], [65535, 1000, 50000]], np.uint16)
    (tmp_path / "g16.png").write_bytes(_png16(grey))
    out = mio.read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[..., 0], np.round(grey * (255 / 65535)).astype(np.uint8))
    assert out.max() == 255 and out.min() == 0 and 0 < out[0, 2, 0] < 255  # not all-white


def test_16bit_rgb_png(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 0
    (tmp_path / "c16.png").write_bytes(_png16(rgb))
    out = mio.read_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out[0, 0], [255, 128, 0])


def test_palette_la_rgba_and_cmyk(tmp_path):
    base = np.zeros((4, 4, 3), np.uint8)
    base[:2] = [200, 10, 30]
    base[2:] = [5, 100, 250]
    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    np.testing.assert_array_equal(mio.read_image(tmp_path / "p.png"), base)
    rgba = np.dstack([base, np.array([[255] * 4, [0] * 4, [255] * 4, [128] * 4], np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = mio.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0], base[0])  # opaque: unchanged
    np.testing.assert_array_equal(out[1], np.full((4, 3), 255))  # transparent: the white background
    assert np.all(np.abs(out[3].astype(int) - (base[3] * 0.5 + 127.5)) <= 1)  # half: blended
    la = np.dstack([np.full((2, 2), 40, np.uint8), np.array([[255, 0], [255, 0]], np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = mio.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out[:, 0], np.full((2, 3), 40))
    np.testing.assert_array_equal(out[:, 1], np.full((2, 3), 255))
    Image.fromarray(base).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert mio.read_image(tmp_path / "c.jpg").shape == (4, 4, 3)


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = [255, 0, 0]  # red top-left of the stored pixels
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.png", exif=exif)
    out = mio.read_image(tmp_path / "r.png")
    assert out.shape == (3, 2, 3)  # displayed portrait
    np.testing.assert_array_equal(out[0, -1], [255, 0, 0])  # the stored top-left shows at the top-right


@pytest.mark.parametrize("content, match", [
    (None, "no such image file"),
    (b"", "is empty"),
    (b"not an image at all", "not a PNG/JPEG image"),
    ("truncated", "not a readable PNG/JPEG image"),
])
def test_bad_image_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.png"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[:200]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match) as e:
        mio.read_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_rgb_to_uint8():
    f = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(mio.rgb_to_uint8(f), [[0, 128, 255]])  # [0, 1] floats scaled, not near-black
    np.testing.assert_array_equal(mio.rgb_to_uint8(np.array([3.0, 200.0])), [3, 200])
    for bad in (np.array([np.nan]), np.array([-1.0]), np.array([300]), np.array([True])):
        with pytest.raises(InputError):
            mio.rgb_to_uint8(bad, "rgb")


def test_publish_dir_keeps_previous_result_and_replaces_as_a_unit(tmp_path):
    out = tmp_path / "res"
    with publish.publish_dir(out) as d:
        (d / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one" and oct(out.stat().st_mode & 0o777) != "0o700"
    assert publish.read_marker(out)["entries"] == ["a.txt"]  # the marker: written last, lists what we wrote
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with publish.publish_dir(out):
            pass
    with pytest.raises(RuntimeError):  # a failing writer leaves the previous result untouched, no temp folder
        with publish.publish_dir(out, overwrite=True) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    with publish.publish_dir(out, overwrite=True) as d:
        (d / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == [publish.MARKER, "b.txt"]  # not a mix of the two results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        publish.check_output_dir(tmp_path / "file")
    with pytest.raises(InputError, match="is a file"):
        publish.check_output_dir(tmp_path / "file" / "sub")
    os.makedirs(tmp_path / ".res.tmp-stale")  # left by a killed publish: removed by the next one
    with publish.publish_dir(out, overwrite=True) as d:
        (d / "c.txt").write_text("three")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "res"]
