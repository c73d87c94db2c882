"""The README's main job (tools/smoke.py) runs end to end and writes finite outputs atomically."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_job(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "tools/smoke.py", "--config", "configs/tiny.py", "--out", str(tmp_path),
                          "--config.smoke.num_steps=2"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "summary: tiny smoke run, 2 steps" in res.stdout
    assert "sampling (tiny, 144 tokens): 2/2" in res.stderr  # progress is shown
    with np.load(tmp_path / "latents.npz", allow_pickle=False) as z:
        assert z["latents"].shape == (1, 3, 8, 24, 16)
        assert z["rgb"].shape == z["xyz"].shape == (1, 3, 8, 12, 16)
        assert np.isfinite(z["latents"]).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["latent_shape"] == [1, 3, 8, 24, 16]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
