"""Bad-data accounting: a reader or converter raises :class:`BadExample` with a short reason; the caller skips the
example, counts the reason, logs one line, and prints a summary at the end. Nothing is ever retried.

Reasons used across the data layer (free-form strings are allowed; these are the common ones):
  ``missing_file``, ``corrupt_file`` (truncated/undecodable npy, npz, png, mp4, txt), ``shape_mismatch``,
  ``frame_count_mismatch`` (trajectory, intrinsics, depth and frames disagree), ``missing_frames``,
  ``invalid_depth`` (too few finite, positive depth values), ``missing_caption``, ``bad_pose`` (non-finite or
  singular camera), ``error:<ExceptionType>`` (anything unexpected, kept separate so it stands out).
"""

from __future__ import annotations

import collections
import logging
import zipfile
from typing import Any

log = logging.getLogger("fourdnex_jax.data")


class BadExample(Exception):
    """An example that cannot be used: ``reason`` is a short key for counting, ``detail`` a human message."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# Exceptions that mean "the file is damaged" when raised while decoding it.
CORRUPT_ERRORS = (EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError)


def as_bad_example(exc: BaseException) -> BadExample:
    """Maps any exception raised while reading/converting one example to a :class:`BadExample`."""
    if isinstance(exc, BadExample):
        return exc
    if isinstance(exc, FileNotFoundError):
        return BadExample("missing_file", str(exc))
    if isinstance(exc, CORRUPT_ERRORS):
        return BadExample("corrupt_file", f"{type(exc).__name__}: {exc}")
    return BadExample(f"error:{type(exc).__name__}", str(exc))


class SkipStats:
    """Counts of processed / kept / skipped examples by reason, with the first few example ids per reason."""

    def __init__(self, keep_ids: int = 5):
        self.kept = 0
        self.skipped: collections.Counter[str] = collections.Counter()
        self.ids: dict[str, list[str]] = collections.defaultdict(list)
        self.keep_ids = keep_ids

    def record_ok(self, n: int = 1) -> None:
        self.kept += n

    def record_bad(self, example_id: str, bad: BadExample) -> None:
        self.skipped[bad.reason] += 1
        if len(self.ids[bad.reason]) < self.keep_ids:
            self.ids[bad.reason].append(example_id)
        log.warning("skipping %s: %s", example_id, bad)

    @property
    def total(self) -> int:
        return self.kept + sum(self.skipped.values())

    def merge(self, other: SkipStats | dict) -> None:
        d = other.to_dict() if isinstance(other, SkipStats) else other
        self.kept += d["kept"]
        self.skipped.update(d["skipped"])
        for k, v in d.get("ids", {}).items():
            self.ids[k] = (self.ids[k] + list(v))[: self.keep_ids]

    def to_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "skipped": dict(self.skipped), "ids": {k: list(v) for k, v in self.ids.items()}}

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.kept}/{self.total} examples kept, none skipped"
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return f"{self.kept}/{self.total} examples kept; skipped {sum(self.skipped.values())} ({parts})"

