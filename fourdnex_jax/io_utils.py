"""Small I/O helpers: atomic writes (never a half-written output) and a one-line progress report."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Writes an .npz (no pickled objects) via a temporary file and an atomic rename."""
    return _atomic(Path(path), lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def atomic_save_json(path: str | os.PathLike, obj: Any) -> Path:
    return _atomic(Path(path), lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


class Progress:
    """``label: n/total ... elapsed`` on one stderr line, updated in place; ``done()`` ends the line."""

    def __init__(self, total: int, label: str, every: int | None = None):
        self.total, self.label, self.n = total, label, 0
        self.every = every or max(1, total // 20)
        self.t0 = time.perf_counter()

    def update(self, n: int = 1, info: str = "") -> None:
        self.n += n
        if self.n == self.total or self.n % self.every == 0:
            elapsed = time.perf_counter() - self.t0
            print(f"\r{self.label}: {self.n}/{self.total} {info} [{elapsed:.1f}s]", end="", file=sys.stderr,
                  flush=True)
            if self.n >= self.total:
                print(file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
