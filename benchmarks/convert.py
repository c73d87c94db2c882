"""Conversion benchmark (a script, not a test): a synthetic diffusers-layout Wan transformer of several GB (random
bf16, several shards) is written to a temporary folder, converted with ``fourdnex convert`` in a
subprocess, and compared with a raw read of the same files (``cat > /dev/null``) and a raw copy (``cp``: read +
write, the practical bound of any converter that writes what it reads). Peak RSS of the converter subprocess
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``) is compared with the largest shard.

Page cache: the files are freshly written, so they are cached unless ``--uncached`` is given; then the benchmark
evicts *its own* files (``posix_fadvise(DONTNEED)`` after ``fsync``) before each timed pass, nothing else.

    .venv/bin/python -m benchmarks.convert --dim 2048 --layers 28 --shard-gb 1 [--uncached] [--keep]

Targets: conversion >= 0.5x raw read speed; peak RSS <= 1.5 x largest shard + 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _config(dim: int, layers: int) -> dict:
    return {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": dim // 128,
            "attention_head_dim": 128, "in_channels": 36, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
            "ffn_dim": 4 * dim, "num_layers": layers, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6, "image_dim": 1280, "added_kv_proj_dim": dim, "rope_max_seq_len": 1024,
            "pos_embed_seq_len": None}


def write_checkpoint(directory: Path, dim: int, layers: int, shard_bytes: int) -> list[Path]:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from fourdnex_jax.models import params
    from fourdnex_jax.models.transformer import FROZEN, WanTransformerConfig
    from fourdnex_jax.weights.registry import SPECS
    from fourdnex_jax.weights.safetensors import ShardedSafetensorsWriter

    hf = _config(dim, layers)
    cfg = WanTransformerConfig.from_diffusers_config(hf, modality_layout="none", domain_embeddings=False)
    table = SPECS["transformer"].mapping(cfg)
    targets = params.targets_of(SPECS["transformer"].abstract(cfg, "bfloat16"), FROZEN)
    entries = []
    import einops
    for rule in table.rules:
        shape = targets[rule.jax].shape[1:] if rule.stacked else targets[rule.jax].shape
        tshape = einops.rearrange(np.empty(shape, np.bool_), rule.inverse_layout()).shape if rule.layout else shape
        entries += [(k, tuple(tshape), np.dtype(ml_dtypes.bfloat16)) for k in table.torch_keys(rule)]
    entries.sort(key=lambda e: (int(e[0].split(".")[1]) if e[0].startswith("blocks.") else -1, e[0]))
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(hf, allow_nan=False))
    writer = ShardedSafetensorsWriter(directory, "diffusion_pytorch_model", entries, max_shard_bytes=shard_bytes)
    rng = np.random.default_rng(0)
    for key, shape, _ in entries:
        bits = rng.integers(0x3000, 0x4000, size=shape, dtype=np.uint16)  # finite bf16 values ~1e-9..2
        writer.write(key, bits.view(ml_dtypes.bfloat16))
    return [p for p in writer.close() if p.suffix == ".safetensors"]


def evict(paths) -> None:
    for p in paths:
        for f in ([p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(cmd, **kw) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(f"{cmd} failed:\n{res.stderr[-3000:]}")
    return dt, res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--shard-gb", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder (default: system tmp)")
    ap.add_argument("--uncached", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fourdnex_convert_bench_", dir=args.dir))
    try:
        src = tmp / "src"
        t0 = time.perf_counter()
        shards = write_checkpoint(src / "transformer", args.dim, args.layers, int(args.shard_gb * 2**30))
        total = sum(p.stat().st_size for p in shards)
        largest = max(p.stat().st_size for p in shards)
        print(f"wrote {len(shards)} shards, {total / 1e9:.2f} GB (largest {largest / 1e9:.2f} GB) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if args.uncached:
            evict([src])
        t_cat, _ = timed(["bash", "-c", "cat " + " ".join(str(p) for p in shards) + " > /dev/null"])
        if args.uncached:
            evict([src])
        t_cp, _ = timed(["cp", "-r", str(src), str(tmp / "copy")])
        evict([tmp / "copy"]) if args.uncached else None
        t_sync = time.perf_counter()
        os.sync()
        t_cp += time.perf_counter() - t_sync
        shutil.rmtree(tmp / "copy")
        if args.uncached:
            evict([src])
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "fourdnex_jax", "convert", "--src", str(src), "--out",
               str(tmp / "out"), "--noprogress"] + sum((["--skip", s] for s in
                                                       ("vae", "text_encoder", "image_encoder", "tokenizer",
                                                        "scheduler", "image_processor")), [])
        t_conv, res = timed(cmd, env=env)
        t_sync = time.perf_counter()
        os.sync()
        t_conv_synced = t_conv + time.perf_counter() - t_sync
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
        manifest = json.loads((tmp / "out" / "manifest.json").read_text())
        out_bytes = sum(f.stat().st_size for f in (tmp / "out" / "transformer").rglob("*") if f.is_file())
        report = {
            "cached": not args.uncached, "dim": args.dim, "layers": args.layers, "shards": len(shards),
            "source_gb": round(total / 1e9, 3), "largest_shard_gb": round(largest / 1e9, 3),
            "output_gb": round(out_bytes / 1e9, 3),
            "raw_read_s": round(t_cat, 2), "raw_read_gbps": round(total / 1e9 / t_cat, 3),
            "raw_copy_s": round(t_cp, 2), "raw_copy_gbps": round(total / 1e9 / t_cp, 3),
            "convert_s": round(t_conv, 2), "convert_gbps": round(total / 1e9 / t_conv, 3),
            "convert_plus_sync_s": round(t_conv_synced, 2),
            "convert_vs_raw_read": round(t_cat / t_conv, 3), "convert_vs_raw_copy": round(t_cp / t_conv, 3),
            "peak_rss_gb": round(rss / 1e9, 3), "rss_limit_gb": round((1.5 * largest + 2**30) / 1e9, 3),
            "rss_ok": rss <= 1.5 * largest + 2**30, "speed_ok": t_cat / t_conv >= 0.5,
            "source_passes": manifest["models"]["transformer"]["source_passes"],
            "converter_summary": res.stderr.strip().splitlines()[-1],
        }
        print(json.dumps(report, indent=2, allow_nan=False))
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
