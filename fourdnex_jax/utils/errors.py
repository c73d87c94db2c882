"""The user-facing error types: bad input the user can fix (a missing or unreadable file, a wrong setting, a damaged
bundle, a cache that cannot be trusted).

Every message says what was wrong, names the file or the key, and how to fix it, in one line; the ``fourdnex``
command prints it as ``fourdnex CMD: error: MESSAGE`` and exits 1 (a traceback only with ``--verbose``).
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input. The message says what was wrong, names the file or key, and how to fix it; the ``fourdnex``
    command prints it as one line (a traceback only with ``--verbose``)."""


class UntrustedFileError(InputError):
    """A file that holds native code or pickled objects (a serialized executable, a compilation-cache entry) failed
    the ownership / permission / integrity check: it is refused, never loaded (see
    :mod:`fourdnex_jax.utils.trust`)."""


class OutputExistsError(InputError, FileExistsError):
    """The output folder already holds a result; it is kept unless the caller asks to overwrite it."""


def where(path: str | os.PathLike) -> str:
    """``path`` as a message names it."""
    return os.fspath(path)
