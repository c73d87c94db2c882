"""Data-layer throughput: synthetic generation, preparation (clips/min) and the grain loader (batches/s, reader
threads vs worker processes).

    python -m benchmarks.data --work DIR [--num-clips 64] [--frames 49 --height 64 --width 96]
        [--batch-size 8] [--batches 60] [--workers 2]

Prints one line per measurement and a JSON summary (also written to WORK/benchmark.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loader_rate(folder: Path, batch_size: int, batches: int, num_threads: int, num_workers: int) -> float:
    from fourdnex_jax.data import loader

    ds = loader.make_dataset(loader.data_source(folder, "train"), batch_size=batch_size, seed=0,
                             shard_index=0, shard_count=1)
    it = loader.make_iterator(ds, num_threads=num_threads, num_workers=num_workers)
    for _ in range(5):  # warm-up: threads/workers started, buffers filled
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        b["rgb"].sum()  # touch the data
    rate = batches / (time.perf_counter() - t0)
    if hasattr(it, "close"):
        it.close()
    return rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--num-clips", type=int, default=64)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    dims = ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    res: dict = {"config": vars(args)}

    for workers in (0, args.workers):
        raw = work / f"raw_w{workers}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fourdnex_jax", "synth-data", "--out", str(raw), "--num-clips",
                        str(args.num_clips), "--workers", str(workers), *dims], check=True, capture_output=True)
        res[f"synth_clips_per_min_workers{workers}"] = args.num_clips / (time.perf_counter() - t0) * 60
        print(f"synthetic generation, {workers} worker processes: "
              f"{res[f'synth_clips_per_min_workers{workers}']:.0f} clips/min (incl. interpreter start-up)")

    from fourdnex_jax.data import prepare
    from fourdnex_jax.data.annotations import ClipConfig

    cfg = ClipConfig(num_frames=args.frames, height=args.height, width=args.width)
    items = prepare.discover("synthetic", work / "raw_w0")
    folder = None
    for workers in (0, args.workers):
        t0 = time.perf_counter()
        out = prepare.prepare(items, work / f"tfds_w{workers}", cfg, shard_size=8, num_workers=workers,
                              progress=False)
        res[f"prepare_clips_per_min_workers{workers}"] = len(items) / (time.perf_counter() - t0) * 60
        print(f"preparation (read, back-project, normalise, stage, TFDS pack), {workers} worker processes: "
              f"{res[f'prepare_clips_per_min_workers{workers}']:.0f} clips/min ({out['summary']})")
        folder = Path(out["dataset_dir"])

    for threads, workers in ((1, 0), (2, 0), (2, args.workers)):
        rate = _loader_rate(folder, args.batch_size, args.batches, threads, workers)
        key = f"loader_batches_per_s_threads{threads}_workers{workers}"
        res[key] = rate
        mb = args.batch_size * args.frames * args.height * args.width * 6 * 4 / 2 ** 20
        print(f"loader, {threads} reader threads, {workers} worker processes: {rate:.1f} batches/s "
              f"({rate * mb:.0f} MiB/s of float32 RGB+XYZ, batch {args.batch_size})")
    from fourdnex_jax.media.io import atomic_save_json

    atomic_save_json(work / "benchmark.json", res)
    print(json.dumps(res, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
