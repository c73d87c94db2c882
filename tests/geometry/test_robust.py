"""Robust statistics of reprojection errors (fourdnex_jax.geometry.robust)."""

import numpy as np

from fourdnex_jax.geometry import robust


def test_masked_quantile_matches_sorting():
    rng = np.random.default_rng(5)
    e = rng.random((7, 40))
    mask = rng.random((7, 40)) < 0.6
    mask[0] = True
    for q in (0.3, 0.5):
        got = robust.masked_quantile(e, mask, q)
        want = [np.sort(row[m])[int(q * m.sum())] for row, m in zip(e, mask)]
        np.testing.assert_array_equal(got, want)
    assert robust.masked_median(e[:1], np.zeros((1, 40), bool))[0] == np.inf
