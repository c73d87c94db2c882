"""Cameras, depth, exports and a novel-view video from a ``pointmaps.npz`` (closed form, CPU).

    python tools/register.py --pointmaps FILE.npz --out DIR [--normalization sequence|reference|metric]
        [--trajectory orbit|dolly|spiral] [--no-video] [--method lmeds|ransac] [--per-frame-intrinsics]
        [--anchor none|icp] [--drop-dynamic] [--min-confidence C] [--ply-stride S]

``--normalization``: how the XYZ were normalised -- ``sequence`` (ours: one scale about camera 0), ``reference``
(4DNeX: each frame centred on its own bounding box; K and the frame-0 offset come from a rotation-constrained DLT,
camera centres of later frames stay off by the unstored per-frame centres unless ``--anchor icp``), ``metric``
(the file stores ``centers`` and ``scale``: de-normalised first, exact). Default: ``summary.json`` next to the file,
else ``sequence``. Writes cameras.json, transforms.json, depth.npz, ply/, scene.glb, viewer.html, novel_*.mp4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from fourdnex_jax.geometry.scene import postprocess_scene  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pointmaps", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--normalization", choices=["sequence", "reference", "metric"], default=None)
    ap.add_argument("--trajectory", default="orbit", choices=["orbit", "dolly", "spiral"])
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--method", default="lmeds", choices=["lmeds", "ransac"])
    ap.add_argument("--per-frame-intrinsics", action="store_true")
    ap.add_argument("--anchor", default="auto", choices=["auto", "none", "icp"])
    ap.add_argument("--gn-steps", type=int, default=3)
    ap.add_argument("--drop-dynamic", action="store_true")
    ap.add_argument("--min-confidence", type=float, default=0.0)
    ap.add_argument("--ply-stride", type=int, default=1)
    ap.add_argument("--fps", type=int, default=8)
    a = ap.parse_args(argv)
    summary = postprocess_scene(a.pointmaps, a.out, normalization=a.normalization, trajectory=a.trajectory,
                                video=not a.no_video, fps=a.fps, ply_stride=a.ply_stride,
                                drop_dynamic=a.drop_dynamic, min_confidence=a.min_confidence, method=a.method,
                                per_frame_intrinsics=a.per_frame_intrinsics, anchor=a.anchor, gn_steps=a.gn_steps)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
