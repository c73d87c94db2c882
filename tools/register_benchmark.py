"""Closed-form registration vs the 4DNeX reference fit (Adam, 1500 iterations, JAX re-implementation).

    python tools/register_benchmark.py [--num 3] [--frames 25] [--size 60x90] [--noise 0.005]
        [--dynamic-offset 0.1] [--outliers 0.01] [--iters 1500] [--normalization sequence] [--out bench.json]

Synthetic held-out scenes with exact ground truth, corrupted like a generative model's output (Gaussian noise
``noise x depth`` on every point, each moving object displaced per frame by ``dynamic_offset x`` its depth off
its pixel rays, a fraction of gross outliers), normalised into [-1, 1]; both methods see the same normalised XYZ
(the reference in its own input convention, (xyz + 1) / 2 with 0.5 subtracted from x and y). Errors after Sim(3)
Umeyama alignment of the camera positions: mean/max rotation error (deg), ATE and RPE-trans relative to the true
path length, RPE-rot (deg), relative focal error |f - f*| / f*. Times are wall-clock on this machine (the Adam
time includes its JIT compilation, about 1-2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from fourdnex_jax.geometry import adam_reference, metrics, register, synthetic  # noqa: E402
from fourdnex_jax.geometry.cameras import rotation_angle_deg  # noqa: E402


def errors(c2w, K, tr) -> dict:
    gt = tr["c2w"]
    rel = np.linalg.inv(c2w[0])[None] @ c2w
    al = metrics.align_trajectory(rel, gt)
    rot = rotation_angle_deg(np.swapaxes(al[:, :3, :3], 1, 2) @ gt[:, :3, :3])
    pm = metrics.pose_metrics(rel, gt)
    length = float(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=-1).sum()) or 1.0
    f_true = tr["K"][0, 0]
    return {"rot_mean_deg": float(rot.mean()), "rot_max_deg": float(rot.max()), "ate_rel": pm["ate"] / length,
            "rpe_trans_rel": pm["rpe_trans"] / length, "rpe_rot_deg": pm["rpe_rot_deg"],
            "focal_rel_err": float(max(abs(K[0, 0] - f_true), abs(K[1, 1] - f_true)) / f_true)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num", type=int, default=3)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--size", default="60x90")
    ap.add_argument("--noise", type=float, default=0.005)
    ap.add_argument("--dynamic-offset", type=float, default=0.1)
    ap.add_argument("--outliers", type=float, default=0.01)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--normalization", default="sequence", choices=["sequence"])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    h, w = (int(s) for s in a.size.split("x"))
    rows = []
    for i in range(a.num):
        inp, tr = synthetic.pointmap_sequence(i, frames=a.frames, height=h, width=w, normalization=a.normalization,
                                              noise=a.noise, dynamic_offset=a.dynamic_offset, outliers=a.outliers,
                                              seed=i)
        reg = register.register(inp["xyz"], inp["valid"], normalization=a.normalization)
        ours = dict(errors(reg.c2w, reg.K, tr), seconds=reg.timings["total_s"])
        ref = adam_reference.adam_fit(adam_reference.model_xyz_to_reference_input(inp["xyz"]), iters=a.iters)
        theirs = dict(errors(ref["c2w"], ref["K"], tr), seconds=ref["seconds"], final_loss=ref["loss"])
        rows.append({"scene": i, "closed_form": ours, "adam_reference": theirs,
                     "speedup": theirs["seconds"] / ours["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    keys = rows[0]["closed_form"].keys()
    summ = {m: {k: float(np.mean([r[m][k] for r in rows])) for k in keys} for m in ("closed_form", "adam_reference")}
    summ["speedup_mean"] = float(np.mean([r["speedup"] for r in rows]))
    summ["speedup_total_time"] = summ["adam_reference"]["seconds"] / summ["closed_form"]["seconds"]
    print(json.dumps({"settings": vars(a), "summary": summ}, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps({"settings": vars(a), "summary": summ, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
