"""``manifest.json``: what a conversion read and wrote (written atomically, last, so its presence means the
conversion finished).

Top-level keys: ``format``, ``direction`` ('torch-to-jax' | 'jax-to-torch'), ``source``, ``created``, ``versions``,
``models`` (per model: checkpoint folder, config file, param dtype, tensor counts, ignored keys, bytes, dtypes,
source files with sha256), ``adapter`` (LoRA rank/targets, metadata, effective scale and its derivation, the
``fuse_lora`` scale that reproduces it after export), ``copied`` (non-weight folders with file hashes), ``skipped``.
"""

from __future__ import annotations

import datetime
import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from fourdnex_jax.convert.safetensors_stream import sha256_file
from fourdnex_jax.io_utils import atomic_save_json

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
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(), "models": {}, "copied": {}, "skipped": []}


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    return atomic_save_json(Path(directory) / MANIFEST, manifest)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {directory} is not a finished conversion (run "
                                "tools/convert.py torch-to-jax first, or the conversion was interrupted)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest
