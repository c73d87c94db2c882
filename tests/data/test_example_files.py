"""The bundled example (``examples/``) is exactly what ``python -m fourdnex_jax.dev make-example`` writes from the
current renderer, at the shipped tiny model's size and sky dome: its ground truth describes its image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.helpers import ROOT, run_python

EXAMPLE = ROOT / "examples" / "synth_heldout_000000"


def test_the_shipped_example_is_what_make_example_writes(tmp_path):
    shipped = np.load(f"{EXAMPLE}_gt.npz")
    t, h, w = shipped["rgb"].shape[:3]
    dome = float(shipped["dome_radius"])
    run_python("-m", "fourdnex_jax.dev", "make-example", "--out", tmp_path, "--frames", t, "--height", h, "--width",
               w, "--dome-radius", dome, check=True)
    fresh = np.load(tmp_path / "synth_heldout_000000_gt.npz")
    assert sorted(fresh) == sorted(shipped)
    for k in shipped:
        np.testing.assert_array_equal(fresh[k], shipped[k], err_msg=k)
    assert (tmp_path / "synth_heldout_000000.txt").read_text() == EXAMPLE.with_suffix(".txt").read_text()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "synth_heldout_000000.png")), shipped["rgb"][0])
    np.testing.assert_array_equal(np.asarray(Image.open(EXAMPLE.with_suffix(".png"))), shipped["rgb"][0])
    # self-consistent: frame 0's pointmap, de-normalised, has the depth map as its z (the normalisation clips the
    # 2% extremes of each axis, so most pixels, not all)
    xyz0 = shipped["xyz"][0].astype(np.float64) * shipped["scale"] + shipped["centers"][0]
    agree = np.abs(xyz0[..., 2] - shipped["depth"][0]) <= 0.01 * shipped["depth"][0]
    assert agree.mean() > 0.8, agree.mean()
