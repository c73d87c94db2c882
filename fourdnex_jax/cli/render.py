"""Novel-view video of a registered scene: z-buffered point splatting in JAX, holes left visible.

    fourdnex render --scene DIR --out video.mp4 [--trajectory orbit|dolly|spiral|FILE.json] [--frames N]
        [--size HxW] [--splat 1|2|3] [--fps 8] [--hole-color R,G,B]

``DIR`` is an output of ``fourdnex generate`` or ``fourdnex register`` (``cameras.json`` + ``depth.npz``; colours
from ``pointmaps.npz`` next to it or ``DIR/images``), e.g. right after the demo: ``fourdnex render --scene out/demo
--trajectory spiral --out out/demo/novel_spiral.mp4``. Points are the de-projected depth of each frame placed by its
recovered camera (:func:`fourdnex_jax.geometry.scene.render_scene`). Prints the splatting frame rate (frames after
the first, compiled one).
"""

from __future__ import annotations

import json
import os

from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from fourdnex_jax.geometry.scene import render_scene
from fourdnex_jax.utils.errors import InputError

_SCENE = flags.DEFINE_string("scene", None, "Folder written by fourdnex generate / fourdnex register.",
                             required=True)
_TRAJECTORY = flags.DEFINE_string("trajectory", "orbit", "orbit, dolly, spiral, or a JSON file of cam_to_world "
                                  "matrices (or a nerfstudio transforms.json).")
_OUT = flags.DEFINE_string("out", None, "Output mp4.", required=True)
_POINTMAPS = flags.DEFINE_string("pointmaps", None, "pointmaps.npz to take the colours from (default: next to the "
                                 "scene).")
_FRAMES = flags.DEFINE_integer("frames", None, "Frames of a generated trajectory (default: T).")
_SIZE = flags.DEFINE_string("size", None, "HxW of the output (default: the input size; K is rescaled).")
_SPLAT = flags.DEFINE_integer("splat", 2, "Side in pixels of each point's square.")
_FPS = flags.DEFINE_integer("fps", 8, "Frame rate of the mp4.")
_HOLE = flags.DEFINE_string("hole-color", "0,0,0", "R,G,B of pixels no point reaches.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out video (default: kept, and the run "
                               "refused). The video is written atomically.")


def _ints(flag: str, text: str, sep: str, n: int) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(sep))
    except ValueError:
        values = ()
    if len(values) != n:
        raise InputError(f"--{flag} {text!r}: expected {n} integers separated by {sep!r}")
    return values


def main(argv) -> int:
    del argv
    if not os.path.isfile(os.path.join(_SCENE.value, "cameras.json")):
        raise InputError(f"--scene {_SCENE.value}: no cameras.json there; give the folder of a `fourdnex generate` "
                         "result (with geometry) or of `fourdnex register`")
    out = _OUT.value
    if os.path.isdir(out):
        raise InputError(f"--out {out}: is a folder; pass the path of the .mp4 file to write")
    if os.path.exists(out) and not _OVERWRITE.value:
        raise InputError(f"--out {out}: already exists; it is kept: pass --overwrite to replace it or choose "
                         "another path")
    size = _ints("size", _SIZE.value, "x", 2) if _SIZE.value else None
    report = render_scene(_SCENE.value, _OUT.value, trajectory=_TRAJECTORY.value, frames=_FRAMES.value, size=size,
                          splat=_SPLAT.value, fps=_FPS.value, hole_color=_ints("hole-color", _HOLE.value, ",", 3),
                          pointmaps=_POINTMAPS.value)
    print(json.dumps(report))
    return 0
