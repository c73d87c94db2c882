"""The clip-level 4D verdict (fourdnex_jax/geometry/consistency.py): true scenes pass, with realistic noise and
moving objects; frames of other scenes and a frozen video are refused; the shipped example's ground truth passes.
Thresholds and their evidence on 16 held-out clips: `python -m benchmarks.consistency_verdict` (docs/tiny_model.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.geometry import consistency, register, se3
from fourdnex_jax.testing.scenes import pointmap_sequence

ROOT = Path(__file__).resolve().parents[2]
SIZE = dict(frames=9, height=48, width=72, normalization="reference", dome_radius=12.0, sky_valid=True)


def _reg(xyz, valid, rgb=None):
    with np.errstate(all="ignore"):
        return register.register(np.asarray(xyz, np.float64), valid, rgb=rgb, normalization="reference")


@pytest.fixture(scope="module")
def clips():
    return [pointmap_sequence(i, **SIZE)[0] for i in range(9)]  # 9 scenes: a video can take each frame from another


def test_search_recovers_a_known_translation():
    inp, _ = pointmap_sequence(1, **SIZE)
    reg = _reg(inp["xyz"], inp["valid"])
    t, (h, w) = 1, inp["xyz"].shape[1:3]
    pts, ok = reg.points_world.reshape(9, -1, 3).astype(np.float64), reg.valid.reshape(9, -1)
    w2c = se3.invert_se3(reg.c2w)
    dst = pts[t] @ w2c[t, :3, :3].T + w2c[t, :3, 3]
    depth = np.where(ok[t], dst[:, 2], 0.0).reshape(h, w)
    shift = np.array([0.07, -0.01, 0.03])  # frame 0's points displaced in camera 1's coordinates
    src = pts[t - 1] @ w2c[t, :3, :3].T + w2c[t, :3, 3]
    base = consistency.search_offset(src, ok[t - 1], depth, ok[t].reshape(h, w), reg.K)
    moved = consistency.search_offset(src + shift, ok[t - 1], depth, ok[t].reshape(h, w), reg.K)
    np.testing.assert_allclose(moved - base, shift, atol=0.006)  # the finest search step is 0.0025


def test_true_scenes_pass_with_noise_and_moving_objects(clips):
    rng = np.random.default_rng(0)
    for inp in clips[:3]:  # every clip has moving objects (synthetic.make_scene: at most one static)
        for xyz in (inp["xyz"], inp["xyz"] + rng.normal(0, 0.01, inp["xyz"].shape)):
            reg = _reg(xyz, inp["valid"], inp["rgb"])
            assert reg.clip.consistent, reg.clip.message()
            assert reg.clip.message().startswith("4D: consistent, 9/9 frames registered")


@pytest.mark.parametrize("colours", [True, False])
def test_frames_of_other_scenes_are_refused(clips, colours):
    """Frame t of scene t: every frame alone is a true pinhole map. (A single cut between two look-alike scenes
    can pass: README, "Known limit".)"""
    mixed = np.stack([clips[t]["xyz"][t] for t in range(9)])
    rgb = np.stack([clips[t]["rgb"][t] for t in range(9)]) if colours else None
    reg = _reg(mixed, np.ones(mixed.shape[:3], bool), rgb)
    assert not reg.clip.consistent
    assert reg.clip.message().startswith("not a consistent 4D scene: ")


def test_a_frozen_video_is_refused(clips):
    frozen = np.repeat(clips[0]["xyz"][:1], 9, 0)
    reg = _reg(frozen, np.ones(frozen.shape[:3], bool))
    assert reg.status.num_registered == 9  # every frame alone is a perfect pinhole map
    assert not reg.clip.consistent and "nothing moves" in reg.clip.reason


def test_the_shipped_example_ground_truth_passes():
    gt = np.load(ROOT / "examples" / "synth_heldout_000000_gt.npz")
    reg = _reg(gt["xyz"], gt["valid"].astype(bool), gt["rgb"])
    assert reg.clip.consistent, reg.clip.message()
    d = reg.clip.to_dict()
    assert len(d["pairs"]) == 8 and all(p["agreement"] >= consistency.MIN_AGREEMENT for p in d["pairs"])


def test_colour_units(clips):
    """uint8 and floats in [0, 1] are the same colours; floats in [0, 255] (another unit) are refused, not read as
    frames that disagree (they once made every VAE reconstruction "agree on 0% of their points")."""
    inp = clips[0]
    as_uint8 = _reg(inp["xyz"], inp["valid"], inp["rgb"]).clip.to_dict()
    as_unit = _reg(inp["xyz"], inp["valid"], inp["rgb"] / 255.0).clip.to_dict()
    assert as_uint8 == as_unit and as_uint8["consistent"]
    with pytest.raises(ValueError, match="uint8 or floats in"):
        _reg(inp["xyz"], inp["valid"], inp["rgb"].astype(np.float32))
