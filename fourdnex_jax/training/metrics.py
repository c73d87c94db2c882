"""Training metrics writers: TensorBoard, JSON lines, console.

The FLOP count behind ``tflops_per_device`` / ``mfu`` is :mod:`fourdnex_jax.models.transformer.flops` and the
device peak :func:`fourdnex_jax.utils.devices.peak_tflops` (the trainer computes both).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fourdnex_jax.media.io import atomic_write_bytes


def _step_of(line: bytes) -> int | None:
    """The step of one metrics.jsonl line; None for a line that is not one of ours (a torn last line of a killed
    run, or garbage)."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError, IndexError):  # UnicodeDecodeError is a ValueError
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


class MetricsWriter:
    """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard event files (``workdir/tb``, tensorboardX: no
    TensorFlow), and prints one console line per log step. Only process 0 writes."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True,
                 keep_until_step: int | None = None):
        """``keep_until_step``: a resumed run's start step; the lines of ``metrics.jsonl`` past it (logged by the
        run that was killed after its last checkpoint, and trained again now) are dropped first, so every step
        appears once. TensorBoard gets the same through its purge marker (a ``SessionLog.START`` event at
        ``keep_until_step + 1`` opening the new event file: TensorBoard discards the earlier files' events from that
        step on)."""
        self.enabled = enabled
        self.workdir = Path(workdir)
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "metrics.jsonl"
        if keep_until_step is not None and path.exists():
            lines = path.read_bytes().splitlines(keepends=True)
            steps = [_step_of(ln) for ln in lines]
            kept = [ln if ln.endswith(b"\n") else ln + b"\n"
                    for ln, s in zip(lines, steps) if s is not None and s <= keep_until_step]
            bad = sum(s is None for s in steps[:-1]) + (steps[-1:] == [None] and lines[-1].endswith(b"\n"))
            if bad:  # a torn last line (no newline) is what a kill leaves: dropped without a word
                print(f"metrics: {path}: skipped {bad} unreadable line(s) (not JSON with a step); they are not "
                      "kept", file=sys.stderr, flush=True)
            atomic_write_bytes(path, b"".join(kept))
        self._jsonl = open(path, "a", buffering=1)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional: JSON lines are always written
                print("metrics: tensorboardX not installed, no TensorBoard event files", file=sys.stderr)
            else:
                purge = None if keep_until_step is None else int(keep_until_step) + 1
                # the default file name has a 1 s timestamp: a resume within the same second would reuse it
                self._tb = SummaryWriter(os.fspath(self.workdir / "tb"), purge_step=purge,
                                         filename_suffix=f".{os.getpid()}.{time.time_ns()}")

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if v is not None else None) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if v is not None and math.isfinite(v):
                    self._tb.add_scalar(f"train/{k}", v, int(step))

    def console(self, step: int, total: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        s = scalars
        parts = [f"step {step}/{total}", f"loss {s['loss']:.5f}", f"lr {s['learning_rate']:.3g}",
                 f"|g| {s['grad_norm']:.3g}", f"{s['step_time']:.3f}s/step", f"{s['tokens_per_s']:.4g} tok/s",
                 f"{s['tflops_per_device']:.3g} TFLOP/s/dev"]
        if s.get("mfu") is not None:
            parts.append(f"MFU {100 * s['mfu']:.1f}%")
        if s.get("skipped"):
            parts.append(f"skipped {int(s['skipped'])}")
        print("train: " + ", ".join(parts), flush=True)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
