"""JAX's persistent compilation cache behind the trust boundary of :mod:`fourdnex_jax.utils.trust`, whatever points
JAX at it (``--compilation-cache``, the ``JAX_COMPILATION_CACHE_DIR`` variable, ``jax.config``).

An entry of JAX's cache (``<key>-cache``) is a compiled binary that is executed when loaded. :func:`install` puts a
wrapper around the cache JAX builds (``jax._src.compilation_cache.get_file_cache``, looked up when the first
program compiles), so every folder JAX opens as its cache is checked like ``--compilation-cache`` (a private folder
of this user's, every entry signed with the folder's key; :func:`verify`) and then:

* ``get``: the bytes JAX is about to load must carry a valid tag in the signature table
  (``.fourdnex-signatures.json``) or among the tags this process made; an entry planted or replaced while the run
  is going is refused (:class:`~fourdnex_jax.utils.errors.UntrustedFileError`) even though the folder passed the
  check at start;
* ``put``: the tag is computed from the exact bytes this process hands to JAX's writer, and the table is written
  with those tags at exit (:meth:`SignedCache.seal`): an entry that another process replaced meanwhile does not
  match its tag, so the next run refuses it. Nothing on disk is ever signed by reading it back.

:func:`install` is called by every entry point (the ``fourdnex`` command, the pipeline, the trainer) before the
first compilation; when a cache folder is configured already (the environment variable), it is checked at once,
so an untrusted one fails before any model loads.
"""

from __future__ import annotations

import atexit
import hmac
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from fourdnex_jax.utils import trust
from fourdnex_jax.utils.errors import UntrustedFileError

SIGNATURES = ".fourdnex-signatures.json"
CACHE_ENTRY_SUFFIX = "-cache"  # JAX's LRUCache: <key>-cache holds a compiled binary (<key>-atime a timestamp)
WHAT = "compilation cache"


def _entry_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(CACHE_ENTRY_SUFFIX))


def _is_hex(text: Any) -> bool:
    return isinstance(text, str) and len(text) == 2 * trust.TAG_BYTES and all(c in "0123456789abcdef" for c in text)


def read_signatures(directory: Path) -> dict[str, str]:
    path = directory / SIGNATURES
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        sigs = json.loads(trust.read_owned(path, "compilation cache signatures"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UntrustedFileError(f"compilation cache {directory}: {path} is unreadable ({e}); refused: delete the "
                                 "folder to rebuild the cache") from e
    if not isinstance(sigs, dict):
        raise UntrustedFileError(f"compilation cache {directory}: {path} is not a signature table; refused: delete "
                                 "the folder")
    return sigs


def _signed(key: bytes, sigs: dict[str, str], name: str, data: bytes) -> bool:
    want = sigs.get(name)
    return want is not None and _is_hex(want) and hmac.compare_digest(bytes.fromhex(want),
                                                                      trust.tag(key, name.encode(), data))


def verify(directory: str | os.PathLike, what: str = "--compilation-cache") -> tuple[Path, bytes, dict[str, str]]:
    """(folder, key, signature table) of a compilation cache folder after checking the folder and every entry
    (module docstring); UntrustedFileError listing what failed."""
    path = trust.private_dir(directory, what)
    key = trust.cache_key(path, what)
    sigs = read_signatures(path)
    bad = [name for name in _entry_names(path)
           if not _signed(key, sigs, name, trust.read_owned(path / name, "compilation cache entry"))]
    if bad:
        raise UntrustedFileError(
            f"{what} {path}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} not signed by this cache's key (copied "
            f"in, modified, or left by a run killed before signing; first: {bad[0]}); refused, nothing loaded: delete "
            "the folder (or those files) to rebuild the cache")
    return path, key, sigs


def _save_signatures(directory: Path, sigs: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".signatures-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(sigs, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, directory / SIGNATURES)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class SignedCache:
    """Wraps the cache object JAX built for a verified folder (module docstring). Implements JAX's
    ``CacheInterface`` (``get``, ``put``, ``_path``)."""

    def __init__(self, base: Any, directory: Path, key: bytes, signatures: dict[str, str], what: str):
        self._base, self.directory, self._key, self.what = base, directory, key, what
        self._signatures = dict(signatures)
        self._mine: dict[str, str] = {}  # entry name -> tag of the bytes this process wrote
        self._lock = threading.Lock()
        atexit.register(self.seal)

    @property
    def _path(self):
        return self._base._path

    @_path.setter
    def _path(self, value):
        self._base._path = value

    def get(self, key: str) -> bytes | None:
        value = self._base.get(key)
        if value is None:
            return None
        name = f"{key}{CACHE_ENTRY_SUFFIX}"
        with self._lock:
            ok = _signed(self._key, {**self._signatures, **self._mine}, name, value)
        if not ok:
            raise UntrustedFileError(f"{self.what} {self.directory}: entry {name} changed after the cache was checked "
                                     "(not signed by this cache's key); refused, nothing loaded: delete the folder "
                                     "to rebuild the cache")
        return value

    def put(self, key: str, value: bytes) -> None:
        name = f"{key}{CACHE_ENTRY_SUFFIX}"
        existed = (self.directory / name).exists()
        self._base.put(key, value)  # JAX's writer keeps an existing entry as it is
        if not existed:
            with self._lock:
                self._mine[name] = trust.tag(self._key, name.encode(), bytes(value)).hex()

    def seal(self) -> int:
        """Adds the tags of the entries this process wrote to the folder's table (the table on disk is re-read
        first, so concurrent runs keep each other's); returns how many."""
        with self._lock:
            mine, self._mine = self._mine, {}
            self._signatures.update(mine)
        if not mine or not self.directory.is_dir():
            return 0
        try:
            sigs = read_signatures(self.directory)
        except UntrustedFileError:
            sigs = {}
        sigs.update(mine)
        _save_signatures(self.directory, sigs)
        return len(mine)


_state: dict[str, Any] = {"installed": False, "caches": {}}
_install_lock = threading.Lock()


def install() -> None:
    """Puts every compilation cache JAX opens behind the checks of the module docstring (idempotent); a cache
    folder configured already is checked now. Raises UntrustedFileError for an untrusted folder."""
    from jax._src import compilation_cache as cc

    with _install_lock:
        if not _state["installed"]:
            original = cc.get_file_cache

            def trusted_get_file_cache(path: str):
                what = _describe(path)
                directory, key, sigs = verify(path, what)
                made = original(str(directory))
                if made is None:
                    return None
                base, where = made
                cache = SignedCache(base, directory, key, sigs, what)
                _state["caches"][str(directory)] = cache
                return cache, where

            cc.get_file_cache = trusted_get_file_cache
            _state["installed"] = True
            opened = cc._cache  # noqa: SLF001 -- a cache JAX opened before this check existed: checked and wrapped now
            if opened is not None and not isinstance(opened, SignedCache):
                what = _describe(opened._path)  # noqa: SLF001
                directory, key, sigs = verify(opened._path, what)  # noqa: SLF001
                cc._cache = _state["caches"][str(directory)] = SignedCache(opened, directory, key, sigs, what)
    configured = _configured_dir()
    if configured:
        verify(configured, _describe(configured))


def _configured_dir() -> str | None:
    from jax._src import config as jax_config

    return jax_config.compilation_cache_dir.value or None


def _describe(path: str | os.PathLike) -> str:
    env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if env and os.path.abspath(env) == os.path.abspath(os.fspath(path)):
        return "compilation cache (JAX_COMPILATION_CACHE_DIR)"
    return "--compilation-cache"


def cache_for(directory: str | os.PathLike) -> SignedCache | None:
    """The wrapper JAX is using for ``directory`` (None before the first compilation opened it)."""
    return _state["caches"].get(str(Path(directory).absolute()))
