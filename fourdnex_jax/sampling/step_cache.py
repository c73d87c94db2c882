"""Step cache schedule: on which sampling steps the DiT's transformer blocks run, and on which a cached residual
replaces them.

Rule (fixed schedule, chosen over a data-dependent TeaCache threshold so shapes and the number of DiT block
evaluations are known before sampling and no ``lax.cond`` or host sync is needed): with interval ``k``, step ``i``
of ``n`` evaluates the blocks in full when ``i % k == 0`` or ``i == n - 1`` (the last step, which sets the fine
detail, is always full); every other step is *cached*. ``k = 1`` makes every step full.

What a cached step still computes: the patch embedding of the *current* noisy input, the condition embeddings of
the current timestep and the output head (norm, timestep modulation, projection). Only the blocks are replaced:
``h = x_embedded + residual`` with ``residual = blocks(x) - x`` (fp32, (B, L, D), CFG pairs included) from the last
full step, as TeaCache/FasterCache-style residual caching does. So a cached step costs the embeddings + head,
a few percent of a full step. The forward pieces are the model's own
(:meth:`WanTransformer3D.embed / run_blocks / head <fourdnex_jax.models.transformer.WanTransformer3D>`); the
pipeline (:mod:`fourdnex_jax.pipelines.image_to_4d`) compiles a full and a cached step and picks one per step from
:func:`full_evaluation_schedule`.
"""

from __future__ import annotations

import numpy as np


def full_evaluation_schedule(num_steps: int, interval: int) -> np.ndarray:
    """(num_steps,) bool: True where the blocks run in full (module docstring). ``interval >= 1``."""
    if interval < 1:
        raise ValueError(f"step cache interval must be >= 1 (1: every step full), got {interval}")
    i = np.arange(num_steps)
    return (i % interval == 0) | (i == num_steps - 1)
