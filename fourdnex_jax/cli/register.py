"""Cameras, depth, exports and a novel-view video from a ``pointmaps.npz`` (closed form, CPU).

    fourdnex register --pointmaps FILE.npz --out DIR --normalization sequence|reference|metric
        [--trajectory orbit|dolly|spiral] [--novideo] [--method lmeds|ransac] [--per-frame-intrinsics]
        [--anchor none|icp] [--drop-dynamic] [--min-confidence C] [--ply-stride S]

``--normalization``: how the XYZ were normalised -- ``sequence`` (ours: one scale about camera 0), ``reference``
(4DNeX: each frame centred on its own bounding box; K and the frame-0 offset come from a rotation-constrained DLT,
camera centres of later frames stay off by the unstored per-frame centres unless ``--anchor icp``), ``metric``
(the file stores ``centers`` and ``scale``: de-normalised first, exact). A result of ``fourdnex generate`` names its
normalisation in ``summary.json: xyz_normalization`` (and already holds these outputs). Writes cameras.json,
transforms.json, depth.npz, ply/, scene.glb, viewer.html, novel_*.mp4
(:func:`fourdnex_jax.geometry.scene.postprocess_scene`) into ``--out``, published as a unit (a previous result is
kept unless ``--overwrite``; a killed run leaves none), prints the summary as JSON on stdout and the one line
saying whether transforms.json was written (only with a registered camera) and the one line saying how many frames'
cameras were recovered on stderr (rejected ones, and why, are in cameras.json).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # closed-form host work

from fourdnex_jax.geometry.register import NORMALIZATIONS
from fourdnex_jax.geometry.scene import load_pointmaps, postprocess_scene
from fourdnex_jax.geometry.trajectories import KINDS
from fourdnex_jax.media.publish import check_output_dir, publish_dir

_POINTMAPS = flags.DEFINE_string("pointmaps", None, "pointmaps.npz with xyz (T, H, W, 3) [, valid, rgb, centers, "
                                 "scale].", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_NORMALIZATION = flags.DEFINE_enum("normalization", None, list(NORMALIZATIONS), "How the XYZ were normalised (see "
                                   "above).", required=True)
_TRAJECTORY = flags.DEFINE_enum("trajectory", "orbit", list(KINDS), "Camera path of the novel-view video.")
_VIDEO = flags.DEFINE_bool("video", True, "Render the novel-view video (--novideo skips it).")
_METHOD = flags.DEFINE_enum("method", "lmeds", ["lmeds", "ransac"], "Robust scoring of the pose hypotheses.")
_PER_FRAME_K = flags.DEFINE_bool("per-frame-intrinsics", False, "Estimate K per frame (full DLT) instead of once "
                                 "from frame 0.")
_ANCHOR = flags.DEFINE_enum("anchor", "auto", ["auto", "none", "icp"], "Per-frame offsets of reference maps: "
                            "translation-only ICP against the previous frame, or none (auto = none).")
_GN_STEPS = flags.DEFINE_integer("gn-steps", 3, "Robust Gauss-Newton steps on all pairs per pose.")
_DROP_DYNAMIC = flags.DEFINE_bool("drop-dynamic", False, "Leave inconsistent / moving points out of the exports.")
_MIN_CONFIDENCE = flags.DEFINE_float("min-confidence", 0.0, "Export only points with at least this confidence "
                                     "(0..1).")
_PLY_STRIDE = flags.DEFINE_integer("ply-stride", 1, "Pixel stride of the PLY exports.")
_FPS = flags.DEFINE_integer("fps", 8, "Frame rate of the video and the GLB animation.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a previous result in --out (default: kept, and the run "
                               "refused). The folder is published as a unit: a killed run leaves none.")


def main(argv) -> int:
    del argv
    check_output_dir(_OUT.value, _OVERWRITE.value, inputs=[_POINTMAPS.value])
    ignored: list[str] = []
    arrays = load_pointmaps(_POINTMAPS.value, ignored)  # every input checked before any work
    if ignored:
        print(f"fourdnex register: note: {_POINTMAPS.value}: arrays {ignored} ignored (used: "
              f"{sorted(arrays)})", file=sys.stderr)
    with publish_dir(_OUT.value, _OVERWRITE.value, writer="register", inputs=[_POINTMAPS.value]) as tmp:
        summary = postprocess_scene(arrays["xyz"], arrays.get("valid"), arrays.get("rgb"), _NORMALIZATION.value,
                                    tmp, centers=arrays.get("centers"), scale=arrays.get("scale"),
                                    trajectory=_TRAJECTORY.value, video=_VIDEO.value, fps=_FPS.value,
                                    ply_stride=_PLY_STRIDE.value, drop_dynamic=_DROP_DYNAMIC.value,
                                    min_confidence=_MIN_CONFIDENCE.value, method=_METHOD.value,
                                    per_frame_intrinsics=_PER_FRAME_K.value, anchor=_ANCHOR.value,
                                    gn_steps=_GN_STEPS.value)
    print(json.dumps(summary, indent=2, allow_nan=False))
    # whether transforms.json was written, then the cameras' verdict (as generate prints them); stdout stays JSON
    print(summary["transforms"], file=sys.stderr)
    print(summary["message"], file=sys.stderr)
    return 0
