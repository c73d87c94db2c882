"""Closed-form registration vs the 4DNeX reference fit (Adam, 1500 iterations, JAX re-implementation).

    python -m benchmarks.register [--num 3] [--frames 25] [--size 60x90] [--noise 0.005]
        [--dynamic-offset 0.1] [--outliers 0.01] [--iters 1500] [--normalization sequence] [--out bench.json]

Synthetic held-out scenes with exact ground truth, corrupted like a generative model's output (Gaussian noise
``noise x depth`` on every point, each moving object displaced per frame by ``dynamic_offset x`` its depth off
its pixel rays, a fraction of gross outliers), normalised into [-1, 1]; both methods see the same normalised XYZ
(the reference in its own input convention, (xyz + 1) / 2 with 0.5 subtracted from x and y).

Errors: after Sim(3) Umeyama alignment of the camera positions, mean/max rotation error (deg), ATE and RPE-trans
relative to the true path length, RPE-rot (deg); ``rot_rel_mean_deg``: mean angle between estimated and true
rotations relative to camera 0 (no alignment: both are expressed relative to their first camera, so this does
not depend on how well the positions pin down the alignment rotation, which they do poorly on near-straight
paths); relative focal error ``max(|fx - f*|, |fy - f*|) / f*``.

Times are wall-clock seconds on this machine. Ours: the whole ``register()`` call (after one warm-up call on a
tiny input, so one-time library initialisation is not counted; stage split from ``Registration.timings``).
Adam: ``seconds`` is its jitted optimisation as ``adam_fit`` times it, which includes tracing and XLA compilation
of the 1500-step loop; ``seconds_no_compile`` subtracts the compilation time JAX itself reports for that
function (``jax.monitoring`` duration events ``/jax/core/compile/*`` of ``run``), i.e. the optimisation alone.
Speed-ups are given against both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from fourdnex_jax.geometry import adam_reference, metrics, register
from fourdnex_jax.geometry.se3 import rotation_angle_deg
from fourdnex_jax.testing import scenes

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_log: list = []


def _on_duration(event: str, duration: float, **kw) -> None:
    if event in _COMPILE_EVENTS:
        _compile_log.append((str(kw.get("fun_name", "")), float(duration)))


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def adam_timed(xyz_model: np.ndarray, iters: int) -> dict:
    """Run the reference fit; adds ``compile_s`` (JAX's own compile-time report for the jitted loop ``run``) and
    ``seconds_no_compile`` = ``seconds - compile_s``."""
    _compile_log.clear()
    ref = adam_reference.adam_fit(adam_reference.model_xyz_to_reference_input(xyz_model), iters=iters)
    compile_s = sum(d for name, d in _compile_log if name in ("run", "jit(run)"))
    return dict(ref, compile_s=compile_s, seconds_no_compile=ref["seconds"] - compile_s)


def errors(c2w: np.ndarray, K: np.ndarray, tr: dict) -> dict:
    """Pose and focal errors of c2w (T, 4, 4) and K (3, 3) against the truth ``tr`` (see module docstring)."""
    gt = tr["c2w"]
    rel = np.linalg.inv(c2w[0])[None] @ c2w
    al = metrics.align_trajectory(rel, gt)
    rot = rotation_angle_deg(np.swapaxes(al[:, :3, :3], 1, 2) @ gt[:, :3, :3])
    gt_rel = np.linalg.inv(gt[0])[None] @ gt
    rot_rel = rotation_angle_deg(np.swapaxes(rel[:, :3, :3], 1, 2) @ gt_rel[:, :3, :3])
    pm = metrics.pose_metrics(rel, gt)
    length = float(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=-1).sum()) or 1.0
    f_true = tr["K"][0, 0]
    return {"rot_mean_deg": float(rot.mean()), "rot_max_deg": float(rot.max()),
            "rot_rel_mean_deg": float(rot_rel.mean()), "ate_rel": pm["ate"] / length,
            "rpe_trans_rel": pm["rpe_trans"] / length, "rpe_rot_deg": pm["rpe_rot_deg"],
            "focal_rel_err": float(max(abs(K[0, 0] - f_true), abs(K[1, 1] - f_true)) / f_true)}


def _table(summ: dict) -> str:
    keys = ["rot_mean_deg", "rot_rel_mean_deg", "rot_max_deg", "ate_rel", "rpe_trans_rel", "rpe_rot_deg",
            "focal_rel_err"]
    ours, ref = summ["closed_form"], summ["adam_reference"]
    lines = ["| metric (mean over scenes) | closed form | Adam reference |", "|---|---|---|"]
    lines += [f"| {k} | {ours[k]:.4g} | {ref[k]:.4g} |" for k in keys]
    lines += [f"| seconds | {ours['seconds']:.4f} | {ref['seconds']:.3f} (with compile) / "
              f"{ref['seconds_no_compile']:.3f} (without) |",
              f"| speed-up (total time) | | {summ['speedup_total_time']:.0f}x with compile / "
              f"{summ['speedup_total_time_no_compile']:.0f}x without |"]
    return "\n".join(lines)


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
    warm, _ = scenes.pointmap_sequence(0, frames=3, height=16, width=24, normalization=a.normalization)
    register.register(warm["xyz"], warm["valid"], normalization=a.normalization)
    rows = []
    for i in range(a.num):
        inp, tr = scenes.pointmap_sequence(i, frames=a.frames, height=h, width=w, normalization=a.normalization,
                                           noise=a.noise, dynamic_offset=a.dynamic_offset, outliers=a.outliers,
                                           seed=i)
        t0 = time.perf_counter()
        reg = register.register(inp["xyz"], inp["valid"], normalization=a.normalization)
        secs = time.perf_counter() - t0
        ours = dict(errors(reg.c2w, reg.K, tr), seconds=secs,
                    stages_s={k: v for k, v in reg.timings.items() if k != "total_s"})
        ref = adam_timed(inp["xyz"], a.iters)
        theirs = dict(errors(ref["c2w"], ref["K"], tr), seconds=ref["seconds"], compile_s=ref["compile_s"],
                      seconds_no_compile=ref["seconds_no_compile"], final_loss=ref["loss"])
        rows.append({"scene": i, "closed_form": ours, "adam_reference": theirs,
                     "speedup": theirs["seconds"] / secs, "speedup_no_compile": theirs["seconds_no_compile"] / secs})
        print(json.dumps(rows[-1], allow_nan=False), flush=True)
    summ = {}
    for m in ("closed_form", "adam_reference"):
        keys = [k for k, v in rows[0][m].items() if isinstance(v, float)]
        summ[m] = {k: float(np.mean([r[m][k] for r in rows])) for k in keys}
    summ["closed_form"]["stages_s"] = {k: float(np.mean([r["closed_form"]["stages_s"][k] for r in rows]))
                                       for k in rows[0]["closed_form"]["stages_s"]}
    summ["speedup_mean"] = float(np.mean([r["speedup"] for r in rows]))
    summ["speedup_no_compile_mean"] = float(np.mean([r["speedup_no_compile"] for r in rows]))
    summ["speedup_total_time"] = summ["adam_reference"]["seconds"] / summ["closed_form"]["seconds"]
    summ["speedup_total_time_no_compile"] = (summ["adam_reference"]["seconds_no_compile"]
                                             / summ["closed_form"]["seconds"])
    print(json.dumps({"settings": vars(a), "summary": summ}, indent=2, allow_nan=False))
    print(_table(summ))
    if a.out:
        Path(a.out).write_text(json.dumps({"settings": vars(a), "summary": summ, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
