"""Checks every file of a bundle (or a converted folder, or a training run) against the sizes and sha256 digests
written with it, and prints one summary line.

    fourdnex verify BUNDLE [--fast]

What is checked: every file listed by a checkpoint folder's file index (``fourdnex_files.json``: the weights, orbax's
metadata), every file the bundle's ``manifest.json`` records (configs, tokenizer, scheduler, image processor, and the
indexes themselves), and that none of them is a symlink leading out of the folder. Every listed file is re-hashed
(``--fast``: only the ones whose size, mtime or ctime changed since this user last verified them, the check
``generate`` makes on load). Exit status 0 when everything matches, 1 when a file is missing, changed or outside.
Files no index or manifest lists are counted in the summary (bundles written before digests existed have some).
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

from fourdnex_jax.cli.common import UsageError
from fourdnex_jax.utils.errors import InputError

_FAST = flags.DEFINE_bool("fast", False, "Re-hash only the files that changed since they were last verified.")


def verify(folder: Path, fast: bool = False) -> dict:
    """``{"files", "bytes", "hashed", "problems", "unrecorded"}`` of ``folder`` (see the module docstring)."""
    from fourdnex_jax.weights import integrity
    from fourdnex_jax.weights import manifest as manifest_lib

    folders = integrity.checkpoint_folders(folder)
    covered, problems = set(), []
    files = size = hashed = 0
    for ck in folders:
        report = integrity.check_folder(ck, use_cache=fast)
        prefix = ck.relative_to(folder).as_posix()
        problems += [f"{prefix}/{p}" if prefix != "." else p for p in report.problems]
        files, size, hashed = files + report.files, size + report.bytes, hashed + report.hashed
        try:
            covered |= {(ck / rel).absolute() for rel in integrity.read_file_index(ck) or {}}
        except integrity.FileIndexError:
            pass
    manifest = None
    if (folder / manifest_lib.MANIFEST).is_file():
        manifest = manifest_lib.read_manifest(folder)
        records = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
        problems += manifest_lib.file_problems(folder, manifest)
        files += len(records)
        for rel in records:
            covered.add((folder / rel).absolute())
            if (folder / rel).is_file():
                size += (folder / rel).stat().st_size
                hashed += (folder / rel).stat().st_size
        covered.add((folder / manifest_lib.MANIFEST).absolute())
    if not folders and manifest is None:
        raise InputError(f"{folder}: no file index (fourdnex_files.json) and no manifest.json: nothing to verify "
                         "(pass a bundle, converted folder or training run written by this project)")
    unrecorded = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                        if (p.is_file() or p.is_symlink()) and p.absolute() not in covered)
    return {"files": files, "bytes": size, "hashed": hashed, "problems": problems, "unrecorded": unrecorded}


def main(argv) -> int:
    if len(argv) != 1:
        raise UsageError("give exactly one folder: fourdnex verify BUNDLE")
    folder = Path(argv[0])
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (pass a bundle, converted folder or training run)")
    t0 = time.perf_counter()
    r = verify(folder, fast=_FAST.value)
    secs = time.perf_counter() - t0
    extra = (f"; {len(r['unrecorded'])} file(s) carry no digest ({', '.join(r['unrecorded'][:3])}"
             f"{', ...' if len(r['unrecorded']) > 3 else ''})") if r["unrecorded"] else ""
    if r["problems"]:
        shown = "; ".join(r["problems"][:3]) + (f"; {len(r['problems']) - 3} more" if len(r["problems"]) > 3 else "")
        print(f"verify: {folder}: DAMAGED: {len(r['problems'])} of {r['files']} files ({shown}){extra}; copy or "
              "convert the folder again")
        return 1
    print(f"verify: {folder}: OK: {r['files']} files, {r['bytes'] / 1e6:.1f} MB match their sha256 "
          f"({r['hashed'] / 1e6:.1f} MB hashed in {secs:.1f} s){extra}")
    return 0
