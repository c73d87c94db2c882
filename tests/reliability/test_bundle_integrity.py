"""Bundles and caches have integrity checks (issue 26, classes 4 and 6): sha256 per file in every checkpoint's file
index and in the manifest, checked on load with a fast path that re-hashes only what changed (size / mtime / ctime /
inode, remembered in a private cache outside the bundle); symlinks out of the bundle refused; ``fourdnex verify``;
safetensors headers that name a tensor twice; compilation caches trusted only if signed when written by this
process, whatever variable points at them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.cli.verify import verify
from fourdnex_jax.pipelines.bundle import check_bundle
from fourdnex_jax.utils import trust, xla_cache
from fourdnex_jax.utils.errors import InputError, UntrustedFileError
from fourdnex_jax.weights import integrity
from fourdnex_jax.weights.safetensors import CheckpointFileError, read_header

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "checkpoints" / "tiny"
BIG = "transformer/ocdbt.process_0/d/874c8a1e43920e18fa88f743db203435"  # the DiT's largest data file


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FOURDNEX_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def bundle(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(TINY, dst)
    return dst


def _flip(path: Path, at: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(raw))


# ------------------------------------------------------------------------------------------------- the index
def test_shipped_bundle_carries_digests_for_every_file():
    r = verify(TINY)
    assert r["problems"] == [] and r["unrecorded"] == [], r
    assert r["files"] == sum(1 for p in TINY.rglob("*") if p.is_file()) - 1  # all but the manifest itself
    for folder in integrity.checkpoint_folders(TINY):
        assert all(d is not None for _, d in integrity.read_file_index(folder).values())


def test_flipped_byte_same_size_is_refused_on_load(bundle):
    _flip(bundle / BIG)
    with pytest.raises(InputError, match="sha256 differs") as e:
        check_bundle(bundle)
    assert BIG.split("/")[-1] in str(e.value) and "\n" not in str(e.value)


def test_symlink_to_a_same_size_file_outside_is_refused(bundle, tmp_path):
    outside = tmp_path / "floats.bin"
    outside.write_bytes(np.random.default_rng(0).standard_normal((bundle / BIG).stat().st_size // 8).tobytes())
    (bundle / BIG).unlink()
    (bundle / BIG).symlink_to(outside)
    with pytest.raises(InputError, match="symlink out of the folder"):
        check_bundle(bundle)


def test_symlinked_folder_out_of_the_bundle_is_refused(bundle, tmp_path):
    shutil.move(bundle / "vae", tmp_path / "vae_elsewhere")
    (bundle / "vae").symlink_to(tmp_path / "vae_elsewhere")
    with pytest.raises(InputError, match="symlink out of the folder"):
        check_bundle(bundle)


def test_edited_small_file_is_refused_through_the_manifest(bundle):
    path = bundle / "scheduler" / "scheduler_config.json"
    path.write_text(path.read_text() + " ")
    with pytest.raises(InputError, match="scheduler_config.json"):
        check_bundle(bundle)


def test_fast_path_rehashes_only_what_changed(bundle):
    first = integrity.check_folder(bundle / "transformer")
    assert not first.problems and first.hashed == first.bytes > 0
    again = integrity.check_folder(bundle / "transformer")
    assert not again.problems and again.hashed == 0  # all from the verification cache
    target = bundle / BIG
    st = target.stat()
    _flip(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the ctime still changed
    after = integrity.check_folder(bundle / "transformer")
    assert after.hashed == target.stat().st_size and "sha256 differs" in after.problems[0]


def test_verification_cache_is_private_and_outside_the_bundle(bundle, tmp_path):
    integrity.check_folder(bundle / "vae")
    cache = tmp_path / "cache" / "verified"
    assert cache.is_dir() and stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert not any(p.name.startswith(".") or "verified" in p.name for p in bundle.rglob("*"))
    # a cache that is not private is not used (every file hashed), never trusted
    os.chmod(cache, 0o777)
    report = integrity.check_folder(bundle / "vae")
    assert not report.problems and report.hashed == report.bytes


def test_index_v1_without_digests_is_still_read(bundle):
    folder = bundle / "vae"
    index = json.loads((folder / integrity.FILE_INDEX).read_text())
    v1 = {"format": "fourdnex-file-index/1", "files": {k: v["bytes"] for k, v in index["files"].items()}}
    (folder / integrity.FILE_INDEX).write_text(json.dumps(v1))
    assert integrity.check_folder(folder).problems == []
    victim = next(folder / k for k, v in index["files"].items() if v["bytes"] > 100)
    victim.write_bytes(victim.read_bytes()[:-1])
    assert "bytes" in integrity.check_folder(folder).problems[0]


def test_garbage_index_is_a_problem_not_a_crash(bundle):
    (bundle / "vae" / integrity.FILE_INDEX).write_bytes(b"\xff{not json")
    problems = integrity.check_folder(bundle / "vae").problems
    assert problems and "unreadable" in problems[0]


def test_verify_names_every_damaged_file(bundle):
    _flip(bundle / BIG)
    (bundle / "configs" / "vae.json").write_text("{}")
    r = verify(bundle)
    assert len(r["problems"]) == 2, r["problems"]
    assert any(BIG in p for p in r["problems"]) and any("configs/vae.json" in p for p in r["problems"])


@pytest.mark.integration
def test_verify_command_prints_one_summary_line(bundle):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    ok = subprocess.run([sys.executable, "-m", "fourdnex_jax", "verify", str(bundle)], capture_output=True,
                        text=True, env=env, timeout=300)
    assert ok.returncode == 0 and ok.stdout.count("\n") == 1 and ": OK: 65 files" in ok.stdout, ok
    _flip(bundle / BIG)
    bad = subprocess.run([sys.executable, "-m", "fourdnex_jax", "verify", str(bundle)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 1 and bad.stdout.count("\n") == 1 and "DAMAGED: 1 of 65" in bad.stdout, bad
    assert "Traceback" not in bad.stderr


def test_make_domain_keeps_the_manifest_digest_current(bundle):
    from fourdnex_jax.pipelines import domain

    dom = json.loads((bundle / "domain.json").read_text())
    dom["note"] = "refit"
    domain.write_domain(bundle, dom)
    check_bundle(bundle)  # the rewritten domain.json is recorded again


# ------------------------------------------------------------------------------------------------ safetensors
def _st(path: Path, header: str, data: bytes) -> Path:
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


ENTRY = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'


@pytest.mark.parametrize("name,header,data,match", [
    ("dup", '{"a":' + ENTRY + ',"a":' + ENTRY + '}', bytes(8), "names 'a' twice"),
    ("float_shape", '{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', bytes(8), "integers"),
    ("inf_shape", '{"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,8]}}', bytes(8), "integers"),
    ("bool_offset", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[false,8]}}', bytes(8), "integers"),
    ("metadata_list", '{"__metadata__":[1],"a":' + ENTRY + '}', bytes(8), "map of strings"),
    ("out_of_bounds", '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', bytes(8), "truncated"),
    ("size_mismatch", '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8), "do not hold"),
    ("overlap", '{"a":' + ENTRY + ',"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(16), "overlap"),
    ("deep_json", "[" * 100_000, b"", "corrupt"),
])
def test_safetensors_header_problems_are_named(tmp_path, name, header, data, match):
    path = _st(tmp_path / f"{name}.safetensors", header, data)
    with pytest.raises(CheckpointFileError, match=match) as e:
        read_header(path)
    assert str(path) in str(e.value).splitlines()[0]


def test_duplicate_key_in_a_shard_index_is_refused(tmp_path):
    from fourdnex_jax.weights.safetensors import model_files

    (tmp_path / "m.safetensors.index.json").write_text('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}')
    with pytest.raises(CheckpointFileError, match="twice|index"):
        model_files(tmp_path, "m")


# ---------------------------------------------------------------------------------------- compilation caches
class _FakeLRU:
    """JAX's LRUCache's file layout (``<key>-cache``), without JAX."""

    def __init__(self, path: Path):
        self._path = path

    def get(self, key):
        p = self._path / f"{key}-cache"
        return p.read_bytes() if p.exists() else None

    def put(self, key, value):
        p = self._path / f"{key}-cache"
        if not p.exists():
            p.write_bytes(value)


def _signed_cache(directory: Path) -> xla_cache.SignedCache:
    path, key, sigs = xla_cache.verify(directory)
    return xla_cache.SignedCache(_FakeLRU(path), path, key, sigs, "--compilation-cache")


def test_entry_replaced_during_a_run_is_not_signed_at_exit(tmp_path):
    cache = _signed_cache(tmp_path / "xla")
    cache.put("k1", b"compiled program")
    (tmp_path / "xla" / "k1-cache").write_bytes(b"planted program!")  # replaced while the run goes on
    cache.put("k2", b"another program")
    assert cache.seal() == 2
    with pytest.raises(UntrustedFileError, match="1 entry not signed.*k1-cache"):
        xla_cache.verify(tmp_path / "xla")
    (tmp_path / "xla" / "k1-cache").unlink()
    xla_cache.verify(tmp_path / "xla")  # what this process really wrote stays trusted


def test_entry_planted_after_the_start_check_is_refused_when_loaded(tmp_path):
    cache = _signed_cache(tmp_path / "xla")
    cache.put("mine", b"compiled program")
    assert cache.get("mine") == b"compiled program"
    (tmp_path / "xla" / "theirs-cache").write_bytes(b"planted")
    with pytest.raises(UntrustedFileError, match="theirs-cache"):
        cache.get("theirs")
    (tmp_path / "xla" / "mine-cache").write_bytes(b"modified program")
    with pytest.raises(UntrustedFileError, match="mine-cache"):
        cache.get("mine")


def test_world_writable_cache_folder_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UntrustedFileError, match="world-writable"):
        xla_cache.verify(shared, "compilation cache (JAX_COMPILATION_CACHE_DIR)")


@pytest.mark.integration
def test_jax_compilation_cache_dir_variable_does_not_skip_the_check(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(shared)}
    out = subprocess.run([sys.executable, "-m", "fourdnex_jax", "describe", "--config", "tiny"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert "JAX_COMPILATION_CACHE_DIR" in line and "world-writable" in line, line
    code = ("import jax, jax.numpy as jnp; from fourdnex_jax.utils import xla_cache; xla_cache.install()")
    api = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert api.returncode != 0 and "UntrustedFileError" in api.stderr


def test_key_file_readable_by_others_is_refused(tmp_path):
    path, _, _ = xla_cache.verify(tmp_path / "xla")
    os.chmod(path / trust.KEY_FILE, 0o644)
    with pytest.raises(UntrustedFileError, match="readable by others"):
        xla_cache.verify(path)
