"""Robust statistics of reprojection errors: masked quantiles and medians, a robust error level, Tukey weights.

Errors are summarised by :func:`robust_level`, an estimate of the INLIERS' median error from the 30% quantile of all
errors, so that moving objects covering a third of a frame do not inflate thresholds and weights. Every function
works along the last axis of stacked (..., N) arrays with a (..., N) bool mask of the entries that count.
"""

from __future__ import annotations

import numpy as np


def masked_quantile(e: np.ndarray, mask: np.ndarray, q: float) -> np.ndarray:
    """Quantile along the last axis over the entries where ``mask`` is set: the element of 0-based rank
    ``floor(q n)`` among the ``n`` selected ones, with ONE ``np.partition`` (the unselected entries become -inf /
    +inf in the proportion that keeps that rank at one common position). e, mask (..., N) -> (...); +inf where
    ``n = 0``."""
    n_all = e.shape[-1]
    k = min(int(q * n_all), n_all - 1)
    if mask.all():
        return np.partition(e, k, -1)[..., k]
    n = mask.sum(-1)
    n_low = np.clip(k - np.floor(q * n).astype(np.int64), 0, n_all - n)[..., None]  # unselected -> -inf
    rank = np.cumsum(~mask, -1)
    a = np.where(mask, e, np.where(rank <= n_low, -np.inf, np.inf))
    return np.partition(a, k, -1)[..., k]


def masked_median(e: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Upper median (rank ``floor(n / 2)``, ``np.median`` for odd ``n``) over the masked entries of the last axis
    (:func:`masked_quantile`)."""
    return masked_quantile(e, mask, 0.5)


# Robust error level: the median of the inlier errors, estimated from the 30% quantile of all errors. For 2-D
# Gaussian pixel noise (Rayleigh-distributed errors) median / q30 = 1.1774 / 0.8446; with a fraction ``o`` of
# outliers the q30 is the inliers' 0.3 / (1 - o) quantile, so the estimate stays near the inlier median for
# outlier fractions where the plain median of all errors (the inliers' 0.5 / (1 - o) quantile) is already
# inflated (o = 1/3: 1.10 sigma vs 1.68 sigma) and would bias the robust scale, the IRLS and the inlier threshold.
ROBUST_QUANTILE = 0.3
ROBUST_QUANTILE_TO_MEDIAN = 1.1774 / 0.8446
HALF_NORMAL_Q30_TO_MEDIAN = 0.6745 / 0.3853  # the same for 1-D residuals |r| (half-normal)
TUKEY_C = 4.685  # biweight cut-off in per-axis sigmas (95% efficiency under Gaussian noise)


def robust_level(e: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Robust estimate of the inliers' median error over the masked entries of the last axis: (..., N) -> (...)."""
    return ROBUST_QUANTILE_TO_MEDIAN * masked_quantile(e, mask, ROBUST_QUANTILE)


def tukey_weights(e: np.ndarray, mask: np.ndarray, min_scale: float = 1e-6,
                  level: np.ndarray | None = None) -> np.ndarray:
    """Tukey biweight IRLS weights ``(1 - (e / c)^2)^2`` for ``e < c`` (0 beyond and where not ``mask``), with
    ``c = 4.685 sigma`` and the per-axis ``sigma = level / 1.1774`` (the Rayleigh median of 2-D Gaussian pixel
    errors), ``level`` (...,) the :func:`robust_level` of ``e`` over ``mask`` unless given. e, mask (..., N)."""
    level = robust_level(e, mask) if level is None else level
    c = np.maximum(TUKEY_C / 1.1774 * level, min_scale)[..., None]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(mask & (e < c), (1.0 - (e / c) ** 2) ** 2, 0.0)
