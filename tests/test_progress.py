"""The progress line (fourdnex_jax/utils/progress.py): updated in place on a terminal, one line per update in a log."""

from __future__ import annotations

import io
import sys

from fourdnex_jax.utils import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream, monkeypatch, total=20, **kw) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress.Progress(total, "sampling", **kw)
    for _ in range(total):
        bar.update(info="x")
    assert not progress.line_open()
    return stream.getvalue()


def test_a_log_gets_whole_lines(monkeypatch):
    out = _run(io.StringIO(), monkeypatch)
    assert "\r" not in out and out.endswith("\n")
    assert [line.split(" ")[1] for line in out.splitlines()] == ["5/20", "10/20", "15/20", "20/20"]
    assert len(_run(io.StringIO(), monkeypatch, every=2).splitlines()) == 10  # an explicit interval is kept


def test_a_terminal_gets_one_line_updated_in_place(monkeypatch):
    out = _run(_Terminal(), monkeypatch)
    assert out.count("\r") == 20 and out.count("\n") == 1 and out.endswith("\n")
    assert out.split("\r")[-1].startswith("sampling: 20/20 x [")
