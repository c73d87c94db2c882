"""Checkpoint folder integrity: the file index (``fourdnex_files.json``: every file's size and sha256) written
when a checkpoint is saved, and its check before the checkpoint is read.

Why: orbax and tensorstore find a missing or truncated data file only in the middle of a restore, from background
threads, and never notice bytes that changed in place (a flipped bit, a data file swapped for a same-size file):
the model then computes something else without a word. The index is checked first and every problem is one line
naming the file.

Index format ``fourdnex-file-index/2``: ``{"files": {relative path: {"bytes": n, "sha256": hex}}}``; the older
``/1`` (``{relative path: bytes}``) is still read (sizes only). A file of the index is refused when it is missing,
has another size or digest, or is (or lies under) a symlink that leads out of the checkpoint folder.

The fast path. Hashing a 14B bundle (~35 GB) takes minutes, so a file is re-hashed only when it may have changed
since this user last verified it: the verification cache (:class:`VerifiedCache`) remembers, per file, its
``(size, mtime_ns, ctime_ns, inode, device)`` and the digest that matched. ``ctime`` cannot be set back by a user
(``touch -d`` and archive extraction set ``mtime`` only), so an in-place edit that restores the old mtime is still
seen. The cache lives outside the bundle, in a private folder of this user's (``$FOURDNEX_CACHE/verified``, 0700):
a sidecar inside the bundle would be written by whoever wrote the bundle, so a tampered bundle could ship a cache
that claims its files were verified; bundles may also sit on read-only or shared storage. When the cache folder
is unusable the files are simply hashed every time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.utils import trust
from fourdnex_jax.utils.files import read_json

FILE_INDEX = "fourdnex_files.json"
FORMAT = "fourdnex-file-index/2"
FORMATS = ("fourdnex-file-index/1", FORMAT)
_BLOCK = 16 * 2**20
#: The largest index file read (an index lists a few hundred files; a bigger one is not ours).
MAX_INDEX_BYTES = 64 * 2**20


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def write_file_index(directory: str | os.PathLike) -> Path:
    """Writes :data:`FILE_INDEX` of the checkpoint at ``directory``: size and sha256 of every file under it."""
    directory = Path(directory)
    files = {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != FILE_INDEX}
    path = Path(atomic_save_json(directory / FILE_INDEX, {"format": FORMAT, "files": files}))
    VerifiedCache.open().remember_folder(directory, files)  # we just hashed them: the first load is fast too
    return path


class FileIndexError(ValueError):
    """The index itself is unreadable (not JSON, not an index of ours)."""


def read_file_index(directory: str | os.PathLike) -> dict[str, tuple[int, str | None]] | None:
    """``{relative path: (bytes, sha256 or None)}`` of a checkpoint's index; None when there is none (a
    checkpoint written by another tool). Raises :class:`FileIndexError` for an unreadable one."""
    index = Path(directory) / FILE_INDEX
    if not index.is_file() and not index.is_symlink():
        return None
    try:
        if not stat.S_ISREG(os.lstat(index).st_mode):
            raise ValueError("not a regular file")
        obj = read_json(index, what="checkpoint file index", limit=MAX_INDEX_BYTES)
        if not isinstance(obj, dict) or obj.get("format") not in FORMATS or not isinstance(obj.get("files"), dict):
            raise ValueError(f"format {obj.get('format')!r}")
        out = {}
        for rel, rec in obj["files"].items():
            if isinstance(rec, dict):
                size, digest = rec["bytes"], rec.get("sha256")
            else:
                size, digest = rec, None
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"{rel}: size {size!r}")
            if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                           and all(c in "0123456789abcdef" for c in digest)):
                raise ValueError(f"{rel}: sha256 {digest!r}")
            out[str(rel)] = (size, digest)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise FileIndexError(f"{index} unreadable ({type(e).__name__}: {e})") from e


def _inside(path: Path, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


@dataclasses.dataclass
class FolderReport:
    """What :func:`check_folder` found: ``problems`` (one short phrase per bad file), ``files`` checked, ``bytes``
    of them, ``hashed`` bytes actually read (the rest came from the verification cache), ``indexed``: whether the
    folder had an index at all."""

    directory: Path
    problems: list[str]
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    indexed: bool = True

    def line(self, limit: int = 2) -> str | None:
        if not self.problems:
            return None
        shown = ", ".join(self.problems[:limit]) + (f", {len(self.problems) - limit} more"
                                                    if len(self.problems) > limit else "")
        return (f"{self.directory}: {len(self.problems)} of its {self.files} files missing or truncated or not as "
                f"written ({shown})")


def check_folder(directory: str | os.PathLike, *, digests: bool = True, use_cache: bool = True) -> FolderReport:
    """Checks every file of a checkpoint's index (module docstring). ``digests=False``: sizes only (what the
    restore path's quick check needs when the caller re-reads every byte anyway); ``use_cache=False``: every file
    re-hashed (``fourdnex verify``), and the cache refreshed."""
    directory = Path(directory)
    try:
        index = read_file_index(directory)
    except FileIndexError as e:
        return FolderReport(directory, [str(e).replace(f"{directory}/", "")], indexed=True)
    if index is None:
        return FolderReport(directory, [], indexed=False)
    root_real = os.path.realpath(directory)
    cache = VerifiedCache.open() if digests else None
    known = cache.folder(directory) if cache is not None and use_cache else {}
    verified: dict[str, list] = {}
    report = FolderReport(directory, [], files=len(index))
    for rel, (size, digest) in index.items():
        path = directory / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            report.problems.append(f"{rel} is outside the folder")
            continue
        if not _inside(path, root_real):
            report.problems.append(f"{rel} is a symlink out of the folder")
            continue
        try:
            st = os.stat(path)
        except OSError:
            report.problems.append(f"{rel} missing")
            continue
        if not stat.S_ISREG(st.st_mode):
            report.problems.append(f"{rel} is not a regular file")
            continue
        report.bytes += st.st_size
        if st.st_size != size:
            report.problems.append(f"{rel} has {st.st_size} of {size} bytes")
            continue
        if not digests or digest is None:
            continue
        key = _stat_key(st)
        if known.get(rel) == [*key, digest]:
            verified[rel] = known[rel]
            continue
        try:
            got = sha256_of(path)
        except OSError as e:
            report.problems.append(f"{rel} unreadable ({e.strerror or e})")
            continue
        report.hashed += st.st_size
        if got != digest:
            report.problems.append(f"{rel}: sha256 differs from the index (changed since it was written)")
            continue
        verified[rel] = [*key, digest]
    if cache is not None:
        cache.store(directory, verified)
    return report


def file_index_problems(directory: str | os.PathLike, limit: int = 2) -> list[str]:
    """What is wrong with the files of :data:`FILE_INDEX` (missing, another size or digest than written, a
    symlink out of the folder), as one line: empty when all check out, or when the checkpoint has no index
    (written by another tool; orbax then reports damage itself)."""
    line = check_folder(directory).line(limit)
    return [line] if line else []


def checkpoint_folders(root: str | os.PathLike) -> list[Path]:
    """Every folder under ``root`` (``root`` included) holding a :data:`FILE_INDEX`."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(FILE_INDEX) if not any(
        part.startswith(".") for part in p.relative_to(root).parts))


# ------------------------------------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$FOURDNEX_CACHE`` (default ``~/.cache/fourdnex_jax``)."""
    return Path(os.environ.get("FOURDNEX_CACHE") or Path.home() / ".cache" / "fourdnex_jax")


class VerifiedCache:
    """The verification cache (module docstring): ``<cache>/verified/<sha256 of the folder's real path>.json`` =
    ``{"folder": real path, "files": {relative path: [size, mtime_ns, ctime_ns, inode, device, sha256]}}``.
    Every method is a no-op when the cache folder is unusable (not private to this user, read-only, ...)."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    @classmethod
    def open(cls) -> VerifiedCache:
        try:
            return cls(trust.private_dir(cache_root() / "verified", "verification cache"))
        except (OSError, ValueError):
            return cls(None)

    def _path(self, folder: Path) -> tuple[Path, str] | None:
        if self.directory is None:
            return None
        real = os.path.realpath(folder)
        return self.directory / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.json", real

    def folder(self, folder: str | os.PathLike) -> dict[str, list]:
        where = self._path(Path(folder))
        if where is None:
            return {}
        path, real = where
        try:
            obj = json.loads(trust.read_owned(path, "verification cache"))
            return obj["files"] if obj.get("folder") == real and isinstance(obj.get("files"), dict) else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def store(self, folder: str | os.PathLike, files: dict[str, list]) -> None:
        where = self._path(Path(folder))
        if where is None:
            return
        path, real = where
        try:
            atomic_save_json(path, {"folder": real, "files": files})
            os.chmod(path, 0o600)
        except OSError:
            pass

    def remember_folder(self, folder: Path, files: dict[str, dict]) -> None:
        """Records ``files`` (``{rel: {"bytes", "sha256"}}``, just written and hashed) as verified."""
        entries = {}
        for rel, rec in files.items():
            try:
                entries[rel] = [*_stat_key(os.stat(folder / rel)), rec["sha256"]]
            except OSError:
                continue
        self.store(folder, entries)


def manifest_file_problems(directory: str | os.PathLike, records: dict[str, dict]) -> Iterable[str]:
    """Problems of ``records`` (``{relative path: {"bytes", "sha256"}}``, e.g. a manifest's ``files``) under
    ``directory``: missing, other size or digest, a symlink out of the folder."""
    directory = Path(directory)
    root_real = os.path.realpath(directory)
    for rel, rec in records.items():
        path = directory / rel
        if not isinstance(rec, dict) or Path(rel).is_absolute() or ".." in Path(rel).parts:
            yield f"{rel}: not a file record"
        elif not _inside(path, root_real):
            yield f"{rel} is a symlink out of the folder"
        elif not path.is_file():
            yield f"{rel} missing"
        elif path.stat().st_size != rec.get("bytes"):
            yield f"{rel} has {path.stat().st_size} of {rec.get('bytes')} bytes"
        elif rec.get("sha256") is not None and sha256_of(path) != rec["sha256"]:
            yield f"{rel}: sha256 differs from the manifest"
