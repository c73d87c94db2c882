"""Generates synthetic 4D clips (the embedded default data) in the ``synthetic`` annotation layout.

    python tools/synth_data.py --out DIR --num-clips N [--split train|heldout] [--frames 49 --height 64
        --width 96] [--workers 2] [--start 0]

Writes ``DIR/{clip_id}.npz`` (``images``, ``depths``, ``intrinsics``, ``cam_c2w``, ``dynamic_mask``; written
atomically, existing clips are kept, so an interrupted run resumes) and ``DIR/captions.csv`` (``number, caption``,
every clip of the folder). Clip i of a split is always the same scene (seed = split offset + i). Then
``tools/prepare_data.py --layout synthetic --input DIR`` turns them into the TFDS dataset.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import io
import multiprocessing
import sys
import time
from pathlib import Path

from fourdnex_jax.data import synthetic
from fourdnex_jax.media.io import atomic_save_npz, atomic_write
from fourdnex_jax.utils.progress import Progress


def _one(out: str, split: str, index: int, frames: int, height: int, width: int) -> tuple[str, str, bool]:
    scene = synthetic.make_scene(synthetic.split_seed(split, index))
    clip_id = f"synth_{split}_{index:06d}"
    path = Path(out) / f"{clip_id}.npz"
    if path.exists():
        return clip_id, scene.caption(), False
    r = synthetic.render(scene, frames, height, width)
    atomic_save_npz(path, **{k: r[k] for k in ("images", "depths", "intrinsics", "cam_c2w", "dynamic_mask")})
    return clip_id, scene.caption(), True


def write_captions(out: Path, rows: dict[str, str]) -> None:
    old = {}
    if (out / "captions.csv").exists():
        from fourdnex_jax.data.captions import read_caption_csv
        old = read_caption_csv(out / "captions.csv")
    old.update(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "caption"])
    for k in sorted(old):
        w.writerow([k, old[k]])
    atomic_write(out / "captions.csv", lambda f: f.write(buf.getvalue().encode()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-clips", type=int, required=True)
    ap.add_argument("--split", default="train", choices=sorted(synthetic.SPLIT_OFFSETS))
    ap.add_argument("--start", type=int, default=0, help="index of the first clip")
    ap.add_argument("--frames", type=int, default=synthetic.DEFAULT_FRAMES)
    ap.add_argument("--height", type=int, default=synthetic.DEFAULT_HEIGHT)
    ap.add_argument("--width", type=int, default=synthetic.DEFAULT_WIDTH)
    ap.add_argument("--workers", type=int, default=2, help="processes (0: in this process)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    idx = range(args.start, args.start + args.num_clips)
    bar = Progress(len(idx), f"synth {args.split}")
    rows, new = {}, 0
    t0 = time.perf_counter()
    job = (str(out), args.split)
    dims = (args.frames, args.height, args.width)
    if args.workers > 0:
        with cf.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = [pool.submit(_one, *job, i, *dims) for i in idx]
            for f in cf.as_completed(futs):
                cid, cap, made = f.result()
                rows[cid], new = cap, new + made
                bar.update()
    else:
        for i in idx:
            cid, cap, made = _one(*job, i, *dims)
            rows[cid], new = cap, new + made
            bar.update()
    write_captions(out, rows)
    dt = time.perf_counter() - t0
    print(f"synth_data: {len(rows)} clips ({new} new, {len(rows) - new} already there) of split {args.split} "
          f"({args.frames}x{args.height}x{args.width}) in {dt:.1f}s = {len(rows) / dt * 60:.0f} clips/min -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
