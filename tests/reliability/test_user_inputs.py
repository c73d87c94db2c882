"""Files a user hands in, output folders, operating-system errors (issue 26, part E2).

Every case must end in one clear line (an :class:`~fourdnex_jax.utils.errors.InputError`, or the ``fourdnex``
command's ``error:`` line) naming the file and the fix, or in the right result; never a traceback, a silent wrong
result or a hang, and nothing that was on disk lost. The in-process cases (default tier) call the one input layer
(``fourdnex_jax.utils.files``, ``fourdnex_jax.media.images``, ``fourdnex_jax.media.publish``) that the CLI and the
Python API share; the ``integration`` cases run ``python -m fourdnex_jax`` as a user would.

docs/reliability.md lists the cases (``INPUT_CASES``, ``OUTPUT_CASES``, ``OS_CASES``, ``CLI_CASES``) and counts them.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fourdnex_jax.media import images as images_lib
from fourdnex_jax.media import io as mio
from fourdnex_jax.media import publish
from fourdnex_jax.utils import files
from fourdnex_jax.utils.errors import InputError, OutputExistsError
from tests.reliability.test_bad_input_corpus import ROOT, TINY, png, snapshot

HANG_S = 20  # a read that has not returned by then is a hang


def no_hang(fn: Callable[[], object], seconds: float = HANG_S) -> BaseException | object:
    """Runs ``fn`` in a thread; returns its exception or result; fails the test if it is still running."""
    out: list = []

    def target():
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001
            out.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"hung for {seconds} s"
    return out[0]


def one_line_error(fn: Callable[[], object], *needles: str) -> str:
    """``fn`` raises InputError, on one line, within HANG_S, containing every needle."""
    e = no_hang(fn)
    assert isinstance(e, InputError), f"expected InputError, got {e!r}"
    text = str(e)
    assert "\n" not in text, text
    for n in needles:
        assert n in text, f"{n!r} not in: {text}"
    return text


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ----------------------------------------------------------------------------------------------------- builders
def _jpeg(path: Path, h: int, w: int, seed: int = 0) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) % 256)], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-8, 8, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, format="JPEG", quality=90)
    return path


def _tiff32(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.int32)).save(path, format="TIFF")
    return path


def _bundle(tmp: Path) -> Path:
    dst = tmp / "bundle"
    shutil.copytree(TINY, dst)
    return dst


# ----------------------------------------------------------------------------------------------------- 1. inputs
def _case_image_fifo(t: Path):
    one_line_error(lambda: mio.read_image(fifo(t / "pipe.png")), "pipe.png", "named pipe", "regular")


def _case_image_dev_zero(t: Path):
    one_line_error(lambda: images_lib.load_image("/dev/zero"), "/dev/zero", "character device")


def _case_image_folder(t: Path):
    one_line_error(lambda: images_lib.load_image(t), str(t), "folder")


def _case_image_over_cap(t: Path):
    big = t / "big.png"
    with open(big, "wb") as f:  # sparse: no disk, no read
        f.truncate(files.LIMITS["image"] + 1)
    one_line_error(lambda: mio.read_image(big), "big.png", "256 MiB", "smaller")
    big.unlink()


def _case_image_symlink_loop(t: Path):
    os.symlink(t / "b.png", t / "a.png")
    os.symlink(t / "a.png", t / "b.png")
    one_line_error(lambda: mio.read_image(t / "a.png"), "a.png", "symlink loop")


def _case_image_name_too_long(t: Path):
    one_line_error(lambda: mio.read_image(t / ("x" * 300 + ".png")), "file name too long")


def _case_caption_fifo(t: Path):
    from fourdnex_jax.pipelines.inputs import caption_for_image

    fifo(t / "img.txt")
    one_line_error(lambda: caption_for_image(png(t / "img.png")), "img.txt", "named pipe")


def _case_caption_not_utf8(t: Path):
    from fourdnex_jax.pipelines.inputs import caption_for_image

    (t / "img.txt").write_bytes("une tête".encode("latin-1"))
    one_line_error(lambda: caption_for_image(png(t / "img.png")), "img.txt", "not UTF-8", "save it as UTF-8")


def _case_list_fifo(t: Path):
    from fourdnex_jax.pipelines.inputs import read_image_list

    one_line_error(lambda: read_image_list(fifo(t / "list.txt")), "list.txt", "named pipe")


def _case_list_not_utf8(t: Path):
    from fourdnex_jax.pipelines.inputs import read_image_list

    (t / "list.txt").write_bytes(b"a.png\t\xff\xfe caption\n")
    one_line_error(lambda: read_image_list(t / "list.txt"), "list.txt", "not UTF-8", "line 1")


def _case_json_fifo(t: Path):
    from fourdnex_jax.sampling.unipc import UniPCConfig

    fifo(t / "scheduler_config.json")
    one_line_error(lambda: UniPCConfig.from_dir(t), "scheduler_config.json", "named pipe")


def _case_npz_fifo(t: Path):
    one_line_error(lambda: mio.load_npz_checked(fifo(t / "p.npz"), "pointmaps"), "p.npz", "named pipe")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


@pytest.mark.parametrize("rel", ["scheduler/scheduler_config.json", "image_processor/preprocessor_config.json",
                                 "bundle.json", "tokenizer/tokenizer.json", "manifest.json"])
def test_truncated_json_of_a_bundle_names_the_file(tmp_path, rel):
    """Truncated JSON in any of a bundle's small files: one InputError naming the file, before any weights load."""
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.weights import restore

    b = _bundle(tmp_path)
    _truncated(b / rel)
    loaded = []
    orig = restore.restore_model
    try:
        bundle_lib.restore_model = lambda *a, **k: loaded.append(a) or orig(*a, **k)
        one_line_error(lambda: bundle_lib.load_bundle(b), str(b / rel))
    finally:
        bundle_lib.restore_model = orig
    assert not loaded, "weights were loaded before the small files were checked"


def _case_npz_declares_huge_array(t: Path):
    """An .npz member whose header declares 8 TB in a 200-byte file: refused before numpy allocates."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**41,)})
    with zipfile.ZipFile(t / "p.npz", "w") as z:
        z.writestr("xyz.npy", header.getvalue() + b"\0" * 16)
    one_line_error(lambda: mio.load_npz_checked(t / "p.npz", "pointmaps"), "p.npz", "declares", "damaged")


def _case_npz_inflates(t: Path):
    """A compressed .npz whose member says it inflates to ~4 GB (past 64x the file and 256 MiB) is refused before
    it inflates."""
    with zipfile.ZipFile(t / "p.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.zeros(1024, np.float32))
        z.writestr("xyz.npy", buf.getvalue())
    data = bytearray((t / "p.npz").read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # the uncompressed size, local and central
        i = data.index(sig)
        data[i + at:i + at + 4] = (0xF0000000).to_bytes(4, "little")
    (t / "p.npz").write_bytes(bytes(data))
    one_line_error(lambda: mio.load_npz_checked(t / "p.npz", "pointmaps"), "p.npz", "unpack to")


def _case_pt_fifo(t: Path):
    from fourdnex_jax.weights.torch_pickle import load_pt

    one_line_error(lambda: load_pt(fifo(t / "learnable_domain_embeddings.pt")), "named pipe")


def _case_safetensors_fifo(t: Path):
    from fourdnex_jax.weights.safetensors import CheckpointFileError, read_header

    e = no_hang(lambda: read_header(fifo(t / "model.safetensors")))
    assert isinstance(e, CheckpointFileError) and "not a regular file" in str(e), e


INPUT_CASES: dict[str, Callable[[Path], None]] = {
    "input/image-named-pipe": _case_image_fifo,
    "input/image-dev-zero": _case_image_dev_zero,
    "input/image-is-folder": _case_image_folder,
    "input/image-over-size-cap": _case_image_over_cap,
    "input/image-symlink-loop": _case_image_symlink_loop,
    "input/image-name-too-long": _case_image_name_too_long,
    "input/caption-named-pipe": _case_caption_fifo,
    "input/caption-not-utf8": _case_caption_not_utf8,
    "input/list-named-pipe": _case_list_fifo,
    "input/list-not-utf8": _case_list_not_utf8,
    "input/scheduler-config-named-pipe": _case_json_fifo,
    "input/npz-named-pipe": _case_npz_fifo,
    "input/npz-declares-8tb": _case_npz_declares_huge_array,
    "input/npz-inflates-1000x": _case_npz_inflates,
    "input/pt-named-pipe": _case_pt_fifo,
    "input/safetensors-named-pipe": _case_safetensors_fifo,
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_input(case, tmp_path):
    before = snapshot(tmp_path)
    INPUT_CASES[case](tmp_path)
    after = snapshot(tmp_path)
    assert all(after.get(k) == v for k, v in before.items())


# ----------------------------------------------------------------------------------------------------- decoding
def test_16bit_grey_pil_image_decodes_like_the_file(tmp_path):
    grey = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    im = Image.fromarray(grey)
    assert im.mode.startswith("I;16")
    im.save(tmp_path / "g.png")
    want = np.repeat(np.round(grey * (255 / 65535)).astype(np.uint8)[..., None], 3, -1)
    from_pil, _ = images_lib.load_image(im)
    from_file, _ = images_lib.load_image(tmp_path / "g.png")
    from_array, _ = images_lib.load_image(grey)
    for got in (from_pil, from_file, from_array):
        np.testing.assert_array_equal(got, want)
    assert from_pil.mean() < 200  # not the near-white a plain convert('RGB') gives


def test_transparent_rgba_is_composited_the_same_for_pil_array_and_file(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (32, 40, 4), np.uint8)
    rgba[:8, :, 3] = 0  # fully transparent rows
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = [images_lib.load_image(x)[0] for x in (rgba, Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")]
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[0], got[2])
    assert (got[0][:8] == 255).all()  # the stated background (white), not the hidden colour
    a = rgba[8:, :, 3:].astype(int)
    want = (rgba[8:, :, :3].astype(int) * a + 255 * (255 - a) + 127) // 255
    np.testing.assert_array_equal(got[0][8:], want)
    from fourdnex_jax.pipelines.api import as_image

    np.testing.assert_array_equal(as_image(rgba), got[0])  # the API's own entry point: the same


@pytest.mark.parametrize("top, scale", [(2**31 - 1, 2**31 - 1), (50000, 65535), (200, 255)])
def test_32bit_integer_tiff_scaled_by_its_real_range(tmp_path, top, scale):
    vals = np.linspace(0, top, 32 * 32).reshape(32, 32).astype(np.int64)
    got, _ = images_lib.load_image(_tiff32(tmp_path / "i.tif", vals))
    np.testing.assert_array_equal(got[..., 0], np.round(vals * (255 / scale)).astype(np.uint8))
    assert (got == 255).mean() < 0.05  # not clipped (it was 94% saturated)


def test_negative_32bit_tiff_is_refused(tmp_path):
    vals = np.full((20, 20), -5, np.int64)
    one_line_error(lambda: images_lib.load_image(_tiff32(tmp_path / "n.tif", vals)), "n.tif", "negative")


@pytest.mark.parametrize("area, multiple", [(64 * 96, (8, 8)), (480 * 720, (16, 16))])
@pytest.mark.parametrize("h, w", [(1, 4000), (4000, 1), (3, 5000)])
def test_thin_image_sampled_within_the_preset_area(h, w, area, multiple):
    from fourdnex_jax.pipelines.inputs import sample_size

    sh, sw = sample_size(h, w, area, multiple, "aspect")
    assert sh * sw <= area and sh % multiple[0] == 0 and sw % multiple[1] == 0
    assert sh * sw >= area // 2  # not starved either


@pytest.mark.parametrize("h, w, factor", [(16, 24, "4.0x"), (32, 48, "2.0x"), (56, 84, None), (64, 96, None),
                                           (400, 600, None)])
def test_a_small_input_gets_one_upscaling_note(h, w, factor):
    from fourdnex_jax.pipelines.inputs import prepare_image, upscale_note

    _, sizing = prepare_image(np.zeros((h, w, 3), np.uint8), 64 * 96, (8, 8))
    note = upscale_note(sizing, "photo.png")
    if factor is None:
        assert note is None
    else:
        assert note.startswith(f"note: photo.png is {h}x{w} px, upscaled {factor} to 64x96") and "\n" not in note


def test_tiny_image_is_refused_with_the_minimum(tmp_path):
    png(tmp_path / "small.png", np.zeros((8, 8, 3), np.uint8))
    from fourdnex_jax.pipelines.api import as_image

    one_line_error(lambda: as_image(tmp_path / "small.png"), "small.png", "8 x 8", f"{images_lib.MIN_SIDE} pixels")
    one_line_error(lambda: as_image(np.zeros((8, 8, 3), np.uint8)), "8 x 8")
    one_line_error(lambda: mio.check_image(tmp_path / "small.png", images_lib.MIN_SIDE), "small.png")


def test_large_jpeg_decodes_at_reduced_size_close_to_the_full_decode(tmp_path):
    from fourdnex_jax.pipelines.inputs import resize_target

    path = _jpeg(tmp_path / "big.jpg", 2000, 3000)
    target = lambda h, w: resize_target(h, w, 480 * 720 // 4, (16, 16), "aspect")  # noqa: E731
    fast, info = images_lib.load_image(path, target=target)
    full, _ = images_lib.load_image(path)
    th, tw = target(2000, 3000)
    assert info["draft_scale"] == 4 and fast.shape == (500, 750, 3) and min(fast.shape[:2]) >= 2 * th
    a, b = (np.asarray(Image.fromarray(x).resize((tw, th), Image.Resampling.BICUBIC)) for x in (fast, full))
    psnr = 10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2))
    assert psnr > 30, psnr


# ----------------------------------------------------------------------------------------------------- 2. outputs
def _result(path: Path, **extra: str) -> Path:
    with publish.publish_dir(path, writer="test") as d:
        (d / "summary.json").write_text("{}")
        (d / "rgb.mp4").write_bytes(b"old")
    for name, text in extra.items():
        (path / name).write_text(text)
    return path


def _case_overwrite_keeps_user_files(t: Path):
    out = _result(t / "out", **{"notes.txt": "mine"})
    (out / "photos").mkdir()
    (out / "photos" / "p.jpg").write_bytes(b"jpg")
    with publish.publish_dir(out, overwrite=True, writer="test") as d:
        (d / "summary.json").write_text('{"new": 1}')
    assert (out / "notes.txt").read_text() == "mine" and (out / "photos" / "p.jpg").read_bytes() == b"jpg"
    assert not (out / "rgb.mp4").exists() and (out / "summary.json").read_text() == '{"new": 1}'
    assert publish.read_marker(out)["entries"] == ["summary.json"]


def _case_overwrite_refuses_unmarked_folder(t: Path):
    out = t / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("chapter 1")
    (out / "photos").mkdir()
    with pytest.raises(OutputExistsError, match="holds no fourdnex result") as e:
        with publish.publish_dir(out, overwrite=True):
            pass
    assert str(out) in str(e.value) and "choose a new or empty folder" in str(e.value)
    assert (out / "thesis.tex").read_text() == "chapter 1"


def _case_refuses_protected_folders(t: Path):
    cwd = os.getcwd()
    try:
        os.chdir(t)
        for path, why in ((".", "current folder"), ("/", "root folder"), (str(Path.home()), "home folder")):
            one_line_error(lambda p=path: publish.check_output_dir(p, overwrite=True), why, "never replaced")
        (t / "in").mkdir()
        img = png(t / "in" / "x.png")
        one_line_error(lambda: publish.check_output_dir(t / "in", overwrite=True, inputs=[img]),
                       "holding the input")
    finally:
        os.chdir(cwd)


def _case_out_dot_with_overwrite_never_half_done(t: Path):
    _result(t / "res")
    cwd = os.getcwd()
    before = snapshot(t)
    try:
        os.chdir(t / "res")

        def attempt():
            with publish.publish_dir(".", overwrite=True) as d:
                (d / "x").write_text("new")
        one_line_error(attempt, "current folder")
    finally:
        os.chdir(cwd)
    assert snapshot(t) == before


def _case_second_writer_refused(t: Path):
    out = t / "out"
    t.mkdir(exist_ok=True)
    fd = os.open(t / ".out.lock", os.O_RDWR | os.O_CREAT)  # another run holds the lock (another open file)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        def attempt():
            with publish.publish_dir(out) as d:
                (d / "x").write_text("second")
        one_line_error(attempt, str(out), "another fourdnex run (pid 4242)", "wait")
    finally:
        os.close(fd)
    assert not out.exists()


def _case_killed_between_renames_restores_old(t: Path):
    out = _result(t / "out")
    retired = t / ".out.old-x"
    retired.mkdir()
    os.rename(out, retired / "result")  # a kill between the two renames of a publish without RENAME_EXCHANGE
    with pytest.raises(OutputExistsError):  # the next run finds the old result back in place, and keeps it
        with publish.publish_dir(out):
            pass
    assert (out / "rgb.mp4").read_bytes() == b"old" and not retired.exists()


def _case_dotdot_png_gets_its_own_folder(t: Path):
    from fourdnex_jax.pipelines.inputs import output_name

    names = {p: output_name(p) for p in ("..png", ".png", "....png", ".hidden.png", "a" * 300 + ".png", "ok.png")}
    assert names["..png"] == "_" and names["ok.png"] == "ok"
    for name in names.values():
        root = t / "root"
        dest = (root / name).resolve()
        assert dest.parent == root.resolve() and not name.startswith(".") and len(name.encode()) <= 120


def _case_symlink_out_refused(t: Path):
    (t / "real").mkdir()
    os.symlink(t / "real", t / "link")
    one_line_error(lambda: publish.check_output_dir(t / "link", overwrite=True), "symbolic link")


def _case_user_file_named_like_output(t: Path):
    out = _result(t / "out", **{"input.png": "user's own"})

    def attempt():
        with publish.publish_dir(out, overwrite=True) as d:
            (d / "input.png").write_text("ours")
    one_line_error(attempt, "'input.png'", "did not write", "nothing was changed")
    assert (out / "input.png").read_text() == "user's own" and (out / "rgb.mp4").exists()


def _case_out_name_too_long(t: Path):
    """A 250-byte --out name: refused before any work (its temporary sibling would not fit 255 bytes at the end)."""
    one_line_error(lambda: publish.check_output_dir(t / ("r" * 250)), "folder name too long", "241")
    one_line_error(lambda: publish.output_lock(t / ("r" * 250)).__enter__(), "too long")


OUTPUT_CASES: dict[str, Callable[[Path], None]] = {
    "output/overwrite-keeps-notes.txt": _case_overwrite_keeps_user_files,
    "output/overwrite-refuses-unmarked-folder": _case_overwrite_refuses_unmarked_folder,
    "output/refuses-dot-root-home-inputs": _case_refuses_protected_folders,
    "output/out-dot-overwrite-not-half-done": _case_out_dot_with_overwrite_never_half_done,
    "output/second-writer-refused": _case_second_writer_refused,
    "output/killed-between-renames-restored": _case_killed_between_renames_restores_old,
    "output/dotdot-png-own-folder": _case_dotdot_png_gets_its_own_folder,
    "output/symlink-out-refused": _case_symlink_out_refused,
    "output/user-file-named-like-output": _case_user_file_named_like_output,
    "output/out-name-too-long": _case_out_name_too_long,
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_output(case, tmp_path):
    OUTPUT_CASES[case](tmp_path)


# ----------------------------------------------------------------------------------------------------- 3. OS errors
def _raise(code: int):
    def f(*a, **k):
        raise OSError(code, os.strerror(code), str(a[0]) if a else None)
    return f


def _case_disk_full_during_publish(t: Path, monkeypatch):
    from fourdnex_jax.cli.common import error_line

    out = _result(t / "out")
    before = snapshot(t)
    monkeypatch.setattr(publish, "_fsync_tree", _raise(errno.ENOSPC))
    with pytest.raises(OSError) as e:
        with publish.publish_dir(out, overwrite=True) as d:
            (d / "summary.json").write_text("new")
    line = error_line(e.value)
    assert "no space left" in line and "\n" not in line and "previous result is unchanged" in line
    assert snapshot(t) == before and sorted(p.name for p in t.iterdir()) == ["out"]


def _case_read_only_destination_before_the_model(t: Path, monkeypatch):
    monkeypatch.setattr(publish.tempfile, "mkstemp", _raise(errno.EROFS))
    one_line_error(lambda: publish.check_writable(t / "out"), "read-only file system", "writable disk")


def _case_no_free_space_before_the_model(t: Path, monkeypatch):
    one_line_error(lambda: publish.check_writable(t / "out", need_bytes=2**62), "free", "need about")


def _case_library_disk_full_message(t: Path, monkeypatch):
    from fourdnex_jax.cli.common import error_line

    e = ValueError("INTERNAL: Error writing local file \"/x/d/abc\": [OS error 28: No space left on device]\n"
                   "=== Source Location Trace: ===\n" + "tensorstore/internal/x.cc:1\n" * 30)
    line = error_line(e)
    assert line.startswith("no space left") and "\n" not in line


def _case_memory_error_one_line(t: Path, monkeypatch):
    from fourdnex_jax.cli.common import error_line

    assert "out of memory" in error_line(MemoryError())


def _case_name_too_long_and_loop_on_write(t: Path, monkeypatch):
    from fourdnex_jax.cli.common import error_line

    for code, words in ((errno.ENAMETOOLONG, "file name too long"), (errno.ELOOP, "symlink loop"),
                        (errno.EROFS, "read-only file system")):
        try:
            _raise(code)(t / "x")
        except OSError as e:
            line = error_line(e)
        assert words in line and str(t / "x") in line, line


OS_CASES: dict[str, Callable[[Path, pytest.MonkeyPatch], None]] = {
    "os/disk-full-during-publish": _case_disk_full_during_publish,
    "os/read-only-destination-checked-first": _case_read_only_destination_before_the_model,
    "os/no-free-space-checked-first": _case_no_free_space_before_the_model,
    "os/tensorstore-disk-full-message": _case_library_disk_full_message,
    "os/memory-error": _case_memory_error_one_line,
    "os/name-too-long-loop-read-only": _case_name_too_long_and_loop_on_write,
}


@pytest.mark.parametrize("case", list(OS_CASES))
def test_os_error(case, tmp_path, monkeypatch):
    OS_CASES[case](tmp_path, monkeypatch)


# ----------------------------------------------------------------------------------------------------- 4. the CLI
# the smallest run of the tiny model: 2 steps, 5 frames, 48 x 64 (a loaded shared machine makes even this slow)
GEN = ["generate", "--nopostprocess", "--config.sample.num_steps=2", "--config.sample.num_frames=5",
       "--config.sample.max_area=3072"]
MODEL_TIMEOUT_S = 1800


def _cli(argv: list[str], cwd: Path, timeout: int = MODEL_TIMEOUT_S, preexec=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fourdnex_jax", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, preexec_fn=preexec)


def _assert_one_error(res: subprocess.CompletedProcess, cmd: str, *needles: str) -> str:
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(f"fourdnex {cmd}: error: ")]
    assert len(lines) == 1, out[-3000:]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]}"
    return lines[0]


def _cli_image_fifo(t: Path):
    res = _cli(GEN + ["--image", str(fifo(t / "p.png")), "--out", str(t / "o")], t, timeout=120)
    _assert_one_error(res, "generate", "p.png", "named pipe")


def _cli_dev_zero(t: Path):
    res = _cli(GEN + ["--image", "/dev/zero", "--out", str(t / "o")], t, timeout=120)
    _assert_one_error(res, "generate", "/dev/zero", "character device")


def _cli_list_with_fifo_and_dotdot(t: Path):
    """An --images list: a named-pipe entry is skipped with one line; ``..png`` goes to OUT/_ (not the root)."""
    os.rename(png(t / "x.png"), t / "..png")
    fifo(t / "pipe.png")
    (t / "list.txt").write_text("..png\npipe.png\n")
    root = t / "out"
    root.mkdir()
    (root / "todo.txt").write_text("keep")
    res = _cli(GEN + ["--images", str(t / "list.txt"), "--out", str(root), "--overwrite"], t)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "skipped" in res.stderr and "named pipe" in res.stderr
    assert (root / "todo.txt").read_text() == "keep" and publish.read_marker(root / "_") is not None
    assert sorted(p.name for p in root.iterdir()) == ["_", "todo.txt"]


def _cli_overwrite_keeps_notes(t: Path):
    img = png(t / "i.png")
    out = t / "res"
    first = _cli(GEN + ["--image", str(img), "--out", str(out)], t)
    assert first.returncode == 0, first.stderr[-3000:]
    (out / "notes.txt").write_text("my notes")
    again = _cli(GEN + ["--image", str(img), "--out", str(out), "--overwrite", "--config.sample.seed=7"], t)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "my notes" and (out / "pointmaps.npz").exists()


def _cli_overwrite_refuses_plain_folder(t: Path):
    out = t / "photos"
    out.mkdir()
    (out / "todo.txt").write_text("x")
    before = snapshot(t)
    for cmd in (GEN + ["--image", str(png(t / "i.png"))], ["convert", "--src", str(t / "nosrc")],
                ["export", "--src", str(TINY)]):
        before = snapshot(t)
        res = _cli(cmd + ["--out", str(out), "--overwrite"], t, timeout=300)
        _assert_one_error(res, cmd[0], str(out), "holds no fourdnex result")
        assert snapshot(t) == before


def _cli_out_dot_overwrite(t: Path):
    (t / "notes.txt").write_text("x")
    img = png(t / "i.png")
    before = snapshot(t)
    res = _cli(GEN + ["--image", str(img), "--out", ".", "--overwrite"], t, timeout=300)
    _assert_one_error(res, "generate", "current folder", "never replaced")
    assert snapshot(t) == before


def _cli_concurrent_generate(t: Path):
    """Two generate runs into one new --out: one complete result, one clear refusal (no lost result)."""
    img = png(t / "i.png")
    out = t / "same"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "fourdnex_jax", *GEN, "--image", str(img), "--out", str(out),
                               f"--config.sample.seed={s}"], cwd=t, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    res = [p.communicate(timeout=MODEL_TIMEOUT_S) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errs = "".join(e for _, e in res)
    assert codes == [0, 1], errs[-3000:]
    assert "Traceback" not in errs and ("another fourdnex run" in errs or "already holds a result" in errs), errs
    assert publish.read_marker(out) is not None and (out / "pointmaps.npz").exists()
    assert sorted(p.name for p in t.iterdir()) == ["i.png", "same"]  # no temporary folder or lock left


def _cli_export_file_too_large(t: Path):
    """A write the OS refuses half-way (here the file-size limit: EFBIG; a full disk goes the same way): one line,
    nothing published."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    res = _cli(["export", "--src", str(TINY), "--out", str(t / "exp"), "--noprogress"], t, timeout=300,
               preexec=limit)
    _assert_one_error(res, "export", "too large")
    assert sorted(p.name for p in t.iterdir()) == []


def _cli_missing_index_truncated_chunk(t: Path):
    """A bundle whose checkpoint file index is gone and one data file cut: one line, and none of tensorstore's
    'Event loop is closed' tracebacks from its background threads."""
    b = _bundle(t)
    (b / "transformer" / "fourdnex_files.json").unlink()
    _truncated(max((b / "transformer").rglob("d/*"), key=lambda p: p.stat().st_size))
    res = _cli(GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(b), "--out", str(t / "o")], t)
    _assert_one_error(res, "generate", str(b / "transformer"))
    assert "Event loop is closed" not in res.stderr


CLI_CASES: dict[str, Callable[[Path], None]] = {
    "cli/generate-image-named-pipe": _cli_image_fifo,
    "cli/generate-image-dev-zero": _cli_dev_zero,
    "cli/generate-list-pipe-and-dotdot-png": _cli_list_with_fifo_and_dotdot,
    "cli/generate-overwrite-keeps-notes": _cli_overwrite_keeps_notes,
    "cli/overwrite-refuses-plain-folder": _cli_overwrite_refuses_plain_folder,
    "cli/generate-out-dot-overwrite": _cli_out_dot_overwrite,
    "cli/generate-concurrent-same-out": _cli_concurrent_generate,
    "cli/export-write-refused-by-os": _cli_export_file_too_large,
    "cli/bundle-no-index-truncated-chunk": _cli_missing_index_truncated_chunk,
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli(case, tmp_path):
    CLI_CASES[case](tmp_path)


def test_cases_are_counted_in_the_docs():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    cases = [*INPUT_CASES, *OUTPUT_CASES, *OS_CASES, *CLI_CASES]
    missing = [c for c in cases if f"`{c}`" not in doc]
    assert not missing, f"docs/reliability.md does not list {missing}"
    assert f"{len(cases)} cases of user input, output folders and OS errors" in doc


def test_publish_without_renameat2_replaces_and_keeps_user_files(tmp_path, monkeypatch):
    """Where the C library or the file system has no renameat2: two renames, same result, nothing left over."""
    monkeypatch.setattr(publish, "_renameat2", lambda *a: False)
    out = _result(tmp_path / "out", **{"notes.txt": "mine"})
    with publish.publish_dir(out, overwrite=True) as d:
        (d / "summary.json").write_text("new")
    assert (out / "notes.txt").read_text() == "mine" and (out / "summary.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
