"""Keeping library threads' noise off the console.

orbax and tensorstore finish their work on background threads and asyncio loops; when a restore fails, those
callbacks may fire after their loop has closed and print tracebacks (``RuntimeError: Event loop is closed``) through
``threading.excepthook`` / ``sys.unraisablehook``, after the real error has already been handled. Inside
:func:`quiet_library_threads` such reports are collected instead of printed (kept on the context object for a
``--verbose`` caller, which gets them printed as usual).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator


class _Collected(list):
    pass


@contextlib.contextmanager
def quiet_library_threads(verbose: bool = False) -> Iterator[list]:
    """Within the block (and until the exit of the process for threads still running then: their late reports are
    as much noise), exceptions of other threads and unraisable exceptions are collected, not printed; with
    ``verbose`` nothing changes."""
    collected = _Collected()
    if verbose:
        yield collected
        return
    old_thread, old_unraisable = threading.excepthook, sys.unraisablehook
    threading.excepthook = lambda args: collected.append(args.exc_value)
    sys.unraisablehook = lambda args: collected.append(args.exc_value)
    try:
        yield collected
    except BaseException:
        raise  # the hooks stay quiet: the caller reports the error in one line, late thread reports are noise
    else:
        threading.excepthook, sys.unraisablehook = old_thread, old_unraisable
