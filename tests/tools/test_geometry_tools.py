"""fourdnex register, render and eval-geometry end to end (subprocesses) on a small synthetic
pointmap video."""

import json

import pytest

from fourdnex_jax.media.io import atomic_save_npz, read_video
from fourdnex_jax.testing import scenes
from tests.helpers import run_cli


@pytest.mark.integration
def test_register_render_eval_cli(tmp_path):
    inp, _ = scenes.pointmap_sequence(0, frames=4, height=24, width=32)
    atomic_save_npz(tmp_path / "run" / "synth_heldout_000000" / "pointmaps.npz", **inp)
    npz = tmp_path / "run" / "synth_heldout_000000" / "pointmaps.npz"
    summary = json.loads(run_cli("register", "--pointmaps", npz, "--out", tmp_path / "geo",
                              "--normalization", "sequence", "--novideo", check=True).stdout)
    assert summary["normalization"] == "sequence" and (tmp_path / "geo" / "cameras.json").exists()
    report = json.loads(run_cli("render", "--scene", tmp_path / "geo", "--out", tmp_path / "o.mp4",
                             "--frames", "3", "--size", "16x20", check=True).stdout)
    assert report["frames"] == 3 and read_video(tmp_path / "o.mp4").shape == (3, 16, 20, 3)
    run_cli("eval-geometry", "--num", "1", "--frames", "4", "--size", "24x32", "--results",
         tmp_path / "run", "--out", tmp_path / "report.json", check=True).stdout
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert rows["results"][0]["name"] == "synth_heldout_000000"
    assert rows["results"][0]["pose"]["ate_rel"] < 1e-6 and "fallback" not in rows["ground_truth"][0]
