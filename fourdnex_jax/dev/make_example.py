"""Writes the bundled example (``examples/``): frame 0 of one synthetic clip, its caption and its ground truth.

    python -m fourdnex_jax.dev make-example --out examples [--split heldout --index 0] [--frames 9 --height 32
        --width 48 --dome-radius 12]

Writes ``synth_{split}_{index:06d}.png`` (frame 0, the input of ``bash tools/run.sh demo``), ``.txt`` (the caption)
and ``_gt.npz``: ``rgb`` uint8 (T, H, W, 3), ``xyz`` float16 (T, H, W, 3) in the reference normalisation (what the
model outputs; the sky kept), ``valid`` (T, H, W), ``depth`` metric z-depth (T, H, W), ``c2w`` (T, 4, 4) relative
to camera 0 in metric units, ``intrinsics`` (T, 3, 3), ``centers`` (T, 3), ``scale`` (the normalisation's) and
``dome_radius`` (the rendering's). The defaults are the tiny model's domain (docs/tiny_model.md); clip i of a split
is always the same scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import flags

from fourdnex_jax.data import synthetic
from fourdnex_jax.geometry import se3
from fourdnex_jax.media.io import atomic_save_npz, atomic_write_bytes, write_png

_OUT = flags.DEFINE_string("out", "examples", "Folder to write the three files into.")
_SPLIT = flags.DEFINE_enum("split", "heldout", sorted(synthetic.SPLIT_OFFSETS), "Split of the clip.")
_INDEX = flags.DEFINE_integer("index", 0, "Clip index in the split.")
_FRAMES = flags.DEFINE_integer("frames", 9, "Frames of the ground truth.")
_HEIGHT = flags.DEFINE_integer("height", synthetic.TINY_HEIGHT, "Frame height.")
_WIDTH = flags.DEFINE_integer("width", synthetic.TINY_WIDTH, "Frame width.")
_DOME = flags.DEFINE_float("dome-radius", synthetic.TINY_DOME_RADIUS, "Sky dome radius.")


def main(argv) -> int:
    del argv
    split, index = _SPLIT.value, _INDEX.value
    size = dict(frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value, dome_radius=_DOME.value)
    clip_id, rendered, caption = synthetic.generate_clip(split, index, _FRAMES.value, _HEIGHT.value, _WIDTH.value,
                                                         _DOME.value)
    inputs, truth = synthetic.pointmap_sequence(index, split, normalization="reference", sky_valid=True, **size)
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    write_png(out / f"{clip_id}.png", rendered["images"][0])
    atomic_write_bytes(out / f"{clip_id}.txt", (caption + "\n").encode())
    atomic_save_npz(out / f"{clip_id}_gt.npz", rgb=inputs["rgb"], xyz=inputs["xyz"].astype(np.float16),
                    valid=inputs["valid"], depth=truth["depth"].astype(np.float32),
                    c2w=se3.relative_to_first(rendered["cam_c2w"]).astype(np.float32),
                    intrinsics=rendered["intrinsics"].astype(np.float32),
                    centers=truth["centers"].astype(np.float32), scale=np.float32(truth["scale"]),
                    dome_radius=np.float32(_DOME.value))
    print(f"make-example: {out / clip_id}.png, .txt, _gt.npz ({_FRAMES.value} frames, {_HEIGHT.value}x{_WIDTH.value},"
          f" sky dome radius {_DOME.value:g})")
    return 0
