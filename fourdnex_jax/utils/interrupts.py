"""Ctrl-C (SIGINT) in the ``fourdnex`` command: leave at once, except where a half-written file must be removed.

:func:`install` (the command line only; a library caller keeps Python's own KeyboardInterrupt) replaces the SIGINT
handler. Outside a :func:`cleanup_region` the handler ends the process straight away (``leave``: one line, exit 130):
nothing is half-written there, and unwinding a KeyboardInterrupt through a half-imported C extension or through
XLA's and orbax's threads crashes (exit 139) or hangs in some tries. Inside one (an atomic file write, a result
folder being published: :mod:`fourdnex_jax.media.io`) it raises KeyboardInterrupt, so the region's own cleanup
removes its temporary file or folder; stderr is silenced meanwhile (threads and coroutines cut short print
tracebacks), and a watchdog calls ``leave`` after ``grace_s`` seconds should the unwinding hang. A second SIGINT
leaves at once. Standard library only, so it is installed before any heavy import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

_STATE = {"depth": 0, "hit": False, "stderr": None}
#: Files that an immediate exit removes (lock files held at the time: :func:`remove_on_exit`); the ``finally`` that
#: would remove them never runs when :func:`exit_now` ends the process.
_REMOVE: set[str] = set()


def remove_on_exit(path: str | os.PathLike, remove: bool = True) -> None:
    """Registers ``path`` for removal by :func:`exit_now` (``remove=False``: forgets it again)."""
    (_REMOVE.add if remove else _REMOVE.discard)(os.fspath(path))


@contextlib.contextmanager
def cleanup_region() -> Iterator[None]:
    """Code whose interruption must unwind (its ``except`` / ``finally`` removes what it half-wrote)."""
    _STATE["depth"] += 1
    try:
        yield
    finally:
        _STATE["depth"] -= 1


def install(leave: Callable[[], None], *, grace_s: float = 10.0, on_signal: Callable[[], None] | None = None) -> bool:
    """Installs the handler (module docstring); ``leave()`` must end the process; ``on_signal()`` runs first on the
    first SIGINT (e.g. to note the console's state before any cleanup changes it). False (nothing installed) off
    the main thread or where SIGINT is not Python's default (ignored by a shell for a background job)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False

    def handler(signum, frame):
        if on_signal is not None and not _STATE["hit"]:
            on_signal()
        if _STATE["hit"] or _STATE["depth"] == 0:
            leave()
        _STATE["hit"] = True
        try:
            _STATE["stderr"] = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            pass
        watchdog = threading.Timer(grace_s, leave)
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    return True


def hit() -> bool:
    """Whether a SIGINT arrived inside a cleanup region (some libraries turn the KeyboardInterrupt into another
    error: an extension's ImportError, orbax's Exception)."""
    return bool(_STATE["hit"])


def exit_now(status: int, line: str | None = None) -> None:
    """Flushes stdout/stderr, writes ``line`` to the real stderr (also when :func:`install` silenced it) and ends
    the process with ``status`` without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for path in list(_REMOVE):
        with contextlib.suppress(OSError):
            os.unlink(path)
    if line:
        try:
            fd = _STATE["stderr"] if _STATE["stderr"] is not None else 2
            os.write(fd, (line + "\n").encode())
        except OSError:
            pass
    os._exit(status)
