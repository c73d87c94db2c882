"""Novel-view video of a registered scene: z-buffered point splatting in JAX, holes left visible.

    python tools/render.py --scene DIR --trajectory orbit|dolly|spiral|FILE.json --out video.mp4
        [--frames N] [--size HxW] [--splat 1|2|3] [--fps 8] [--hole-color R,G,B]

``DIR`` is an output of tools/register.py (``cameras.json`` + ``depth.npz``; colours from ``pointmaps.npz`` next to
it or ``DIR/images``). Points are the de-projected depth of each frame placed by its recovered camera. Prints the
splatting frame rate (frames after the first, compiled one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from fourdnex_jax.data.geometry import backproject, transform_points  # noqa: E402
from fourdnex_jax.geometry import render, trajectories  # noqa: E402


def load_scene(scene_dir: Path, pointmaps: str | None = None):
    cams = json.loads((scene_dir / "cameras.json").read_text())
    with np.load(scene_dir / "depth.npz") as z:
        depth, valid = z["depth"], z["valid"]
    K = np.asarray(cams["K"])
    c2w = np.asarray(cams["cam_to_world"])
    pts = transform_points(c2w, backproject(depth, K))
    rgb = None
    for cand in ([Path(pointmaps)] if pointmaps else []) + [scene_dir / "pointmaps.npz",
                                                             scene_dir.parent / "pointmaps.npz"]:
        if cand.exists():
            with np.load(cand) as z:
                if "rgb" in z.files:
                    rgb = z["rgb"]
                    break
    if rgb is None and (scene_dir / "images").is_dir():
        from PIL import Image

        rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted((scene_dir / "images").glob("*.png"))])
    if rgb is None:
        rgb = np.full(depth.shape + (3,), 200, np.uint8)
    return pts.astype(np.float32), rgb, valid, K, depth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", required=True)
    ap.add_argument("--trajectory", default="orbit")
    ap.add_argument("--out", required=True)
    ap.add_argument("--pointmaps", default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--size", default=None, help="HxW of the output (default: the input size; K is rescaled)")
    ap.add_argument("--splat", type=int, default=2)
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--hole-color", default="0,0,0")
    a = ap.parse_args(argv)
    pts, rgb, valid, K, depth = load_scene(Path(a.scene), a.pointmaps)
    t, h, w = depth.shape
    oh, ow = (int(s) for s in a.size.split("x")) if a.size else (h, w)
    Ko = K.copy()
    Ko[0] *= ow / w
    Ko[1] *= oh / h
    Ko[0, 2] = (K[0, 2] + 0.5) * ow / w - 0.5
    Ko[1, 2] = (K[1, 2] + 0.5) * oh / h - 0.5
    n = a.frames or t
    if a.trajectory.endswith(".json"):
        c2w, kf = trajectories.load_trajectory(a.trajectory)
        Ko = kf if kf is not None else Ko
    else:
        pivot = float(np.median(depth[0][valid[0]])) if valid[0].any() else 1.0
        c2w = trajectories.make_trajectory(a.trajectory, n, pivot)
    res = render.render_video(pts, rgb, valid, c2w, Ko, oh, ow, splat=a.splat,
                              hole_color=tuple(int(x) for x in a.hole_color.split(",")))
    render.write_mp4(a.out, res["frames"], a.fps)
    print(json.dumps({"out": a.out, "frames": len(c2w), "size": [oh, ow], "fps": round(res["fps"], 2),
                      "first_frame_s": round(res["first_frame_s"], 3), "hole_fraction": round(res["hole_fraction"], 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
