"""nerfstudio's own data parser (nerfstudio 1.1.5, `Nerfstudio` / `NerfstudioDataParserConfig`) on our results, in
a child process with the python of a throwaway venv named by FOURDNEX_NERFSTUDIO_PYTHON (how to make one:
CONTRIBUTING.md, "nerfstudio's data parser"): a registered result (the shipped example's ground-truth pointmap
through `fourdnex register`) loads with every frame, the image size and the cameras we wrote; an unregistered one
has no transforms.json, says so on the console, and nerfstudio's parser names the missing file instead of failing
deep inside with an IndexError."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.media.io import atomic_save_npz
from tests.helpers import ROOT, run_cli

NS_PYTHON = os.environ.get("FOURDNEX_NERFSTUDIO_PYTHON")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(not NS_PYTHON, reason="FOURDNEX_NERFSTUDIO_PYTHON (a python with nerfstudio==1.1.5) is unset; "
                       "CONTRIBUTING.md says how to make one"),
]

# Runs under nerfstudio's python: the parser as ns-train builds it (eval_mode "all": every frame in the split),
# its outputs as JSON; poses undone to the file's axes (nerfstudio re-orients and re-scales them).
LOAD = """
import json, sys
from pathlib import Path
import numpy as np
import nerfstudio
from importlib.metadata import version
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
out = NerfstudioDataParserConfig(data=Path(sys.argv[1]), eval_mode="all").setup().get_dataparser_outputs("train")
cams = out.cameras
poses = cams.camera_to_worlds.numpy().astype(np.float64)
poses[:, :3, 3] /= out.dataparser_scale
T = np.eye(4)
T[:3] = out.dataparser_transform.numpy()
poses = np.linalg.inv(T) @ np.concatenate([poses, np.tile([[[0, 0, 0, 1.0]]], (len(poses), 1, 1))], 1)
print(json.dumps(dict(version=version("nerfstudio"), files=[p.name for p in out.image_filenames],
                      width=cams.width.flatten().tolist(), height=cams.height.flatten().tolist(),
                      fx=cams.fx.flatten().tolist(), cy=cams.cy.flatten().tolist(), c2w=poses.tolist())))
"""


def _nerfstudio_load(folder: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    return subprocess.run([NS_PYTHON, "-c", LOAD, str(folder)], capture_output=True, text=True, timeout=600,
                          env=env)


def test_nerfstudio_parser_loads_a_registered_result(tmp_path):
    gt = ROOT / "examples" / "synth_heldout_000000_gt.npz"
    with np.load(gt) as z:
        t, h, w = z["xyz"].shape[:3]
    res = run_cli("register", "--pointmaps", gt, "--out", tmp_path / "result", "--normalization", "metric",
                  "--novideo")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"transforms.json: the {t} registered frame(s) of {t}" in res.stderr, res.stderr
    meta = json.loads((tmp_path / "result" / "transforms.json").read_text())
    loaded = _nerfstudio_load(tmp_path / "result")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert got["version"] == "1.1.5"
    assert got["files"] == [f"frame_{i:05d}.png" for i in range(t)]
    assert got["width"] == [w] * t and got["height"] == [h] * t
    np.testing.assert_allclose(got["fx"], meta["fl_x"], rtol=1e-6)
    np.testing.assert_allclose(got["cy"], meta["cy"], rtol=1e-6)
    wrote = np.array([f["transform_matrix"] for f in meta["frames"]])
    np.testing.assert_allclose(got["c2w"], wrote, atol=1e-4)  # nerfstudio reads the poses we wrote, in its axes


def test_unregistered_result_has_no_transforms_json_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    pointmaps = tmp_path / "noise.npz"  # no pinhole camera sees these points: every camera is rejected
    atomic_save_npz(pointmaps, xyz=rng.normal(size=(3, 16, 24, 3)).astype(np.float32))
    res = run_cli("register", "--pointmaps", pointmaps, "--out", tmp_path / "result", "--normalization", "sequence",
                  "--novideo")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "transforms.json: not written, no camera of the 3 frames is registered" in res.stderr, res.stderr
    assert not (tmp_path / "result" / "transforms.json").exists()
    loaded = _nerfstudio_load(tmp_path / "result")
    assert loaded.returncode != 0
    last = loaded.stderr.strip().splitlines()[-1]
    assert last.startswith("FileNotFoundError") and "transforms.json" in last, loaded.stderr[-3000:]
