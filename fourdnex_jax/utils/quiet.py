"""Keeping library threads' noise off the console.

orbax and tensorstore finish their work on background threads and asyncio loops; when a restore fails, those
callbacks may fire after their loop has closed and print tracebacks (``RuntimeError: Event loop is closed``) through
``sys.excepthook`` (a C++ callback's ``PyErr_Print``), ``threading.excepthook`` or ``sys.unraisablehook``, after the
real error has already been reported in one line. :func:`quiet_library_threads` installs filtering hooks (once, for
the rest of the process): a report whose traceback runs only through those libraries (asyncio, orbax, tensorstore,
etils, concurrent.futures) and not through the main thread is counted in :data:`SWALLOWED`, not printed; every
other report goes to the previous hook unchanged. ``--verbose`` (``FOURDNEX_VERBOSE=1``) prints everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Iterator

#: Reports kept off the console (for tests and --verbose diagnostics).
SWALLOWED: list[BaseException] = []
_LIBRARIES = ("asyncio", "orbax", "tensorstore", "etils", "concurrent")
_installed = False


def _from_library_thread(exc: BaseException | None) -> bool:
    if exc is None or threading.current_thread() is threading.main_thread() and exc.__traceback__ is None:
        return False
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    return bool(frames) and all(any(f"{os.sep}{lib}" in fr.filename for lib in _LIBRARIES) for fr in frames)


def _install() -> None:
    global _installed
    if _installed or os.environ.get("FOURDNEX_VERBOSE") == "1":
        return
    _installed = True
    old_sys, old_thread, old_unraisable = sys.excepthook, threading.excepthook, sys.unraisablehook

    def sys_hook(kind, value, tb):
        if threading.current_thread() is not threading.main_thread() and _from_library_thread(value):
            SWALLOWED.append(value)
        else:
            old_sys(kind, value, tb)

    def thread_hook(args):
        if _from_library_thread(args.exc_value):
            SWALLOWED.append(args.exc_value)
        else:
            old_thread(args)

    def unraisable_hook(args):
        if _from_library_thread(args.exc_value):
            SWALLOWED.append(args.exc_value)
        else:
            old_unraisable(args)

    sys.excepthook, threading.excepthook, sys.unraisablehook = sys_hook, thread_hook, unraisable_hook


@contextlib.contextmanager
def quiet_library_threads() -> Iterator[list[BaseException]]:
    """Around a library call whose failure is reported by the caller: library threads' late tracebacks are kept
    off the console (module docstring). Yields :data:`SWALLOWED`."""
    _install()
    yield SWALLOWED
