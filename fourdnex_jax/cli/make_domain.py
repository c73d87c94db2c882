"""Writes a bundle's ``domain.json``: the image statistics of the synthetic scenes it was trained on, so that a run
on an unlike input (a real photo) says so once (fourdnex_jax/pipelines/domain.py).

    fourdnex make-domain --checkpoint checkpoints/tiny [--train 200 --heldout 100] [--height H --width W
        --dome-radius R]

Statistics from the first frames of synthetic ``train`` clips 0..train-1; the threshold from ``heldout`` clips
16..16+heldout-1 (clips 0..15 are the held-out evaluation scenes, the bundled example among them, and stay out),
rendered as the bundle's training clips were (``--height``, ``--width``, ``--dome-radius``: synth-data's flags;
the defaults are the shipped tiny model's, ``synthetic.TINY_*``).
"""

from __future__ import annotations

import json
import os

from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from fourdnex_jax.data import synthetic
from fourdnex_jax.pipelines import domain

EVAL_SCENES = 16

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Bundle folder to write domain.json into.", required=True)
_TRAIN = flags.DEFINE_integer("train", 200, "Synthetic train clips to measure.")
_HELDOUT = flags.DEFINE_integer("heldout", 100, "Synthetic held-out clips for the threshold.")
_HEIGHT = flags.DEFINE_integer("height", synthetic.TINY_HEIGHT, "Frame height the training clips were rendered at.")
_WIDTH = flags.DEFINE_integer("width", synthetic.TINY_WIDTH, "Frame width the training clips were rendered at.")
_DOME = flags.DEFINE_float("dome-radius", synthetic.TINY_DOME_RADIUS, "Sky dome radius of the training clips.")


def main(argv) -> int:
    del argv
    h, w, dome = _HEIGHT.value, _WIDTH.value, _DOME.value
    n_train, n_held = _TRAIN.value, _HELDOUT.value

    def first_frames(split, start, n):
        return (synthetic.generate_clip(split, i, 1, h, w, dome)[1]["images"][0] for i in range(start, start + n))

    dom = domain.fit_domain("synthetic", first_frames("train", 0, n_train),
                            first_frames("heldout", EVAL_SCENES, n_held),
                            source=f"fourdnex_jax.data.synthetic: first frames of train clips 0..{n_train - 1} "
                                   f"(statistics), heldout clips {EVAL_SCENES}..{EVAL_SCENES + n_held - 1} "
                                   f"(threshold), rendered at {h}x{w} with sky dome radius {dome:g}; "
                                   "fourdnex make-domain")
    path = domain.write_domain(_CHECKPOINT.value, dom)
    print(json.dumps({"out": str(path), "threshold": dom["threshold"],
                      "heldout_distance_max": dom["heldout_distance_max"]}))
    return 0
