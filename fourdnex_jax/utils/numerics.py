"""Error metrics of arrays, shared by the evaluation commands, the benchmarks and the tests."""

from __future__ import annotations

import numpy as np


def rel_l2(actual, expected) -> float:
    """Relative L2 error ||actual - expected|| / ||expected|| in float64 (the parity metric of the test suite).
    Raises ValueError when the shapes differ."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"rel_l2: shape {a.shape} != {e.shape}")
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))


def psnr(a, b, *, peak: float) -> float:
    """Peak signal-to-noise ratio 10 log10(peak^2 / MSE) in dB, computed in float64.

    ``peak`` is the peak-to-peak range of the data: 255 for uint8 frames, 2 for data in [-1, 1]. The MSE is floored at
    1e-12 so identical inputs give a finite figure.
    """
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(float(peak) ** 2 / max(float(mse), 1e-12)))
