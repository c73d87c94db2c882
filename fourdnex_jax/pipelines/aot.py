"""Fast start-up: JAX's persistent compilation cache, and serialized ahead-of-time (AOT) executables.

Two independent mechanisms. Both folders hold native code that is run when loaded, so both sit behind the trust
boundary of :mod:`fourdnex_jax.utils.trust`: a private folder of this user's (created 0700; refused when another
user owns it, it is group/world-writable or a symlink) and an HMAC-SHA256 tag on every entry made with the folder's
secret key (``.fourdnex-cache-key``, 0600). An entry that fails a check raises
:class:`~fourdnex_jax.utils.errors.UntrustedFileError` before anything of it is unpickled or executed, whatever
``strict`` says: no silent fallback after a failed integrity check.

* :func:`enable_compilation_cache` points JAX's persistent compilation cache at a folder, with the thresholds
  lowered so that every program is written (JAX's defaults skip programs that compile in under a second, which is
  every CPU program of the tiny model). A warm cache still traces and lowers each function, then finds the
  compiled binary by the hash of the lowered program. Every existing entry (``*-cache``) must carry a valid tag in
  ``.fourdnex-signatures.json``, checked at start and again when JAX loads it; the entries this process adds are
  signed when it exits with the tags of the bytes it wrote (:mod:`fourdnex_jax.utils.xla_cache`, which also puts a
  folder named by ``JAX_COMPILATION_CACHE_DIR`` behind the same checks), so a cache of a run killed before that
  is refused (delete it), and so is an entry replaced while a run was going.

* :class:`ExecutableCache` stores whole compiled executables (``jax.experimental.serialize_executable``) under a
  *key* that says what they were built for, and reloads them without tracing, lowering or compiling. The key:
    - ``runtime``: jax and jaxlib versions, backend platform and version, device kind and the ids of the devices,
      ``XLA_FLAGS``, and a digest of this package's Python sources (any code change invalidates every entry);
    - ``context``: what the caller says the program depends on beyond its arguments -- for the image-to-4D
      pipeline the configs of all four models and the sampling settings (guidance scale, solver, cache ...);
    - ``signature``: the arguments' pytree structure and every leaf's shape, dtype, weak type and sharding.
  An entry is the file pair ``<name>-<digest>.jaxexec`` (``MAGIC``, the HMAC tag of the key digest and the
  payload, then the pickled executable + pytree definitions) and ``<name>-<digest>.json`` (its key, written last).
  The tag is checked before the payload is unpickled. A call whose key has no entry compiles, saves and runs; when
  entries of the same name exist for other keys, the differing key fields are reported (``strict=True``: raised as
  :class:`ExecutableKeyMismatch`; otherwise recompiled after a message).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib.metadata
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, SingleDeviceSharding

from fourdnex_jax.media.io import atomic_save_json, atomic_write
from fourdnex_jax.utils import trust, xla_cache
from fourdnex_jax.utils.errors import UntrustedFileError

FORMAT = 1
SUFFIX = ".jaxexec"
MAGIC = b"FDNXEXE1"
SIGNATURES = xla_cache.SIGNATURES
CACHE_ENTRY_SUFFIX = xla_cache.CACHE_ENTRY_SUFFIX
_PACKAGE = Path(__file__).resolve().parents[1]


class ExecutableKeyMismatch(ValueError):
    """A serialized executable exists for the function but was built for another key (see the message)."""


class ExecutableLoadError(RuntimeError):
    """A serialized executable with the right key could not be read or loaded."""


def verify_compilation_cache(directory: str | os.PathLike) -> tuple[Path, bytes]:
    """(folder, key) of a compilation cache folder after checking the folder and every entry; UntrustedFileError
    listing what failed (:func:`fourdnex_jax.utils.xla_cache.verify`)."""
    path, key, _ = xla_cache.verify(directory)
    return path, key


def seal_compilation_cache(directory: str | os.PathLike) -> int:
    """Writes the signatures of the entries this process wrote into ``directory`` (tags of the bytes handed to
    JAX's writer, never of what is on disk now); done at exit anyway. Returns how many."""
    cache = xla_cache.cache_for(directory)
    return cache.seal() if cache is not None else 0


def enable_compilation_cache(directory: str | os.PathLike) -> Path:
    """Turns on JAX's persistent compilation cache in ``directory`` (created 0700), caching every program whatever
    its compile time or size, after :func:`verify_compilation_cache` (an untrusted folder or entry raises
    UntrustedFileError); every entry is checked again when JAX loads it, and the entries this process writes are
    signed (:mod:`fourdnex_jax.utils.xla_cache`). Call it before the first compilation of the process (JAX decides
    once whether the cache is used)."""
    xla_cache.install()
    path, _ = verify_compilation_cache(directory)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 of every ``.py`` file of the ``fourdnex_jax`` package (relative path + content), hex."""
    h = hashlib.sha256()
    for p in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(p.relative_to(_PACKAGE)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def runtime_key(devices: Sequence[jax.Device]) -> dict[str, Any]:
    """The software/hardware part of a key (module docstring)."""
    d0 = devices[0]
    return {"jax": jax.__version__, "jaxlib": importlib.metadata.version("jaxlib"), "backend": d0.platform,
            "platform_version": d0.client.platform_version, "device_kind": d0.device_kind,
            "device_ids": [int(d.id) for d in devices], "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "python": sys.version.split()[0], "code": source_digest()}


def _sharding_sig(s) -> Any:
    if isinstance(s, NamedSharding):
        return ["named", list(s.mesh.axis_names), list(s.mesh.devices.shape),
                [int(d.id) for d in s.mesh.devices.flat], str(s.spec)]
    if isinstance(s, SingleDeviceSharding):
        return ["single", int(next(iter(s.device_set)).id)]
    return ["other", repr(s)]


def _leaf_sig(x) -> Any:
    if isinstance(x, jax.Array):
        return [list(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)), _sharding_sig(x.sharding)]
    if isinstance(x, (np.ndarray, np.generic)):
        return [list(np.shape(x)), str(np.asarray(x).dtype), "host"]
    return [type(x).__name__, "python"]


def _fast_sig(args) -> tuple:
    """A hashable per-call signature (structure, shapes, dtypes, shardings) to find an already loaded executable."""
    leaves, tree = jax.tree.flatten(args)
    return (tree, tuple((type(x), np.shape(x), str(getattr(x, "dtype", type(x).__name__)),
                         getattr(x, "sharding", None), bool(getattr(x, "weak_type", False))) for x in leaves))


def signature(args) -> dict[str, Any]:
    """The ``signature`` part of a key: digest of the pytree structure and every leaf's description."""
    leaves, tree = jax.tree.flatten(args)
    desc = json.dumps([str(tree), [_leaf_sig(x) for x in leaves]], sort_keys=True)
    return {"digest": hashlib.sha256(desc.encode()).hexdigest(), "leaves": len(leaves)}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def key_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable ``field: stored X, now Y`` lines of two keys (long values shortened)."""
    a, b = _flatten(json.loads(json.dumps(stored, default=str))), _flatten(json.loads(json.dumps(current,
                                                                                                 default=str)))
    short = lambda v: (repr(v)[:60] + "...") if len(repr(v)) > 63 else repr(v)
    return [f"{k}: stored {short(a.get(k, '<absent>'))}, now {short(b.get(k, '<absent>'))}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


class ExecutableCache:
    """Serialized executables of jitted functions in ``directory`` (module docstring).

    ``context``: a JSON-able dict of everything the programs depend on beyond their arguments. ``devices``: exactly
    the devices the programs run on, in mesh order (default: the default device, where an unsharded ``jax.jit``
    runs); a loaded executable is bound to them. ``strict``: raise :class:`ExecutableKeyMismatch` /
    :class:`ExecutableLoadError` instead of recompiling. ``events`` records what happened per call
    (``{'name', 'action': 'loaded'|'compiled'|'recompiled', 'seconds', 'path', 'reason'?}``)."""

    def __init__(self, directory: str | os.PathLike, context: dict[str, Any] | None = None, *,
                 devices: Sequence[jax.Device] | None = None, strict: bool = False,
                 log: Callable[[str], None] | None = None):
        self.directory = trust.private_dir(directory, "--aot-cache")
        self._key = trust.cache_key(self.directory, "--aot-cache")
        self.context = json.loads(json.dumps(context or {}, sort_keys=True, default=str))
        self.devices = list(devices) if devices is not None else jax.devices()[:1]
        self.strict = strict
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.events: list[dict[str, Any]] = []
        self._pending_reason: str | None = None

    def key(self, name: str, args) -> dict[str, Any]:
        return {"format": FORMAT, "name": name, "runtime": runtime_key(self.devices), "context": self.context,
                "signature": signature(args)}

    def paths(self, name: str, key: dict[str, Any]) -> tuple[Path, Path]:
        stem = f"{name}-{_digest(key)[:24]}"
        return self.directory / (stem + SUFFIX), self.directory / (stem + ".json")

    def wrap(self, name: str, jitted) -> CachedFunction:
        """A callable running ``jitted`` (a ``jax.jit`` function) through this cache."""
        if not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"executable name {name!r}: use letters, digits, '_' and '-' only")
        return CachedFunction(self, name, jitted)

    # ------------------------------------------------------------------------------------------------------------
    def load(self, name: str, key: dict[str, Any]) -> jax.stages.Compiled | None:
        """The executable stored for exactly ``key``, or None when there is none. Raises
        :class:`ExecutableKeyMismatch` (strict mode) when only entries for other keys of ``name`` exist."""
        exe, meta = self.paths(name, key)
        if meta.exists() and exe.exists():
            stored = json.loads(meta.read_text())
            if stored == json.loads(json.dumps(key, default=str)):
                return self._deserialize(name, exe, _digest(key))
            self._mismatch(name, [(meta, stored)], key)
            return None
        if meta.exists() or exe.exists():
            self.log(f"executable cache: incomplete entry {exe.name} (one of .jaxexec/.json missing); recompiling")
        others = []
        for m in sorted(p for p in self.directory.glob(f"{name}-*.json") if p != meta):
            try:
                others.append((m, json.loads(m.read_text())))
            except json.JSONDecodeError as e:
                self.log(f"executable cache: ignoring unreadable key file {m}: {e}")
        if others:
            self._mismatch(name, others, key)
        return None

    def _mismatch(self, name: str, others: list[tuple[Path, dict]], key: dict[str, Any]) -> None:
        diffs = sorted(((key_differences(stored, key), path) for path, stored in others), key=lambda t: len(t[0]))
        diff, path = diffs[0]
        msg = (f"serialized executable {name!r}: {len(others)} entr{'y' if len(others) == 1 else 'ies'} in "
               f"{self.directory} for other keys; the nearest ({path.name}) differs in "
               + "; ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else ""))
        if self.strict:
            raise ExecutableKeyMismatch(msg + ". Use a fresh cache folder or delete the stale entries, or run "
                                              "without strict to recompile")
        self.log(msg + "; compiling it anew")
        self._pending_reason = msg

    def _verified_blob(self, path: Path, digest: str) -> bytes:
        """The pickled part of entry ``path`` once its owner, permissions and HMAC tag (over the key digest and
        the payload) check out; UntrustedFileError otherwise (nothing unpickled)."""
        data = trust.read_owned(path, "serialized executable")
        head, tag, blob = data[:len(MAGIC)], data[len(MAGIC):len(MAGIC) + trust.TAG_BYTES], \
            data[len(MAGIC) + trust.TAG_BYTES:]
        if head != MAGIC or not hmac.compare_digest(tag, trust.tag(self._key, digest.encode(), blob)):
            raise UntrustedFileError(
                f"serialized executable {path} failed its integrity check (not written with this cache's key, or "
                "modified since): refused, nothing loaded; delete the file or the --aot-cache folder to recompile")
        return blob

    def _deserialize(self, name: str, path: Path, digest: str) -> jax.stages.Compiled | None:
        from jax.experimental import serialize_executable  # where used: an experimental module (see save)

        t0 = time.perf_counter()
        blob = self._verified_blob(path, digest)  # raises, whatever `strict` says: a tampered entry is not skipped
        try:
            blob = pickle.loads(blob)
            if blob.get("format") != FORMAT:
                raise ValueError(f"format {blob.get('format')} != {FORMAT}")
            compiled = serialize_executable.deserialize_and_load(
                blob["payload"], blob["in_tree"], blob["out_tree"], backend=self.devices[0].platform,
                execution_devices=self.devices)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError,
                jax.errors.JaxRuntimeError) as e:  # an authentic entry this runtime cannot load (e.g. a format bump)
            msg = f"serialized executable {name!r} at {path} could not be loaded ({type(e).__name__}: {e})"
            if self.strict:
                raise ExecutableLoadError(msg + "; delete it or run without strict to recompile") from e
            self.log(msg + "; compiling it anew")
            self._pending_reason = msg
            return None
        self.events.append({"name": name, "action": "loaded", "seconds": time.perf_counter() - t0,
                            "path": str(path)})
        return compiled

    def save(self, name: str, key: dict[str, Any], compiled: jax.stages.Compiled) -> Path:
        # Imported where used, not with the module: importing the pipeline (which imports this module) must not
        # depend on an experimental jax module that a newer jax may move.
        from jax.experimental import serialize_executable

        payload, in_tree, out_tree = serialize_executable.serialize(compiled)
        exe, meta = self.paths(name, key)
        blob = pickle.dumps({"format": FORMAT, "payload": payload, "in_tree": in_tree, "out_tree": out_tree})
        signed = MAGIC + trust.tag(self._key, _digest(key).encode(), blob) + blob
        atomic_write(exe, lambda f: f.write(signed))
        atomic_save_json(meta, key)  # last: a key file means a complete entry
        return exe

    def get(self, name: str, jitted, args) -> jax.stages.Compiled:
        """Loads the executable of ``jitted`` for ``args``, or compiles (and saves) it."""
        self._pending_reason = None
        key = self.key(name, args)
        compiled = self.load(name, key)
        if compiled is not None:
            return compiled
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        seconds = time.perf_counter() - t0
        path = self.save(name, key, compiled)
        event = {"name": name, "action": "recompiled" if self._pending_reason else "compiled", "seconds": seconds,
                 "path": str(path)}
        if self._pending_reason:
            event["reason"] = self._pending_reason
        self.events.append(event)
        return compiled


class CachedFunction:
    """``f(*args)``: runs the executable of ``jitted`` for the arguments' signature, loading or compiling it through
    the :class:`ExecutableCache` on the first call with that signature. Positional arguments only."""

    def __init__(self, cache: ExecutableCache, name: str, jitted):
        self.cache, self.name, self.jitted = cache, name, jitted
        self._compiled: dict[tuple, jax.stages.Compiled] = {}

    def __call__(self, *args):
        sig = _fast_sig(args)
        compiled = self._compiled.get(sig)
        if compiled is None:
            compiled = self._compiled[sig] = self.cache.get(self.name, self.jitted, args)
        return compiled(*args)
