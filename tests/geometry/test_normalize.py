"""The pointmap normalisation contract (fourdnex_jax.geometry.normalize): ``xyz = xyz_n * scale + centers[t]``."""

import numpy as np
import pytest

from fourdnex_jax.geometry import normalize


def _xyz(seed=0, t=4):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(t, 10, 12, 3)) * [1.0, 2.0, 0.5] + [0.0, 0.0, 4.0]
    xyz += np.arange(t)[:, None, None, None] * 0.3  # frames drift, so per-frame centres differ
    return xyz


def test_normalize_reference_contract():
    xyz = _xyz()
    valid = np.ones(xyz.shape[:-1], bool)
    valid[1, 2, 3] = False
    xyz[1, 2, 3] = np.nan
    n, centers, scale = normalize.normalize(xyz, valid, "reference")
    assert n.dtype == np.float32 and np.abs(n).max() <= 1.0 and np.abs(n).max() == pytest.approx(1.0)
    assert n[1, 2, 3].tolist() == [0, 0, 0]
    for t in range(len(xyz)):  # per-frame centre = mid of the 2-98 percentile box, one global scale
        lo, hi = np.percentile(xyz[t][valid[t]], [2, 98], axis=0)
        np.testing.assert_allclose(centers[t], (lo + hi) / 2)
        inside = valid[t] & np.all((xyz[t] >= lo) & (xyz[t] <= hi), -1)
        back = normalize.denormalize(n, centers, scale)[t]
        np.testing.assert_allclose(back[inside], xyz[t][inside], rtol=1e-6, atol=1e-6 * scale)
    assert len(np.unique(centers, axis=0)) == len(xyz)


def test_normalize_sequence_exact_inverse():
    xyz = _xyz(1)
    n, centers, scale = normalize.normalize(xyz, None, "sequence")
    assert np.all(centers == 0) and np.abs(n).max() == pytest.approx(1.0)
    np.testing.assert_allclose(normalize.denormalize(n, centers, scale), xyz, rtol=1e-6, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize.normalize(xyz, None, "mean")
