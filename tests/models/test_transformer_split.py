"""The DiT forward as three pieces (``WanTransformer3D.embed / run_blocks / head``): they compose to ``__call__``
bit for bit, and the step cache's use of them (tokens + the blocks' residual instead of the blocks) gives back the
full output on the same input."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.models.transformer import WanTransformer3D
from fourdnex_jax.testing.numerics import rel_l2
from tests.helpers import tiny_dit_config

ROOT = Path(__file__).resolve().parents[2]


def test_split_forward_composes_to_call_and_residual_reuse():
    cfg = tiny_dit_config()
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(1))
    k = jax.random.split(jax.random.key(1), 3)
    args = (jax.random.normal(k[0], (2, 2, 4, 12, cfg.in_channels)), jnp.array([900.0, 10.0]),
            jax.random.normal(k[1], (2, 16, cfg.text_dim)), jax.random.normal(k[2], (2, 17, cfg.image_dim)))
    ref = jax.jit(lambda *a: model(*a))(*args)

    def full(*a):
        tokens = model.embed(*a)
        h = model.run_blocks(tokens)
        return model.head(h, tokens), h.astype(jnp.float32) - tokens.x.astype(jnp.float32)

    def cached(residual, *a):
        tokens = model.embed(*a)
        return model.head((tokens.x.astype(jnp.float32) + residual).astype(tokens.x.dtype), tokens)

    out, residual = jax.jit(full)(*args)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    assert residual.shape == (2, 2 * 2 * 6, cfg.dim) and residual.dtype == jnp.float32  # (B, L, D), patch 1x2x2
    # same input: embeddings + residual = the blocks' output
    assert rel_l2(jax.jit(cached)(residual, *args), ref) < 1e-5
