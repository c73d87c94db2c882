"""The trust boundary of caches that hold native code: serialized executables (``--aot-cache``) and JAX's persistent
compilation cache (``--compilation-cache``).

Loading such a file runs what it holds (a pickled executable is unpickled, a compiled binary is executed), so a
cache is trusted only when all of these hold, and is refused loudly otherwise (never a silent fallback):

* the folder is private to this user: owned by the user running the program, not a symlink, and neither group- nor
  world-writable (it is created ``0700``); so nobody else can plant or edit an entry;
* every entry is a regular file (not a symlink) owned by the user;
* every entry carries an HMAC-SHA256 tag made with this cache's secret key (``.fourdnex-cache-key``: 32 random
  bytes, created ``0600`` in the folder on first use, refused if anyone else could read or write it); an entry
  copied from elsewhere, edited, or written by a run that died before signing fails the check.

What this does not protect against: someone who can act as this user (or root) can rewrite the key too. Never point
these flags at a folder you did not create, or copy one from another machine; delete a refused cache to rebuild it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from fourdnex_jax.utils.errors import UntrustedFileError

KEY_FILE = ".fourdnex-cache-key"
KEY_BYTES = 32
TAG_BYTES = hashlib.sha256().digest_size


def _owner_problem(st: os.stat_result) -> str | None:
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a private cache folder (created ``0700`` with its missing parents), or UntrustedFileError."""
    path = Path(path).absolute()
    if not path.exists() and not path.is_symlink():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedFileError(f"{what} {path}: is a symlink; pass the real folder (a cache holding native code "
                                 "must be a private folder of yours)")
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedFileError(f"{what} {path}: is not a folder; pass a folder path")
    problem = _owner_problem(st)
    if problem:
        raise UntrustedFileError(f"{what} {path}: {problem}; refused (its entries hold native code): use a folder "
                                 "you own with `chmod 700`, or a new path")
    return path


def cache_key(directory: Path, what: str) -> bytes:
    """The folder's secret HMAC key (created 0600 on first use); a key file others could read or write is
    refused."""
    path = directory / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise UntrustedFileError(f"{what} {directory}: cannot open its key {path} ({e}); delete the cache "
                                 "folder to start a new one") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        key = f.read()
    problem = _owner_problem(st)
    if problem is None and st.st_mode & 0o077:
        problem = f"readable by others (mode {stat.S_IMODE(st.st_mode):o}, must be 600)"
    if problem is None and len(key) != KEY_BYTES:
        problem = f"{len(key)} bytes, expected {KEY_BYTES}"
    if problem:
        raise UntrustedFileError(f"{what} {directory}: its key {path} is {problem}; refused: delete the cache "
                                 "folder to start a new one")
    return key


def tag(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 of the concatenated ``parts`` (each length-prefixed, so no two splits collide)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        mac.update(len(p).to_bytes(8, "little"))
        mac.update(p)
    return mac.digest()


def read_owned(path: Path, what: str) -> bytes:
    """The bytes of cache entry ``path`` after checking it is a regular file (not a symlink) owned by this user
    (UntrustedFileError otherwise); its content is then checked by its tag."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise UntrustedFileError(f"{what} {path}: cannot be opened safely ({e}); refused: delete it") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFileError(f"{what} {path}: not a regular file; refused: delete it")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():  # (its mode matters less: the folder is private)
            raise UntrustedFileError(f"{what} {path}: owned by uid {st.st_uid}, not by this user; refused (it holds "
                                     "native code): delete it")
        return f.read()
