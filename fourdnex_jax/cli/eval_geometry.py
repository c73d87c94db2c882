"""Geometry metrics of pointmap results against ground truth (MonST3R/CUT3R protocol).

    fourdnex eval-geometry [--num 4 --frames 13 --size 48x64] [--results DIR] [--normalization sequence]
        [--noise 0.0] [--out report.json]

Rows: ``ground_truth`` (the true pointmaps, normalised like a model output: sanity, ~0 error), ``baseline_plane``
(the slanted-plane prior the model is conditioned on, repeated over time; registered as a per-frame-centred map),
``gt_noisy`` (ground truth with --noise x depth Gaussian noise and inconsistent moving objects, if --noise > 0) and,
with ``--results DIR``, every ``DIR/*/pointmaps.npz`` whose folder has a ``gt.npz`` (``depth`` (T,H,W),
``cam_to_world`` (T,4,4)) or is named ``synth_heldout_NNNNNN`` (ground truth regenerated from the synthetic
scene; pass the matching --frames/--size), registered under ``--normalization`` (a result of ``fourdnex generate``
names its own in ``summary.json: xyz_normalization``). Each row
(:func:`fourdnex_jax.geometry.metrics.registration_metrics`): cameras and depth by closed-form registration, then
video depth AbsRel / delta<1.25 with a per-sequence scale, and scale+shift (closed-form least squares and exact
L1), and ATE / RPE-trans / RPE-rot (deg) after Sim(3) Umeyama alignment (ATE/RPE-trans in units of the true
trajectory's length, i.e. divided by its total path length, plus raw values). Held-out synthetic scenes: heldout
0..num-1.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np

from fourdnex_jax.data import synthetic
from fourdnex_jax.geometry.metrics import mean_metrics, registration_metrics
from fourdnex_jax.geometry.scene import load_pointmaps
from fourdnex_jax.recipe import xyz_init_pointmap
from fourdnex_jax.utils.errors import InputError

FLAGS = flags.FLAGS
_NUM = flags.DEFINE_integer("num", 4, "Held-out synthetic scenes 0..num-1.")
_FRAMES = flags.DEFINE_integer("frames", 13, "Frames per synthetic scene.")
_SIZE = flags.DEFINE_string("size", "48x64", "HxW of the synthetic scenes.")
_NORMALIZATION = flags.DEFINE_enum("normalization", "sequence", ["sequence", "reference"], "Normalisation of the "
                                   "synthetic rows and of every --results pointmap.")
_NOISE = flags.DEFINE_float("noise", 0.0, "Add a gt_noisy row: Gaussian noise x depth, inconsistent moving objects, "
                            "1% outliers.")
_RESULTS = flags.DEFINE_string("results", None, "Folder of result folders DIR/*/pointmaps.npz.")
_OUT = flags.DEFINE_string("out", None, "Write the full report as JSON here.")
FLAG_NAMES = ("num", "frames", "size", "normalization", "noise", "results", "out")


def main(argv) -> int:
    del argv
    try:
        h, w = (int(s) for s in _SIZE.value.split("x"))
    except ValueError:
        raise InputError(f"--size {_SIZE.value!r}: expected HxW, e.g. 48x64") from None
    rows: dict[str, list] = {"ground_truth": [], "baseline_plane": []}
    if _NOISE.value > 0:
        rows["gt_noisy"] = []
    norm = _NORMALIZATION.value
    plane = xyz_init_pointmap(h, w)
    for i in range(_NUM.value):
        inp, tr = synthetic.pointmap_sequence(i, frames=_FRAMES.value, height=h, width=w, normalization=norm)
        gt = (tr["depth"], tr["c2w"], inp["valid"])
        rows["ground_truth"].append(registration_metrics(inp["xyz"], inp["valid"], _NORMALIZATION.value, *gt))
        rows["baseline_plane"].append(registration_metrics(np.broadcast_to(plane, inp["xyz"].shape), None,
                                                           "reference", *gt))
        if _NOISE.value > 0:
            nz, _ = synthetic.pointmap_sequence(i, frames=_FRAMES.value, height=h, width=w, normalization=norm,
                                             noise=_NOISE.value, dynamic_offset=0.1, outliers=0.01, seed=i)
            rows["gt_noisy"].append(registration_metrics(nz["xyz"], nz["valid"], _NORMALIZATION.value, *gt))
    if _RESULTS.value:
        rows["results"] = []
        for npz in sorted(Path(_RESULTS.value).glob("*/pointmaps.npz")):
            arrays = load_pointmaps(npz)
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
            row = registration_metrics(arrays["xyz"], arrays.get("valid"), _NORMALIZATION.value, *gt)
            rows["results"].append(dict(row, name=npz.parent.name))
    summary = {k: mean_metrics([{kk: vv for kk, vv in r.items() if kk != "name"} for r in v]) for k, v in rows.items()}
    report = {"settings": {k: FLAGS[k].value for k in FLAG_NAMES}, "summary": summary, "rows": rows}
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
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(report, indent=2, default=float))
    return 0

