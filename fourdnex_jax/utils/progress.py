"""A one-line progress report on stderr for long loops (conversion, encoding, sampling)."""

from __future__ import annotations

import sys
import time

#: Whether a progress line is open on stderr (written without its newline yet), so a last message (Ctrl-C's) can
#: start on a line of its own.
_LINE_OPEN = [False]


def line_open() -> bool:
    return _LINE_OPEN[0]


class Progress:
    """``label: n/total ... elapsed`` on stderr every ``every`` items and at the end. On a terminal one line is
    updated in place (default: 20 updates in all) and closed at the end; elsewhere (a log file, a pipe) each
    update is a line of its own (default: 4 in all), so a log stays readable."""

    def __init__(self, total: int, label: str, every: int | None = None):
        self.total, self.label, self.n = total, label, 0
        self.in_place = sys.stderr.isatty()
        self.every = every or max(1, total // (20 if self.in_place else 4))
        self.t0 = time.perf_counter()

    def update(self, n: int = 1, info: str = "") -> None:
        self.n += n
        if self.n == self.total or self.n % self.every == 0:
            elapsed = time.perf_counter() - self.t0
            text = f"{self.label}: {self.n}/{self.total} {info} [{elapsed:.1f}s]"
            if not self.in_place:
                print(text, file=sys.stderr, flush=True)
                return
            print("\r" + text, end="", file=sys.stderr, flush=True)
            _LINE_OPEN[0] = True
            if self.n >= self.total:
                print(file=sys.stderr, flush=True)
                _LINE_OPEN[0] = False

    @property
    def elapsed(self) -> float:
        """Seconds since construction."""
        return time.perf_counter() - self.t0


class Stage:
    """``with Stage("loading models"):`` prints ``loading models ...`` on stderr, then ``done (1.2s)`` on the same
    line when the block ends (a stage without a per-item count)."""

    def __init__(self, label: str):
        self.label = label
        self.seconds = 0.0

    def __enter__(self) -> Stage:
        print(f"{self.label} ...", end="", file=sys.stderr, flush=True)
        _LINE_OPEN[0] = True
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, kind, *_) -> None:
        self.seconds = time.perf_counter() - self.t0
        print(f" {'done' if kind is None else 'failed'} ({self.seconds:.1f}s)", file=sys.stderr, flush=True)
        _LINE_OPEN[0] = False
