"""``manifest.json``: what a conversion read and wrote (written atomically, last, so its presence means the
conversion finished).

Top-level keys: ``format``, ``direction`` ('torch-to-jax' | 'jax-to-torch'), ``source``, ``created``, ``versions``,
``models`` (per model: checkpoint folder, config file, param dtype, tensor counts, ignored keys, bytes, dtypes,
source files with sha256), ``adapter`` (LoRA rank/targets, metadata, effective scale and its derivation, the
``fuse_lora`` scale that reproduces it after export), ``copied`` (non-weight folders with file hashes), ``skipped``,
``files`` (size and sha256 of every file of the folder outside its checkpoint folders, whose own file index is
listed in turn: :func:`record_files`);
bundles (torch-to-jax output, :func:`fourdnex_jax.pipelines.bundle.save_bundle`) add ``sampling_preset`` (a
:class:`~fourdnex_jax.recipe.SamplingPreset`: what the model is meant to be sampled with) and ``recipe`` (a
:class:`~fourdnex_jax.recipe.SixDSpec`: the 6D contract it was trained with).
"""

from __future__ import annotations

import datetime
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import read_json
from fourdnex_jax.weights import integrity
from fourdnex_jax.weights.safetensors import sha256_file

FORMAT = "fourdnex_jax.convert/1"
MANIFEST = "manifest.json"


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("jax", "flax", "orbax-checkpoint", "tensorstore", "safetensors", "numpy"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def file_record(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    path = Path(path)
    return {"sha256": sha256 or sha256_file(path), "bytes": path.stat().st_size}


def new_manifest(direction: str, source: str | os.PathLike) -> dict[str, Any]:
    return {"format": FORMAT, "direction": direction, "source": str(Path(source).absolute()),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "versions": versions(), "models": {}, "copied": {}, "skipped": []}


def record_files(directory: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Sets ``manifest["files"]``: ``{relative path: {"bytes", "sha256"}}`` of every file under ``directory`` that no
    checkpoint file index covers (configs, tokenizer, scheduler, ..., and each checkpoint's index itself), except
    the manifest. With the indexes this gives every file of a bundle a digest (``fourdnex verify``)."""
    directory = Path(directory)
    checkpoints = integrity.checkpoint_folders(directory)
    files = {}
    for p in sorted(directory.rglob("*")):
        if not p.is_file() or p == directory / MANIFEST:
            continue
        if any(c in p.parents and p.name != integrity.FILE_INDEX for c in checkpoints):
            continue
        files[p.relative_to(directory).as_posix()] = file_record(p)
    manifest["files"] = files
    return manifest


def update_file_record(directory: str | os.PathLike, relative: str) -> None:
    """After a file of a finished folder was (re)written on purpose (``fourdnex make-domain``'s ``domain.json``):
    its record in the manifest's ``files`` is renewed (nothing to do for a manifest without them)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return
    manifest = read_manifest(directory)
    if isinstance(manifest.get("files"), dict):
        manifest["files"][relative] = file_record(Path(directory) / relative)
        write_manifest(directory, manifest)


def file_problems(directory: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the files the manifest records (``files``; empty for a manifest without them)."""
    records = manifest.get("files")
    return list(integrity.manifest_file_problems(directory, records)) if isinstance(records, dict) else []


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    return atomic_save_json(Path(directory) / MANIFEST, manifest)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a finished conversion / bundle; a missing, unreadable or foreign one raises
    :class:`~fourdnex_jax.utils.errors.InputError` naming it."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise InputError(f"{directory}: no such folder (pass a bundle folder written by `fourdnex convert` / "
                         "`fourdnex bundle`)")
    if not path.is_file():
        raise InputError(f"{path} not found: {directory} is not a finished conversion (run `fourdnex convert` "
                         "first, or the conversion was interrupted: convert again into a new folder)")
    manifest = read_json(path, what="manifest", fix="the folder is damaged: copy or convert it again")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"{path}: format {found!r}, expected {FORMAT!r}; convert the weights again with this "
                         "version")
    return manifest
