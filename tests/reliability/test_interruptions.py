"""Interrupted work never leaves a result that looks complete (issue 18): a kill -9 at several points of a result's
save (pipelines/outputs.py::save_result, what ``fourdnex generate`` and ``Result.save`` run) and of ``fourdnex
export`` (jax-to-torch) leaves, in the output folder, either the previous complete result or a new complete one
(or none), never a mix; a later run cleans the hidden temporary folder up."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "checkpoints" / "tiny"

SAVE = """
import dataclasses, sys, numpy as np
from fourdnex_jax.pipelines.outputs import save_result
from fourdnex_jax.testing import scenes

@dataclasses.dataclass
class R:
    rgb: np.ndarray
    xyz: np.ndarray
    image: np.ndarray
    prompt: str
    seed: int
    xyz_normalization: str

inp, _ = scenes.pointmap_sequence(0, frames=6, height=48, width=64)
r = R(inp["rgb"], inp["xyz"], inp["rgb"][0], sys.argv[2], 1, "sequence")
save_result(r, sys.argv[1], geometry=True, overwrite=True)
"""


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _kill_when_writing(cmd: list[str], out: Path, delay: float, timeout: float = 600) -> int | None:
    """Starts ``cmd``, waits until its temporary sibling of ``out`` appears, sleeps ``delay`` seconds, then sends
    SIGKILL; returns the exit status (None: it had finished before the kill)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=out.parent)
    t0 = time.monotonic()
    while proc.poll() is None and not list(out.parent.glob(f".{out.name}.tmp-*")):
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise TimeoutError(cmd)
        time.sleep(0.005)
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return None if finished else proc.returncode


def _complete_result(out: Path) -> bool:
    summary = json.loads((out / "summary.json").read_text())
    return all((out / f.rstrip("/")).exists() for f in summary["files"] + summary["geometry"]["files"])


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 2.5])
def test_kill_during_save_result_leaves_the_previous_or_the_new_result(tmp_path, delay):
    out = tmp_path / "result"
    first = subprocess.run([sys.executable, "-c", SAVE, str(out), "previous"], env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(out)
    rc = _kill_when_writing([sys.executable, "-c", SAVE, str(out), "new"], out, delay)
    assert out.is_dir() or rc is not None  # absent only if the kill fell between the two renames
    if out.is_dir():
        after = snapshot(out)
        prompt = json.loads((out / "summary.json").read_text())["prompt"]
        if prompt == "previous":
            assert after == before, "the previous result was changed"
        else:  # the kill came after the publishing rename: the new result, complete
            assert prompt == "new" and _complete_result(out)
    again = subprocess.run([sys.executable, "-c", SAVE, str(out), "third"], env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]  # the killed run's temporary folder is gone
    assert json.loads((out / "summary.json").read_text())["prompt"] == "third" and _complete_result(out)


def _complete_export(out: Path) -> bool:
    manifest = json.loads((out / "manifest.json").read_text())
    files = [out / name / f for name, m in manifest["models"].items() for f in m["files"]]
    files += [out / "adapter" / f for f in manifest.get("adapter", {}).get("files", {})]
    return all(f.exists() for f in files)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_kill_during_export_leaves_no_partial_export(tmp_path, delay):
    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "fourdnex_jax", "export", "--src", str(TINY), "--out", str(out), "--noprogress"]
    rc = _kill_when_writing(cmd, out, delay)
    if out.exists():  # the kill came after the publishing rename (or the export finished first)
        assert _complete_export(out)
    else:
        assert rc == -signal.SIGKILL
        assert subprocess.run(cmd, env=_env(), capture_output=True, timeout=600).returncode == 0
    # a second export over a complete one, killed: the complete one stays, or the new complete one replaced it
    # (or, killed between the two renames, none)
    before = snapshot(out)
    rc = _kill_when_writing(cmd + ["--overwrite"], out, delay)
    if out.exists():
        assert _complete_export(out)
        manifest = json.loads((out / "manifest.json").read_text())
        if snapshot(out) != before:  # not the previous export: then wholly the new one
            assert all(snapshot(out).get(k) is not None for k in before if not k == "manifest.json")
            assert manifest["direction"] == "jax-to-torch"
    else:
        assert rc == -signal.SIGKILL
    again = subprocess.run(cmd + ["--overwrite"], env=_env(), capture_output=True, timeout=600)
    assert again.returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["export"]
