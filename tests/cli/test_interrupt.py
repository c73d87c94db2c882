"""Ctrl-C at every stage of `fourdnex generate`: one line on stderr, exit status 130 (never a traceback, a
segfault or a hang), and nothing left in or beside --out (fourdnex_jax/utils/interrupts.py)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINE = "fourdnex generate: interrupted; nothing written to --out"
#: When to interrupt: once stderr shows the stage (the imports of JAX and the models run before the first; the last
#: runs inside the publishing of the result folder, where the interrupt unwinds to remove the half-written folder).
#: A float: that many seconds after the first stage line (an instant inside loading / compiling).
POINTS = ["loading models", 1.0, "setting up the sampler", "sampling", "decoding", "geometry + exports"]


def _interrupt_at(point, tmp_path: Path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fourdnex_jax", "generate", "--image", ROOT / "examples" / "synth_heldout_000000.png",
         "--out", out], cwd=tmp_path, env=dict(env, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = bytearray()

    def read():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            err.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    marker = "loading models" if isinstance(point, float) else point
    while marker.encode() not in err and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if isinstance(point, float):
        time.sleep(point)
    reached = proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{point}: no exit 120 s after SIGINT")
    reader.join(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    return reached, proc.returncode, err.decode(errors="replace"), out


@pytest.mark.integration
@pytest.mark.parametrize("point", POINTS, ids=[str(p) for p in POINTS])
def test_ctrl_c_is_one_line_and_exit_130(point, tmp_path):
    reached, rc, err, out = _interrupt_at(point, tmp_path)
    assert reached, f"generate finished before {point!r}: {err[-2000:]}"
    assert rc == 130, f"{point}: exit {rc}\n{err[-3000:]}"
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == LINE, err[-3000:]
    assert err.count("interrupted") == 1
    assert not out.exists() and not list(tmp_path.glob(".out.*")), sorted(p.name for p in tmp_path.iterdir())
