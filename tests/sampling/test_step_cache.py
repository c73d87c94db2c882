"""The step cache's schedule (fourdnex_jax/sampling/step_cache.py): which sampling steps run the DiT blocks."""

import pytest

from fourdnex_jax.sampling import step_cache


def test_full_evaluation_schedule():
    assert step_cache.full_evaluation_schedule(10, 3).tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert step_cache.full_evaluation_schedule(5, 2).tolist() == [1, 0, 1, 0, 1]
    assert step_cache.full_evaluation_schedule(4, 1).all()
    with pytest.raises(ValueError, match=">= 1"):
        step_cache.full_evaluation_schedule(4, 0)
