"""Generates synthetic 4D clips (the embedded default data) in the ``synthetic`` annotation layout.

    fourdnex synth-data --out DIR --num-clips N [--split train|heldout] [--frames 49 --height 64 --width 96]
        [--workers 2] [--start 0] [--dome-radius 40]

Writes ``DIR/{clip_id}.npz`` (``images``, ``depths``, ``intrinsics``, ``cam_c2w``, ``dynamic_mask``; written
atomically, existing clips are kept, so an interrupted run resumes) and ``DIR/captions.csv`` (``number, caption``,
every clip of the folder) and ``DIR/synth_data.json`` (the rendering settings: a folder never mixes sizes or sky
domes; another setting is refused). Clip i of a split is always the same scene (seed = split offset + i). Then
``fourdnex prepare-data --layout synthetic --input DIR`` turns them into the TFDS dataset.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import multiprocessing
import time
from pathlib import Path

from absl import flags

from fourdnex_jax.data import synthetic
from fourdnex_jax.media.io import atomic_save_npz, atomic_write
from fourdnex_jax.utils.progress import Progress

_OUT = flags.DEFINE_string("out", None, "Folder of the clips (created; existing clips are kept).", required=True)
_NUM_CLIPS = flags.DEFINE_integer("num-clips", None, "Clips to generate.", required=True)
_SPLIT = flags.DEFINE_enum("split", "train", sorted(synthetic.SPLIT_OFFSETS), "Split (its own seeds).")
_START = flags.DEFINE_integer("start", 0, "Index of the first clip.")
_FRAMES = flags.DEFINE_integer("frames", synthetic.DEFAULT_FRAMES, "Frames per clip.")
_HEIGHT = flags.DEFINE_integer("height", synthetic.DEFAULT_HEIGHT, "Frame height.")
_WIDTH = flags.DEFINE_integer("width", synthetic.DEFAULT_WIDTH, "Frame width.")
_DOME = flags.DEFINE_float("dome-radius", synthetic.DOME_RADIUS, "Sky dome radius (sets the normalisation scale; "
                           f"the tiny model's domain: {synthetic.TINY_DOME_RADIUS:g}).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Processes (0: in this process).")


def _one(out: str, split: str, index: int, frames: int, height: int, width: int, dome_radius: float
         ) -> tuple[str, str, bool]:
    scene = synthetic.make_scene(synthetic.split_seed(split, index))
    clip_id = f"synth_{split}_{index:06d}"
    path = Path(out) / f"{clip_id}.npz"
    if path.exists():
        return clip_id, scene.caption(), False
    r = synthetic.render(scene, frames, height, width, dome_radius)
    atomic_save_npz(path, **{k: r[k] for k in ("images", "depths", "intrinsics", "cam_c2w", "dynamic_mask")})
    return clip_id, scene.caption(), True


def check_settings(out: Path, settings: dict) -> None:
    """Records the rendering settings in ``out/synth_data.json``, or refuses settings other than the recorded ones
    (existing clips are kept, so a mixed folder would otherwise pass unnoticed)."""
    import json

    from fourdnex_jax.media.io import atomic_save_json
    from fourdnex_jax.utils.errors import InputError

    path = out / "synth_data.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable ({e}); remove it or choose another --out") from None
        if old != settings:
            diff = ", ".join(f"{k} {old.get(k)} (asked {v})" for k, v in settings.items() if old.get(k) != v)
            raise InputError(f"{out} holds clips rendered with other settings: {diff}; use another --out")
        return
    atomic_save_json(path, settings)


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


def main(argv) -> int:
    del argv
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    idx = range(_START.value, _START.value + _NUM_CLIPS.value)
    bar = Progress(len(idx), f"synth {_SPLIT.value}")
    rows, new = {}, 0
    t0 = time.perf_counter()
    job = (str(out), _SPLIT.value)
    dims = (_FRAMES.value, _HEIGHT.value, _WIDTH.value, _DOME.value)
    check_settings(out, dict(frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value,
                             dome_radius=_DOME.value))
    if _WORKERS.value > 0:
        with cf.ProcessPoolExecutor(_WORKERS.value, mp_context=multiprocessing.get_context("spawn")) as pool:
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
    print(f"synth-data: {len(rows)} clips ({new} new, {len(rows) - new} already there) of split {_SPLIT.value} "
          f"({_FRAMES.value}x{_HEIGHT.value}x{_WIDTH.value}) in {dt:.1f}s"
          + (f" = {new / dt * 60:.0f} new clips/min" if new else "") + f" -> {out}")
    return 0

