"""The official 4DNeX run's conventions, without torch: one seed for every image (a result does not depend on its
place in the list or on the batching), an exact initial noise (``noise=`` / ``--noise FILE.npy``, this project's
layout or the official NCTHW one), and the official output layout (``official=True`` / ``--official-outputs``)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.media.io import load_npy_checked, load_npz, read_video
from fourdnex_jax.pipelines.api import ImageTo4DPipeline
from fourdnex_jax.pipelines.outputs import OFFICIAL_FPS, official_layout
from fourdnex_jax.recipe import SamplingPreset
from fourdnex_jax.testing.random_models import write_random_bundle
from fourdnex_jax.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
T, H, W = 5, 32, 48
PRESET = SamplingPreset(num_frames=T, max_area=H * W, num_steps=2, guidance_scale=1.0, negative_prompt="",
                        text_len=16, flow_shift=3.0, solver="unipc")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_random_bundle(tmp_path_factory.mktemp("official") / "bundle", captions=("a ball", "a box"),
                               preset=PRESET)


def _images():
    rng = np.random.default_rng(3)
    return [(rng.random((H, W, 3)) * 255).astype(np.uint8) for _ in range(3)]


@pytest.fixture(scope="module")
def pipe(bundle):
    return ImageTo4DPipeline.from_pretrained(bundle)


def test_reordering_the_images_leaves_each_result_unchanged(pipe):
    """Three images and the same three reversed: every image's result is bit-identical (every image starts from
    the same seed's noise; before, image i got seed + i and swapping two changed XYZ by up to 1.18). (A different
    ``batch_size`` may change the last bits, through XLA's batched kernels: 7e-7 measured for 3 vs 2.)"""
    imgs, prompts = _images(), ["a ball", "a box", "a ball"]
    forward = pipe.generate(imgs, prompts, progress=False)
    backward = pipe.generate(imgs[::-1], prompts[::-1], progress=False)[::-1]
    for a, b in zip(forward, backward):
        np.testing.assert_array_equal(a.output.latents, b.output.latents)
        np.testing.assert_array_equal(a.xyz, b.xyz)
        assert a.output.seed == b.output.seed == 42 and a.summary["settings"]["seed"] == 42
    assert not np.array_equal(forward[0].xyz, forward[2].xyz)  # different images, different results


def test_exact_noise_in_either_layout(pipe):
    """``noise=`` equal to the seeded noise gives the seeded result bit for bit, in this project's layout or the
    official (1, 16, T', h, 2w) one; a wrong shape or dtype is one line naming the argument and both shapes."""
    img = _images()[0]
    seeded = pipe(img, "a ball", seed=7, progress=False)
    x0 = pipe.pipe.noise(7, H, W)  # (T', h, 2w, 16)
    ours = pipe(img, "a ball", noise=x0, progress=False)
    official = pipe(img, "a ball", noise=np.moveaxis(x0, -1, 0)[None].copy(), progress=False)
    np.testing.assert_array_equal(ours.output.latents, seeded.output.latents)
    np.testing.assert_array_equal(official.output.latents, seeded.output.latents)
    assert ours.summary["initial_noise"] == "given (noise=)"
    with pytest.raises(InputError, match=r"noise: float64 array of shape \(2, 4, 12, 16\); image 0 needs float32"):
        pipe(img, "a ball", noise=x0.astype(np.float64), progress=False)
    with pytest.raises(InputError, match=r"noise: float32 array of shape \(2, 4, 6, 16\); image 0 needs float32 of "
                                         r"shape \(2, 4, 12, 16\) \(T', h, 2w, C\) or \(1, 16, 2, 4, 12\)"):
        pipe(img, "a ball", noise=x0[:, :, :6].copy(), progress=False)


def test_official_layout_truncates_and_maps_to_unit_range():
    video = np.zeros((1, 2, 4, 3), np.float32)  # (T, H, 2W, 3) in [-1, 1]
    video[0, 0, 0] = 2 * (254.9 / 255) - 1  # rounds to 255, truncates to 254 (the official rule)
    video[0, 0, 3] = [-1.0, 0.0, 1.0]  # an XYZ pixel: pcd = video / 2 + 0.5
    frames, arrays = official_layout(video)
    assert frames.dtype == np.uint8 and frames.shape == (1, 2, 4, 3)
    assert frames[0, 0, 0].tolist() == [254, 254, 254] and frames[0, 0, 3].tolist() == [0, 127, 255]
    assert arrays["pcd"].shape == (1, 4, 3) and arrays["pcd"][0, 1].tolist() == [0.0, 0.5, 1.0]
    assert arrays["rgb"].shape == (1, 2, 2, 3) and arrays["colors"].shape == (1, 4, 3)
    np.testing.assert_array_equal(2 * arrays["pcd"].reshape(1, 2, 2, 3) - 1, video[:, :, 2:])


def test_load_npy_checked(tmp_path):
    np.save(tmp_path / "ok.npy", np.ones((2, 3), np.float32))
    assert load_npy_checked(tmp_path / "ok.npy").shape == (2, 3)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy: dtype object is not a plain numeric"):
        load_npy_checked(tmp_path / "obj.npy")
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(data[:-4])
    with pytest.raises(InputError, match=r"short.npy: the header declares shape \(2, 3\) float32 \(24 bytes\) but "
                                         r"the file holds 20"):
        load_npy_checked(tmp_path / "short.npy")
    np.savez(tmp_path / "z.npz", a=np.ones(2))
    with pytest.raises(InputError, match="z.npz: not an .npy array"):
        load_npy_checked(tmp_path / "z.npz")


@pytest.mark.integration
def test_generate_cli_seed_noise_order_and_official_outputs(bundle, pipe, tmp_path):
    """``fourdnex generate``: a list with ``--seed 5 --official-outputs`` and the reversed list started from
    ``--noise`` = seed 5's noise in the official layout give the same per-image files (order-free seeds, the exact
    noise path); the official files are written; a --noise of the wrong shape is one line naming the file and the
    shape, before any weights load."""
    import av
    from PIL import Image

    names = ["a", "b"]
    for name, img in zip(names, _images()):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
    (tmp_path / "fwd.txt").write_text("a.png\ta ball\nb.png\ta box\n")
    (tmp_path / "bwd.txt").write_text("b.png\ta box\na.png\ta ball\n")
    np.save(tmp_path / "noise.npy", np.moveaxis(pipe.pipe.noise(5, H, W), -1, 0)[None].copy())  # (1, 16, T', h, 2w)

    def generate(*args):
        cmd = [sys.executable, "-m", "fourdnex_jax", "generate", "--checkpoint", str(bundle), "--nopostprocess",
               *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)

    np.save(tmp_path / "bad.npy", np.zeros((2, 4, 6, 16), np.float32))
    r = generate("--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "bad"), "--noise",
                 str(tmp_path / "bad.npy"))
    assert r.returncode != 0 and not (tmp_path / "bad").exists() and "Traceback" not in r.stderr
    assert f"fourdnex generate: error: --noise {tmp_path / 'bad.npy'}: float32 array of shape (2, 4, 6, 16); " \
        in r.stderr
    r = generate("--images", str(tmp_path / "fwd.txt"), "--out", str(tmp_path / "fwd"), "--seed", "5",
                 "--official-outputs")
    assert r.returncode == 0, r.stderr[-2000:]
    r = generate("--images", str(tmp_path / "bwd.txt"), "--out", str(tmp_path / "bwd"), "--noise",
                 str(tmp_path / "noise.npy"))
    assert r.returncode == 0, r.stderr[-2000:]
    for name in names:
        a, b = (load_npz(tmp_path / d / name / "pointmaps.npz") for d in ("fwd", "bwd"))
        np.testing.assert_array_equal(a["xyz"], b["xyz"])
        summary = json.loads((tmp_path / "fwd" / name / "summary.json").read_text())
        assert summary["seed"] == 5 and summary["schedule"]["sigma_schedule"] == "diffusers_0_34"
        assert "official_pointmap.npz" in summary["files"]
        given = json.loads((tmp_path / "bwd" / name / "summary.json").read_text())["initial_noise"]
        assert given == f"given: --noise {tmp_path / 'noise.npy'}"
        official = load_npz(tmp_path / "fwd" / name / "official_pointmap.npz")
        np.testing.assert_allclose(2 * official["pcd"].reshape(a["xyz"].shape) - 1, a["xyz"], atol=1e-6)
        assert read_video(tmp_path / "fwd" / name / "official_canvas.mp4").shape == (T, H, 2 * W, 3)
        with av.open(str(tmp_path / "fwd" / name / "official_canvas.mp4")) as c:
            assert c.streams.video[0].average_rate == OFFICIAL_FPS
        assert not (tmp_path / "bwd" / name / "official_canvas.mp4").exists()
