"""Raw annotations -> the ``clips6d`` TFDS dataset (array_record), resumable and atomic.

    python tools/prepare_data.py --layout synthetic --input DIR --out DATA_DIR [--split train]
        [--frames 49 --height 64 --width 96] [--normalization reference|sequence] [--intrinsics full|reference]
        [--captions a.csv,b.csv] [--video-root DIR] [--rgb-root DIR] [--shard-size 64] [--workers 2]

Layouts: ``synthetic`` (tools/synth_data.py output), ``monst3r`` (folders with pred_traj.txt, pred_intrinsics.txt,
frame_XXXX.npy, dynamic_mask_t.png), ``megasam`` (npz: images, depths, intrinsic, cam_c2w), ``dust3r`` (npz: pts3d,
poses). Bad examples are skipped and counted by reason; a summary line ends the run. Finished shards are not redone
on a rerun; the dataset folder appears only when complete. Prints the dataset folder to read with
``fourdnex_jax.data.tfds_builders.data_source(folder, split)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from fourdnex_jax.data import prepare
from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.annotations import ClipConfig
from fourdnex_jax.data.readers import LAYOUTS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    ap.add_argument("--input", required=True, help="annotation root (local or gs://)")
    ap.add_argument("--out", required=True, help="TFDS data dir")
    ap.add_argument("--split", default="train")
    ap.add_argument("--captions", default="", help="comma-separated caption CSVs (number, caption)")
    ap.add_argument("--video-root", default=None)
    ap.add_argument("--rgb-root", default=None)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--normalization", default="reference", choices=["reference", "sequence"])
    ap.add_argument("--intrinsics", default="full", choices=["full", "reference"])
    ap.add_argument("--min-valid-fraction", type=float, default=0.5)
    ap.add_argument("--normalization-frames", type=int, default=81,
                    help="loaded frames the normalisation statistics cover (4DNeX: 81; MegaSaM clips: all frames)")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0, help="worker processes (0: this process)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N annotations")
    ap.add_argument("--log-skips", action="store_true", help="log one line per skipped example")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.log_skips else logging.ERROR, format="%(message)s")
    t0 = time.perf_counter()
    captions = CaptionTable.from_csvs(*[c for c in args.captions.split(",") if c]) if args.captions else None
    items = prepare.discover(args.layout, args.input, captions, video_root=args.video_root, rgb_root=args.rgb_root,
                             limit=args.limit)
    if not items:
        print(f"prepare_data: no {args.layout} annotations under {args.input}", file=sys.stderr)
        return 1
    cfg = ClipConfig(num_frames=args.frames, height=args.height, width=args.width, normalization=args.normalization,
                     intrinsics=args.intrinsics, min_valid_fraction=args.min_valid_fraction,
                     normalization_frames=args.normalization_frames)
    out = prepare.prepare(items, args.out, cfg, split=args.split, shard_size=args.shard_size,
                          num_workers=args.workers)
    dt = time.perf_counter() - t0
    print(json.dumps({k: out[k] for k in ("skipped", "ids")}, sort_keys=True))
    print(f"prepare_data: {out['summary']}; shards {out['written']} written, {out['done_before']} reused; "
          f"{len(items) / dt * 60:.0f} clips/min ({dt:.1f}s) -> {out['dataset_dir']} [{args.split}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
