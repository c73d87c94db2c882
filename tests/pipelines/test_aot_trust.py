"""The trust boundary of the native-code caches (fourdnex_jax/utils/trust.py, pipelines/aot.py): a planted payload
in --aot-cache or --compilation-cache is refused before anything of it runs, and so are folders other users could
write."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourdnex_jax.pipelines import aot
from fourdnex_jax.pipelines.aot import ExecutableCache
from fourdnex_jax.utils import trust
from fourdnex_jax.utils.errors import UntrustedFileError


class _Payload:
    """Unpickling this creates ``marker``: the proof that a planted file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(cache: ExecutableCache, name, args, marker, *, with_magic: bool):
    key = cache.key(name, args)
    exe, meta = cache.paths(name, key)
    blob = pickle.dumps({"format": aot.FORMAT, "payload": _Payload(marker), "in_tree": None, "out_tree": None})
    forged = aot.MAGIC + b"\0" * trust.TAG_BYTES + blob if with_magic else blob
    exe.write_bytes(forged)
    meta.write_text(__import__("json").dumps(key, sort_keys=True, default=str))
    return exe


@pytest.mark.parametrize("with_magic", [False, True])
@pytest.mark.parametrize("strict", [False, True])
def test_planted_executable_is_refused_and_nothing_runs(tmp_path, with_magic, strict):
    marker = tmp_path / "payload_ran"
    fn = jax.jit(lambda x: x + 1.0)
    x = jnp.arange(3.0)
    cache = ExecutableCache(tmp_path / "exe", strict=strict)
    _plant(cache, "f", (x,), marker, with_magic=with_magic)
    with pytest.raises(UntrustedFileError, match="integrity check.*refused, nothing loaded"):
        cache.wrap("f", fn)(x)
    assert not marker.exists()
    assert cache.events == []  # neither loaded nor silently recompiled


def test_payload_would_run_if_unpickled(tmp_path):
    """The planted file of the test above is a real payload: unpickled directly, it creates the marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


def test_entry_signed_by_another_cache_key_is_refused(tmp_path):
    fn = jax.jit(lambda x: x * 3.0)
    x = jnp.arange(2.0)
    a = ExecutableCache(tmp_path / "a")
    a.wrap("f", fn)(x)
    b = ExecutableCache(tmp_path / "b")
    for p in (tmp_path / "a").glob("f-*"):  # copied from another cache folder: its tag is not b's
        (tmp_path / "b" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(UntrustedFileError, match="integrity check"):
        b.wrap("f", fn)(x)
    np.testing.assert_array_equal(ExecutableCache(tmp_path / "a", strict=True).wrap("f", fn)(x), fn(x))


def test_cache_folder_permissions_are_checked(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(UntrustedFileError, match="world-writable"):
        ExecutableCache(d)
    with pytest.raises(UntrustedFileError, match="world-writable"):
        aot.enable_compilation_cache(d)
    os.chmod(d, 0o700)
    ExecutableCache(d)
    key = d / trust.KEY_FILE
    assert (key.stat().st_mode & 0o777) == 0o600
    os.chmod(key, 0o644)
    with pytest.raises(UntrustedFileError, match="readable by others"):
        ExecutableCache(d)
    link = tmp_path / "link"
    link.symlink_to(d)
    with pytest.raises(UntrustedFileError, match="symlink"):
        ExecutableCache(link)
    fresh = tmp_path / "new" / "cache"
    ExecutableCache(fresh)
    assert (fresh.stat().st_mode & 0o777) == 0o700


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown to another user")
def test_folder_of_another_user_is_refused(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(UntrustedFileError, match="not by this user"):
        ExecutableCache(d)


_COMPILE = """
import sys, jax, jax.numpy as jnp
from fourdnex_jax.pipelines.aot import enable_compilation_cache
enable_compilation_cache(sys.argv[1])
print(float(jax.jit(lambda x: (x * 2.0 + 1.0).sum())(jnp.arange(7.0))))
"""


def _compile(cache_dir):
    return subprocess.run([sys.executable, "-c", _COMPILE, str(cache_dir)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.integration
def test_compilation_cache_signs_its_entries_and_refuses_planted_ones(tmp_path):
    cache = tmp_path / "xla"
    first = _compile(cache)
    assert first.returncode == 0, first.stderr
    entries = [p for p in cache.iterdir() if p.name.endswith(aot.CACHE_ENTRY_SUFFIX)]
    assert entries, "nothing was cached"
    assert (cache / aot.SIGNATURES).exists()  # signed at exit
    again = _compile(cache)  # a signed cache is used
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr
    marker = tmp_path / "payload_ran"
    (cache / f"planted{aot.CACHE_ENTRY_SUFFIX}").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UntrustedFileError, match="1 entry not signed.*planted-cache"):
        aot.verify_compilation_cache(cache)
    refused = _compile(cache)
    assert refused.returncode != 0 and "UntrustedFileError" in refused.stderr and not marker.exists()
    (cache / f"planted{aot.CACHE_ENTRY_SUFFIX}").unlink()
    entries[0].write_bytes(entries[0].read_bytes() + b"x")  # a modified entry
    with pytest.raises(UntrustedFileError, match="not signed by this cache's key"):
        aot.verify_compilation_cache(cache)
