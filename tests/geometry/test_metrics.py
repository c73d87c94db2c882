"""Video-depth and camera-pose metrics (fourdnex_jax.geometry.metrics) and the registration row of
``fourdnex eval-geometry``."""

import numpy as np

from fourdnex_jax.geometry import metrics, se3
from fourdnex_jax.testing import scenes


def test_depth_and_pose_metrics():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, (3, 8, 8))
    m = metrics.depth_metrics(2.0 * gt + 0.0, gt, np.ones_like(gt, bool), "scale")
    assert m["abs_rel"] < 1e-12 and m["delta_1_25"] == 1.0
    m = metrics.depth_metrics(0.5 * gt + 3.0, gt, np.ones_like(gt, bool), "scale_shift", "l1")
    assert m["abs_rel"] < 1e-6
    _, tr = scenes.pointmap_sequence(0, frames=6, height=24, width=32)
    c2w = tr["c2w"]
    s, r = 3.0, se3.look_at(np.array([0.0, 0, 0]), np.array([1.0, 0.2, 1]))[:3, :3]
    est = c2w.copy()
    est[:, :3, :3] = r @ c2w[:, :3, :3]
    est[:, :3, 3] = s * c2w[:, :3, 3] @ r.T + 1.0
    pm = metrics.pose_metrics(est, c2w)
    assert pm["ate"] < 1e-9 and pm["rpe_trans"] < 1e-9 and pm["rpe_rot_deg"] < 1e-5


def test_registration_metrics_rows():
    inp, tr = scenes.pointmap_sequence(0, frames=4, height=24, width=32)
    gt = (tr["depth"], tr["c2w"], inp["valid"])
    row = metrics.registration_metrics(inp["xyz"], inp["valid"], "sequence", *gt)
    assert "fallback" not in row and row["depth_scale_lsq"]["abs_rel"] < 1e-5 and row["pose"]["ate_rel"] < 1e-6
    plane = np.zeros_like(inp["xyz"])  # every point at the origin: cannot be registered
    bad = metrics.registration_metrics(plane, None, "reference", *gt)
    assert "fallback" in bad
    mean = metrics.mean_metrics([row, row])
    assert mean["sequences"] == 2 and mean["failed"] == 0
    assert mean["pose"]["ate"] == row["pose"]["ate"] and mean["focal_px"] == row["focal_px"]
