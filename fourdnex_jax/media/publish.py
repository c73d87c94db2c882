"""Output folders: published as a unit, marked as ours, replaced only when ours, one writer at a time.

Every command that writes a folder (``generate`` and ``Result.save``, ``register``, ``convert``, ``export``,
``bundle``) writes it through :func:`publish_dir`:

* **as a unit**: the content goes into a hidden sibling ``.NAME.tmp-XXXX``, is fsynced, and is then renamed onto
  ``NAME`` (over a previous result: one atomic exchange, ``renameat2(RENAME_EXCHANGE)``; where the file system has
  none, two renames, and a retired folder found later with no ``NAME`` is put back). A kill -9 at any point leaves
  the previous complete result, the new complete one, or none; never a mix.
* **marked**: the last file written into the new folder, atomically, is :data:`MARKER` (``.fourdnex-output.json``:
  format, writer, and the names of the entries the writer made). ``--overwrite`` (``overwrite=True``) replaces only
  a folder that carries it, and only those entries: anything else in the folder (a user's ``notes.txt``) is carried
  into the new result (hard-linked, or copied across devices). A non-empty folder without the marker is never
  replaced, with or without ``--overwrite``.
* **never a folder that must not go**: ``/``, the home folder, the current folder or one holding it, a symbolic
  link, and a folder holding one of the run's inputs (``inputs``) are refused before any work.
* **one writer**: :func:`output_lock` holds an exclusive ``flock`` on the sibling ``.NAME.lock`` while a run
  writes ``NAME`` (a command takes it before its model runs; the lock file is removed when released). A second run
  into the same folder stops at once with one line naming the folder and the other run's pid.

Errors are :class:`~fourdnex_jax.utils.errors.InputError` (:class:`~fourdnex_jax.utils.errors.OutputExistsError`
for a folder that is kept, :class:`OutputBusyError` for one another run is writing), one line naming the folder and
what to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from fourdnex_jax.media.io import atomic_write_bytes
from fourdnex_jax.utils import interrupts
from fourdnex_jax.utils.errors import InputError, OutputExistsError
from fourdnex_jax.utils.files import read_json

PathLike = str | os.PathLike
#: The file that marks a folder as written by this project (module docstring).
MARKER = ".fourdnex-output.json"
MARKER_FORMAT = "fourdnex-output/1"


#: The longest output folder name: ``.NAME.tmp-XXXXXXXX`` must fit a file system's 255-byte names.
_MAX_NAME = 255 - len(".") - len(".tmp-") - 8


class OutputBusyError(InputError):
    """Another run holds the output folder's lock."""


# ----------------------------------------------------------------------------------------------------- the marker
def read_marker(folder: PathLike) -> dict | None:
    """The marker of ``folder`` (None when it has none); a damaged one raises InputError naming it."""
    path = Path(folder) / MARKER
    if not os.path.lexists(path):
        return None
    fix = f"the folder is not a result fourdnex can replace: move it away or delete {MARKER} only if it is ours"
    marker = read_json(path, what="output marker", fix=fix, limit=2**20)
    entries = marker.get("entries") if isinstance(marker, dict) else None
    if (not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or not isinstance(entries, list)
            or not all(isinstance(e, str) and e and "/" not in e and e not in (".", "..", MARKER) for e in entries)):
        raise InputError(f"{path}: not a fourdnex output marker of this version; {fix}")
    return marker


def _marker_bytes(writer: str, entries: list[str]) -> bytes:
    __version__ = _version()

    return json.dumps({"format": MARKER_FORMAT, "writer": writer, "entries": entries, "fourdnex_jax": __version__,
                       "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")},
                      indent=2, sort_keys=True).encode()


# ----------------------------------------------------------------------------------------------------- the checks
def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _protected(path: PathLike, inputs: Iterable[PathLike]) -> str | None:
    """Why ``path`` must never receive a result (None: it may)."""
    real = _real(path)
    if real == Path(real.anchor):
        return "the root folder"
    if _within(_real(Path.home()), real):
        return "your home folder or a folder holding it"
    if _within(_real(os.getcwd()), real):
        return "the current folder or a folder holding it"
    for i in inputs:
        if i is not None and _within(_real(i), real):
            return f"a folder holding the input {os.fspath(i)}"
    return None


def check_output_parent(path: PathLike, *, flag: str = "--out") -> Path:
    """Checks that ``path`` can be (or is) a folder: not a file, no file among its parents."""
    path = Path(path)
    if len(os.fsencode(Path(os.path.abspath(path)).name)) > _MAX_NAME:
        raise InputError(f"{flag} {path}: folder name too long (at most {_MAX_NAME} bytes, so that its temporary "
                         "sibling fits the 255-byte limit); use a shorter name")
    if os.path.lexists(path) and not path.is_dir():
        raise InputError(f"{flag} {path}: is a file, not a folder; pass a folder path (it is created)")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
            break
    return path


def check_output_dir(path: PathLike, overwrite: bool = False, *, flag: str = "--out",
                     inputs: Iterable[PathLike] = ()) -> Path:
    """Checks that ``path`` can receive a result published by :func:`publish_dir` (call it before any work): a
    protected folder (module docstring), a file, a non-empty folder without :data:`MARKER`, or one with it without
    ``overwrite`` raises :class:`~fourdnex_jax.utils.errors.InputError` /
    :class:`~fourdnex_jax.utils.errors.OutputExistsError`; nothing is changed."""
    path = Path(path)
    reason = _protected(path, inputs)
    if reason:
        raise InputError(f"{flag} {path}: is {reason}, which is never replaced; nothing was changed: pass a new "
                         f"folder (e.g. {flag} {path / 'result'})")
    if path.is_symlink():
        raise InputError(f"{flag} {path}: is a symbolic link; pass the folder itself ({os.path.realpath(path)}) or "
                         "a new one")
    check_output_parent(path, flag=flag)
    if path.is_dir() and any(path.iterdir()):
        if read_marker(path) is None:
            raise OutputExistsError(f"{flag} {path}: is not empty and holds no fourdnex result (no {MARKER}); "
                                    "nothing was changed: choose a new or empty folder")
        if not overwrite:
            raise OutputExistsError(f"{flag} {path}: already holds a result; it is kept: pass --overwrite to replace "
                                    "it (overwrite=True in Python; your other files in it are kept) or choose "
                                    "another folder")
    return path


# ----------------------------------------------------------------------------------------------------- the lock
_HELD: dict[Path, int] = {}  # this process's output locks: real path -> lock file descriptor


#: The lock file inside a folder of per-image results (``generate --images``), which is never replaced itself.
CONTAINER_LOCK = ".fourdnex.lock"


@contextlib.contextmanager
def output_lock(path: PathLike, *, flag: str = "--out", inside: bool = False) -> Iterator[None]:
    """Holds the exclusive lock of output folder ``path`` (module docstring) for the block; a lock this process
    already holds on ``path`` or a folder above it is reused. Another holder raises :class:`OutputBusyError`.
    ``inside``: ``path`` is a folder of results (never replaced itself): the lock file is :data:`CONTAINER_LOCK`
    inside it (the folder is created, and removed again if it is still empty at the end)."""
    real = _real(path)
    if any(_within(real, held) for held in _HELD):
        yield
        return
    reason = "the root folder" if real == Path(real.anchor) else None if inside else _protected(path, ())
    if reason:
        raise InputError(f"{flag} {path}: is {reason}, which is never replaced; nothing was changed: pass a new "
                         f"folder (e.g. {flag} {Path(path) / 'result'})")
    check_output_parent(path, flag=flag)
    created = inside and not os.path.lexists(real)
    (real if inside else real.parent).mkdir(parents=True, exist_ok=True)
    lock = real / CONTAINER_LOCK if inside else real.parent / f".{real.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputBusyError(f"{flag} {path}: another fourdnex run (pid {holder}) is writing into it; wait for "
                                  "it to finish or choose another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not removed by its last holder meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[real] = fd
    interrupts.remove_on_exit(lock)  # Ctrl-C outside a cleanup region ends the process before the finally below
    try:
        yield
    finally:
        interrupts.remove_on_exit(lock, remove=False)
        del _HELD[real]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it: a waiting run re-opens and re-checks (above)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(real)  # only when empty: nothing was written into it


def check_writable(folder: PathLike, need_bytes: int = 0, *, flag: str = "--out") -> None:
    """Before long work: a file can be created in ``folder`` (or the nearest folder above it that exists) and its
    disk has at least ``need_bytes`` free; else :class:`InputError` in one line (read-only file system, permission
    denied, disk full, ...)."""
    from fourdnex_jax.utils.files import describe_os_error

    where = Path(os.path.abspath(folder))
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=".fourdnex-probe-")
        os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(where).free
    except OSError as e:
        raise InputError(f"{flag}: cannot write results: {describe_os_error(e, where, 'folder')}") from e
    if free < need_bytes:
        raise InputError(f"{flag}: {where} has {free / 2**30:.2f} GiB free, the results need about "
                         f"{need_bytes / 2**30:.2f} GiB; free some space or write to another disk")


# ----------------------------------------------------------------------------------------------------- publishing
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the C library or the file system lacks it."""
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(dst))


_LIBC: list = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def _restore_or_remove_stale(final: Path) -> None:
    """Hidden siblings of ``final`` left by a killed publish: a retired previous result is put back when ``final``
    is absent (the kill fell between the two renames of a publish without an atomic exchange); the rest is
    removed. Called with the lock held."""
    for retired in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not os.path.lexists(final) and (retired / "result").is_dir():
            os.rename(retired / "result", final)
        shutil.rmtree(retired, ignore_errors=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _carry(entry: Path, dst: Path) -> None:
    """A user's entry of the previous folder into the new one: hard links (same file, no copy), copies across
    devices; symbolic links as links."""
    if entry.is_symlink():
        os.symlink(os.readlink(entry), dst)
    elif entry.is_dir():
        shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(entry, dst)


def _link_or_copy(src: PathLike, dst: PathLike) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _install(tmp: Path, final: Path, flag: str) -> Path | None:
    """Puts the finished ``tmp`` in place of ``final``; returns where the previous folder went (to be removed), or
    None."""
    if not os.path.lexists(final):
        if _renameat2(tmp, final, _RENAME_NOREPLACE):
            return None
        os.rename(tmp, final)  # under the lock; fails on a non-empty folder made by another program meanwhile
        return None
    if _renameat2(tmp, final, _RENAME_EXCHANGE):
        return tmp
    retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
    os.replace(final, retired / "result")
    os.replace(tmp, final)
    return retired


@contextlib.contextmanager
def publish_dir(path: PathLike, overwrite: bool = False, *, flag: str = "--out", writer: str = "fourdnex",
                inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """:func:`_publish_dir` inside a cleanup region: Ctrl-C there unwinds (utils/interrupts.py), so the temporary
    folder is removed and ``path`` keeps the previous result or gets the complete new one."""
    from fourdnex_jax.utils.interrupts import cleanup_region

    with cleanup_region():
        with _publish_dir(path, overwrite, flag=flag, writer=writer, inputs=inputs) as tmp:
            yield tmp


@contextlib.contextmanager
def _publish_dir(path: PathLike, overwrite: bool = False, *, flag: str = "--out", writer: str = "fourdnex",
                inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Writes a folder as a unit (module docstring): yields a fresh hidden sibling ``.NAME.tmp-XXXX`` to write into;
    on a clean exit :data:`MARKER` is written into it last (``writer`` and the entries written), the user's other
    entries of a previous result are carried in, everything is fsynced and the folder takes the place of ``path``.
    Checked first by :func:`check_output_dir` under :func:`output_lock`; on an exception the temporary folder is
    removed and ``path`` is untouched. A local path only."""
    final = Path(path)
    inputs = list(inputs)
    with output_lock(final, flag=flag):
        check_output_parent(final, flag=flag)
        final.parent.mkdir(parents=True, exist_ok=True)
        _restore_or_remove_stale(final)
        check_output_dir(final, overwrite, flag=flag, inputs=inputs)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; the published folder gets ordinary permissions
        old = None
        try:
            yield tmp
            entries = sorted(p.name for p in tmp.iterdir() if p.name != MARKER)
            if final.is_dir():
                marker = read_marker(final)
                ours = set(marker["entries"]) if marker else set()
                keep = [p for p in final.iterdir() if p.name != MARKER and p.name not in ours]
                clash = [p.name for p in keep if os.path.lexists(tmp / p.name)]
                if clash:
                    raise OutputExistsError(f"{flag} {final}: holds {clash[0]!r}, which fourdnex did not write but "
                                            "the new result would replace; nothing was changed: move it away and "
                                            "run again")
                for p in keep:
                    _carry(p, tmp / p.name)
            atomic_write_bytes(tmp / MARKER, _marker_bytes(writer, entries))  # last: the folder is complete
            _fsync_tree(tmp)
            old = _install(tmp, final, flag)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root`` on disk before the publishing rename (so a power loss cannot publish
    a folder of empty files)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _version() -> str:
    """The installed fourdnex_jax version (package metadata: the one version source), "unknown" outside an install."""
    from importlib import metadata

    try:
        return metadata.version("fourdnex_jax")
    except metadata.PackageNotFoundError:
        return "unknown"
