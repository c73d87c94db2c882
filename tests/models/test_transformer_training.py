"""Gradients through the scanned DiT for the LoRA + domain-embedding training pattern (no torch needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.models import params
from fourdnex_jax.models.transformer import FROZEN, TRAINABLE, WanTransformer3D
from tests.helpers import tiny_dit_config

CFG = tiny_dit_config()


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return dict(latents=jnp.asarray(rng.standard_normal((2, 3, 4, 8, 36)), jnp.float32),
                timestep=jnp.array([900.0, 10.5]), text=jnp.asarray(rng.standard_normal((2, 16, 32)), jnp.float32),
                image=jnp.asarray(rng.standard_normal((2, 257, 24)), jnp.float32),
                target=jnp.asarray(rng.standard_normal((2, 3, 4, 8, 16)), jnp.float32))


def lora_grads(cfg):
    model = WanTransformer3D(cfg, rngs=nnx.Rngs(0))
    # Make LoRA-B and the domain embeddings non-zero so every trainable tensor receives gradient.
    for path, var in params.flat_variables(model, TRAINABLE).items():
        var[...] = 0.05 * jax.random.normal(jax.random.key(hash(path) % 2**31), var.shape)
    graphdef, trainable, rest = nnx.split(model, TRAINABLE, ...)
    b = batch()

    @jax.jit
    def loss_and_grad(trainable, rest):
        def loss(trainable):
            m = nnx.merge(graphdef, trainable, rest)
            out = m(b["latents"], b["timestep"], b["text"], b["image"])
            return jnp.mean((out - b["target"]) ** 2)
        return jax.value_and_grad(loss)(trainable)

    return loss_and_grad(trainable, rest), rest


def test_grads_reach_every_trainable_tensor_and_only_them():
    (loss, grads), rest = lora_grads(CFG)
    assert np.isfinite(float(loss))
    flat = params.flat_variables(grads)
    assert "domain_embeddings" in flat and "blocks/attn2/to_out/lora_b" in flat
    for path, g in flat.items():
        assert float(jnp.abs(g[...]).max()) > 0, f"no gradient for {path}"
        assert g[...].dtype == jnp.float32
    assert not any("kernel" in p for p in flat)  # frozen base is not differentiated
    assert len(params.flat_variables(nnx.state(rest, FROZEN))) > 0


@pytest.mark.parametrize("overrides", [dict(remat_policy="full"), dict(remat_policy="save_dots"),
                                       dict(scan_layers=False), dict(attention="chunked", attention_chunk_size=7)])
def test_remat_and_unrolled_grads_equal_plain(overrides):
    (loss, grads), _ = lora_grads(CFG)
    (loss2, grads2), _ = lora_grads(CFG.replace(**overrides))
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
    for (p, g), (_, g2) in zip(sorted(params.flat_variables(grads).items()),
                               sorted(params.flat_variables(grads2).items())):
        np.testing.assert_allclose(np.asarray(g2[...]), np.asarray(g[...]), rtol=2e-5, atol=1e-8, err_msg=p)
