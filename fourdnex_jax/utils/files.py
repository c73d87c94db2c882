"""Bounded reads of the files a user hands in, and one-line messages for operating-system errors.

Every file a user gives us (an image, a caption, an ``--images`` list, a JSON config such as
``scheduler_config.json``, ``preprocessor_config.json``, ``bundle.json``, ``manifest.json``, ``tokenizer.json``, an
``.npz`` for ``register``) is read through :func:`read_bytes` / :func:`read_text` / :func:`read_json`:

* **regular files only**: the file is opened with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read,
  so a named pipe, a device (``/dev/zero``, a terminal), a socket or a folder is refused at once, never blocks and
  never streams without end;
* **size-bounded**: each kind has a cap (:data:`LIMITS`); a bigger file is refused before it is read, and the read
  itself stops one byte past the cap (a file growing under us cannot get around it);
* **one error type**: :class:`~fourdnex_jax.utils.errors.InputError`, one line naming the file, what was wrong
  (missing, a folder, a pipe, too big, empty, not UTF-8 at byte N, invalid JSON at line L column C, a symlink loop,
  a name too long, permission denied) and the fix.

:func:`describe_os_error` turns any ``OSError`` (read or write: read-only file system, disk full, name too long,
symlink loop) into that one line; the ``fourdnex`` command uses it for every OS error a subcommand raises.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

from fourdnex_jax.utils.errors import InputError

MiB = 2**20
GiB = 2**30

#: The largest file of each kind we read (bytes). Far above any honest input (a 6000 x 4000 JPEG is ~10 MB, the
#: UMT5 ``tokenizer.json`` ~17 MB, a 14B result's ``pointmaps.npz`` ~0.5 GB), far below what would exhaust memory.
LIMITS: dict[str, int] = {
    "image": 256 * MiB,
    "caption": 1 * MiB,
    "list": 16 * MiB,
    "json": 64 * MiB,
    "tokenizer": 256 * MiB,
    "npz": 16 * GiB,
    "text": 64 * MiB,
}

_KIND_NAMES = {stat.S_IFIFO: "a named pipe", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def _is_remote(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def _size_text(n: int) -> str:
    return f"{n / GiB:.0f} GiB" if n >= GiB and n % GiB == 0 else f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


def describe_os_error(e: OSError, path: str | os.PathLike | None = None, what: str = "file") -> str:
    """One line for an ``OSError``: the file (``e.filename`` or ``path``), what happened in words and the fix."""
    name = e.filename if e.filename is not None else path
    where = f"{os.fspath(name)}: " if name is not None else ""
    code = e.errno
    if code == errno.ENOENT:
        return f"{where}no such {what}; check the path"
    if code == errno.EISDIR:
        return f"{where}is a folder, not a {what}; pass the file itself"
    if code == errno.ENOTDIR:
        return f"{where}a part of the path is a file, not a folder; check the path"
    if code == errno.ELOOP:
        return f"{where}symlink loop (too many levels of symbolic links); fix or remove the link"
    if code == errno.ENAMETOOLONG:
        return f"{where}file name too long (at most 255 bytes per name, 4096 per path); use a shorter name"
    if code in (errno.EACCES, errno.EPERM):
        return f"{where}permission denied; fix the permissions or choose a path you can use"
    if code == errno.EROFS:
        return f"{where}read-only file system; write to a folder on a writable disk (e.g. another --out)"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"{where}no space left on the device (disk full or quota reached); free some space or write to "
                "another disk (nothing was published: a previous result is unchanged)")
    if code == errno.EFBIG:
        return (f"{where}file too large (for this file system, or over the process's file-size limit: ulimit -f); "
                "write to another disk or raise the limit (nothing was published)")
    if code == errno.EMFILE or code == errno.ENFILE:
        return f"{where}too many open files; raise the limit (ulimit -n) or close other programs"
    if code == errno.EBUSY:
        return f"{where}busy (in use as a mount point or the current folder); choose another path"
    if code == errno.EIO:
        return f"{where}input/output error (a failing disk or a lost network mount); check the device"
    reason = e.strerror or type(e).__name__
    return f"{where}{reason} (errno {code}); check the path and the disk"


def os_error_in(e: BaseException) -> OSError | None:
    """The ``OSError`` behind ``e`` (itself, its cause or context), or one recognised in a library's message (orbax
    / tensorstore report a full disk as a ``ValueError`` whose text holds the OS message); None otherwise."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        text = str(e)
        for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP):
            if os.strerror(code) in text:
                return OSError(code, os.strerror(code))
        e = e.__cause__ or e.__context__
    return None


def open_regular(path: str | os.PathLike, what: str = "file", limit: int | None = None) -> tuple[int, int]:
    """Opens ``path`` for reading without blocking and returns ``(fd, size)``; anything but a regular file, a file
    over ``limit`` bytes or an OS error raises :class:`InputError` naming it (module docstring). The caller closes
    ``fd``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputError(describe_os_error(e, path, f"{what} file")) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KIND_NAMES.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise InputError(f"{os.fspath(path)}: is {kind}, not a regular {what} file; pass the file itself "
                             "(pipes and devices are never read)")
        if limit is not None and st.st_size > limit:
            raise InputError(f"{os.fspath(path)}: {st.st_size} bytes, over the {_size_text(limit)} a {what} file "
                             f"may have; pass a smaller file")
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike, what: str = "file", limit: int | None = None) -> int:
    """Checks that ``path`` is a readable regular file within ``limit`` bytes (as :func:`open_regular`) before a
    library opens it by name; returns its size."""
    if _is_remote(path):
        return -1
    fd, size = open_regular(path, what, limit)
    os.close(fd)
    return size


def read_bytes(path: str | os.PathLike, kind: str = "text", *, what: str | None = None, limit: int | None = None,
               allow_empty: bool = False) -> bytes:
    """The whole content of a regular file of ``kind`` (:data:`LIMITS`), refused as the module docstring says;
    ``what`` names it in messages (default: ``kind``). ``gs://`` paths are read through ``etils.epath`` with the
    same cap."""
    what = what or kind
    limit = LIMITS[kind] if limit is None else limit
    if _is_remote(path):
        from etils import epath

        with epath.Path(path).open("rb") as f:
            data = f.read(limit + 1)
    else:
        fd, _ = open_regular(path, what, limit)
        try:
            with os.fdopen(fd, "rb", closefd=True) as f:
                data = f.read(limit + 1)
        except OSError as e:
            raise InputError(describe_os_error(e, path, f"{what} file")) from e
    if len(data) > limit:
        raise InputError(f"{os.fspath(path)}: over the {_size_text(limit)} a {what} file may have (it grew while "
                         "being read); pass a smaller file")
    if not data and not allow_empty:
        raise InputError(f"{os.fspath(path)}: the {what} file is empty; write it again")
    return data


def decode_text(data: bytes, path: str | os.PathLike, what: str) -> str:
    """UTF-8 (a leading byte-order mark dropped); anything else raises InputError naming the file and byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{os.fspath(path)}: the {what} file is not UTF-8 text (byte {e.start}, line {line}: "
                         f"{data[e.start:e.start + 1]!r}); save it as UTF-8") from e


def read_text(path: str | os.PathLike, kind: str = "text", *, what: str | None = None, limit: int | None = None,
              allow_empty: bool = True) -> str:
    """A UTF-8 text file of ``kind``, bounded like :func:`read_bytes`."""
    what = what or kind
    return decode_text(read_bytes(path, kind, what=what, limit=limit, allow_empty=allow_empty), path, what)


def read_json(path: str | os.PathLike, *, what: str = "JSON", kind: str = "json", fix: str = "write it again",
              limit: int | None = None) -> Any:
    """A JSON file, bounded like :func:`read_bytes`: truncated or garbage JSON, NaN/Infinity literals, nesting too
    deep and non-UTF-8 text raise InputError naming the file, the place and ``fix``."""
    data = read_bytes(path, kind, what=what, limit=limit)
    text = decode_text(data, path, what)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise InputError(f"{os.fspath(path)}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; the "
                         f"{what} file is truncated or damaged); {fix}") from e
    except (ValueError, RecursionError) as e:
        raise InputError(f"{os.fspath(path)}: not usable JSON ({type(e).__name__}: {e}); {fix}") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"holds the non-standard number {name}")

