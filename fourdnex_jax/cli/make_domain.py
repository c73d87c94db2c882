"""Writes a bundle's ``domain.json``: the image statistics of the synthetic scenes it was trained on, so that a run
on an unlike input (a real photo) says so once (fourdnex_jax/pipelines/domain.py).

    fourdnex make-domain --checkpoint checkpoints/tiny [--train 200 --heldout 100]

Statistics from the first frames of synthetic ``train`` clips 0..train-1; the threshold from ``heldout`` clips
16..16+heldout-1 (clips 0..15 are the held-out evaluation scenes, the bundled example among them, and stay out).
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


def main(argv) -> int:
    del argv
    h, w = domain.SIZE
    n_train, n_held = _TRAIN.value, _HELDOUT.value

    def first_frames(split, start, n):
        return (synthetic.generate_clip(split, i, 1, h, w)[1]["images"][0] for i in range(start, start + n))

    dom = domain.fit_domain("synthetic", first_frames("train", 0, n_train),
                            first_frames("heldout", EVAL_SCENES, n_held),
                            source=f"fourdnex_jax.data.synthetic: first frames of train clips 0..{n_train - 1} "
                                   f"(statistics), heldout clips {EVAL_SCENES}..{EVAL_SCENES + n_held - 1} "
                                   f"(threshold), at {h}x{w}; fourdnex make-domain")
    path = domain.write_domain(_CHECKPOINT.value, dom)
    print(json.dumps({"out": str(path), "threshold": dom["threshold"],
                      "heldout_distance_max": dom["heldout_distance_max"]}))
    return 0
