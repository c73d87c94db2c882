"""Raw annotations -> the ``clips6d`` TFDS dataset (array_record), resumable and atomic.

    fourdnex prepare-data --layout synthetic --input DIR --out DATA_DIR [--split train]
        [--frames 49 --height 64 --width 96] [--normalization reference|sequence] [--intrinsics full|reference]
        [--captions a.csv,b.csv] [--video-root DIR] [--rgb-root DIR] [--shard-size 64] [--workers 2]

Layouts: ``synthetic`` (``fourdnex synth-data`` output), ``monst3r`` (folders with pred_traj.txt, pred_intrinsics.txt,
frame_XXXX.npy, dynamic_mask_t.png), ``megasam`` (npz: images, depths, intrinsic, cam_c2w), ``dust3r`` (npz: pts3d,
poses). Bad examples are skipped and counted by reason; a summary line ends the run. Finished shards are not redone
on a rerun; the dataset folder appears only when complete. Prints the dataset folder to read with
``fourdnex_jax.data.tfds_builders.data_source(folder, split)``.
"""

from __future__ import annotations

import json
import logging
import time

from absl import flags

from fourdnex_jax.data import prepare
from fourdnex_jax.data.annotations import ClipConfig
from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.readers import LAYOUTS
from fourdnex_jax.utils.errors import InputError

_LAYOUT = flags.DEFINE_enum("layout", None, sorted(LAYOUTS), "Annotation layout of --input.", required=True)
_INPUT = flags.DEFINE_string("input", None, "Annotation root (local or gs://).", required=True)
_OUT = flags.DEFINE_string("out", None, "TFDS data dir to write the clips6d dataset into.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split name of the written examples.")
_CAPTIONS = flags.DEFINE_string("captions", "", "Comma-separated caption CSVs (number, caption).")
_VIDEO_ROOT = flags.DEFINE_string("video-root", None, "Folder of the raw videos the annotations refer to.")
_RGB_ROOT = flags.DEFINE_string("rgb-root", None, "Folder of the raw RGB frames the annotations refer to.")
_FRAMES = flags.DEFINE_integer("frames", 49, "Frames per clip.")
_HEIGHT = flags.DEFINE_integer("height", 64, "Clip height.")
_WIDTH = flags.DEFINE_integer("width", 96, "Clip width.")
_NORMALIZATION = flags.DEFINE_enum("normalization", "reference", ["reference", "sequence"], "XYZ normalisation "
                                   "(reference: 4DNeX's per-frame centres; sequence: one scale about camera 0).")
_INTRINSICS = flags.DEFINE_enum("intrinsics", "full", ["full", "reference"], "Back-projection intrinsics (reference: "
                                "the reference's fx-only, centred principal point).")
_MIN_VALID_FRACTION = flags.DEFINE_float("min-valid-fraction", 0.5, "Skip clips with fewer valid pixels.")
_NORMALIZATION_FRAMES = flags.DEFINE_integer("normalization-frames", 81, "Loaded frames the normalisation "
                                             "statistics cover (4DNeX: 81; MegaSaM clips: all frames).")
_SHARD_SIZE = flags.DEFINE_integer("shard-size", 64, "Examples per array_record shard.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Worker processes (0: this process).")
_LIMIT = flags.DEFINE_integer("limit", None, "Use only the first N annotations.")
_LOG_SKIPS = flags.DEFINE_bool("log-skips", False, "Log one line per skipped example.")


def main(argv) -> int:
    del argv
    logging.basicConfig(level=logging.WARNING if _LOG_SKIPS.value else logging.ERROR, format="%(message)s")
    t0 = time.perf_counter()
    captions = CaptionTable.from_csvs(*[c for c in _CAPTIONS.value.split(",") if c]) if _CAPTIONS.value else None
    items = prepare.discover(_LAYOUT.value, _INPUT.value, captions, video_root=_VIDEO_ROOT.value,
                             rgb_root=_RGB_ROOT.value,
                             limit=_LIMIT.value)
    if not items:
        raise InputError(f"--input {_INPUT.value}: no {_LAYOUT.value} annotations there; check the folder and "
                         "--layout")
    cfg = ClipConfig(num_frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value,
                     normalization=_NORMALIZATION.value,
                     intrinsics=_INTRINSICS.value, min_valid_fraction=_MIN_VALID_FRACTION.value,
                     normalization_frames=_NORMALIZATION_FRAMES.value)
    out = prepare.prepare(items, _OUT.value, cfg, split=_SPLIT.value, shard_size=_SHARD_SIZE.value,
                          num_workers=_WORKERS.value)
    dt = time.perf_counter() - t0
    print(json.dumps({k: out[k] for k in ("skipped", "ids")}, sort_keys=True))
    print(f"prepare-data: {out['summary']}; shards {out['written']} written, {out['done_before']} reused; "
          f"{len(items) / dt * 60:.0f} clips/min ({dt:.1f}s) -> {out['dataset_dir']} [{_SPLIT.value}]")
    return 0

