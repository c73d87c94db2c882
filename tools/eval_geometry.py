"""Geometry metrics of pointmap results against ground truth (MonST3R/CUT3R protocol).

    python tools/eval_geometry.py [--num 4 --frames 13 --size 48x64] [--results DIR] [--normalization sequence]
        [--noise 0.0] [--out report.json]

Rows: ``ground_truth`` (the true pointmaps, normalised like a model output: sanity, ~0 error), ``baseline_plane``
(the slanted-plane prior the model is conditioned on, repeated over time; registered as a per-frame-centred map),
``gt_noisy`` (ground truth with --noise x depth Gaussian noise and inconsistent moving objects, if --noise > 0) and,
with ``--results DIR``, every ``DIR/*/pointmaps.npz`` whose folder has a ``gt.npz`` (``depth`` (T,H,W),
``cam_to_world`` (T,4,4)) or is named ``synth_heldout_NNNNNN`` (ground truth regenerated from the synthetic
scene; pass the matching --frames/--size). Each row: cameras and depth by closed-form registration, then video
depth AbsRel / delta<1.25 with a per-sequence scale, and scale+shift (closed-form least squares and exact L1), and
ATE / RPE-trans / RPE-rot (deg) after Sim(3) Umeyama alignment (ATE/RPE-trans in units of the true trajectory's
length, i.e. divided by its total path length, plus raw values). Held-out synthetic scenes: heldout 0..num-1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from fourdnex_jax.data.encode import xyz_init_pointmap  # noqa: E402
from fourdnex_jax.geometry import metrics, register, synthetic  # noqa: E402
from fourdnex_jax.geometry.scene import load_pointmaps, normalization_of  # noqa: E402


def evaluate(xyz, valid, normalization, gt_depth, gt_c2w, gt_valid) -> dict:
    row = {}
    try:
        with np.errstate(all="ignore"):
            reg = register.register(xyz, valid, normalization=normalization)
        depth, c2w, ok = reg.depth, reg.c2w, gt_valid & reg.valid
        row["focal_px"], row["registration_s"] = float(reg.K[0, 0]), reg.timings["total_s"]
    except Exception as e:  # noqa: BLE001 - degenerate maps (a plane) cannot be registered: fall back
        z = np.asarray(xyz, np.float64)[..., 2]
        depth, c2w, ok = z - z.min() + 1e-3, np.tile(np.eye(4), (len(gt_c2w), 1, 1)), gt_valid
        row["fallback"] = f"registration failed ({e}); depth = z channel, static camera"
    for mode in ("scale", "scale_shift"):
        for fit in ("lsq", "l1"):
            m = metrics.depth_metrics(depth, gt_depth, ok, mode, fit)
            row[f"depth_{mode}_{fit}"] = {"abs_rel": m["abs_rel"], "delta_1_25": m["delta_1_25"]}
    pm = metrics.pose_metrics(c2w, gt_c2w)
    length = float(np.linalg.norm(np.diff(gt_c2w[:, :3, 3], axis=0), axis=-1).sum()) or 1.0
    row["pose"] = dict(pm, ate_rel=pm["ate"] / length, rpe_trans_rel=pm["rpe_trans"] / length)
    return row


def aggregate(rows: list[dict]) -> dict:
    good = rows
    out = {"sequences": len(rows), "failed": sum("fallback" in r for r in rows)}
    if not good:
        return out
    for k in good[0]:
        if isinstance(good[0][k], str):
            continue
        if isinstance(good[0][k], dict):
            out[k] = {m: float(np.mean([r[k][m] for r in good])) for m in good[0][k]}
        else:
            out[k] = float(np.mean([r[k] for r in good]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--size", default="48x64")
    ap.add_argument("--normalization", default="sequence", choices=["sequence", "reference"])
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--results", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    h, w = (int(s) for s in a.size.split("x"))
    rows: dict[str, list] = {"ground_truth": [], "baseline_plane": []}
    if a.noise > 0:
        rows["gt_noisy"] = []
    plane = xyz_init_pointmap(h, w)
    for i in range(a.num):
        inp, tr = synthetic.pointmap_sequence(i, frames=a.frames, height=h, width=w, normalization=a.normalization)
        gt = (tr["depth"], tr["c2w"], inp["valid"])
        rows["ground_truth"].append(evaluate(inp["xyz"], inp["valid"], a.normalization, *gt))
        rows["baseline_plane"].append(evaluate(np.broadcast_to(plane, inp["xyz"].shape), None, "reference", *gt))
        if a.noise > 0:
            nz, _ = synthetic.pointmap_sequence(i, frames=a.frames, height=h, width=w, normalization=a.normalization,
                                                noise=a.noise, dynamic_offset=0.1, outliers=0.01, seed=i)
            rows["gt_noisy"].append(evaluate(nz["xyz"], nz["valid"], a.normalization, *gt))
    if a.results:
        rows["results"] = []
        for npz in sorted(Path(a.results).glob("*/pointmaps.npz")):
            arrays = load_pointmaps(npz)
            norm = normalization_of(npz, arrays, a.normalization)
            norm = "sequence" if norm == "metric" else norm
            if (npz.parent / "gt.npz").exists():
                with np.load(npz.parent / "gt.npz") as z:
                    gt = (z["depth"], z["cam_to_world"], z["depth"] > 0)
            else:
                m = re.search(r"synth_heldout_(\d+)", npz.parent.name)
                if not m:
                    print(f"skipping {npz}: no gt.npz and not a synth_heldout_NNNNNN folder", file=sys.stderr)
                    continue
                t, hh, ww = arrays["xyz"].shape[:3]
                inp, tr = synthetic.pointmap_sequence(int(m.group(1)), frames=t, height=hh, width=ww)
                gt = (tr["depth"], tr["c2w"], inp["valid"])
            rows["results"].append(dict(evaluate(arrays["xyz"], arrays.get("valid"), norm, *gt), name=npz.parent.name))
    report = {"settings": vars(a), "summary": {k: aggregate([{kk: vv for kk, vv in r.items() if kk != "name"}
                                                            for r in v]) for k, v in rows.items()}, "rows": rows}
    print(f"{'row':16s} {'n':>3s} {'fail':>4s} {'AbsRel(s)':>9s} {'d1(s)':>6s} {'AbsRel(ss)':>10s} {'d1(ss)':>6s} "
          f"{'ATE_rel':>8s} {'RPEt_rel':>8s} {'RPEr_deg':>8s}")
    for k, s in report["summary"].items():
        if "pose" not in s:
            print(f"{k:16s} {s['sequences']:3d} {s['failed']:4d}  (no successful registration)")
            continue
        print(f"{k:16s} {s['sequences']:3d} {s['failed']:4d} {s['depth_scale_lsq']['abs_rel']:9.4f} "
              f"{s['depth_scale_lsq']['delta_1_25']:6.3f} {s['depth_scale_shift_lsq']['abs_rel']:10.4f} "
              f"{s['depth_scale_shift_lsq']['delta_1_25']:6.3f} {s['pose']['ate_rel']:8.4f} "
              f"{s['pose']['rpe_trans_rel']:8.4f} {s['pose']['rpe_rot_deg']:8.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
