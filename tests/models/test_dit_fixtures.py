"""Torch-free DiT parity: recorded diffusers outputs (tools/make_dit_fixtures.py) vs the JAX model.

Runs where torch is not installed. Tolerances as in test_transformer_parity.py: RoPE exact, forwards <= 1e-5.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.models.transformer import layouts
from fourdnex_jax.models.transformer.rope import rope_cos_sin
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights.from_diffusers import apply_adapter, load_transformer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "wan_tiny"


@pytest.fixture(scope="module")
def cases():
    with np.load(FIXTURE / "cases.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@nnx.jit
def run(model, latents, timestep, text_embeds, image_embeds):
    return model(latents, timestep, text_embeds, image_embeds)


def forward(model, cases):
    return np.asarray(run(model, *(jnp.asarray(cases[f"input/{k}"]) for k in
                                   ("latents", "timestep", "text_embeds", "image_embeds"))))


def test_rope_width_layout_exact(cases):
    grid = tuple(int(g) for g in cases["rope/grid"])
    cos, sin = rope_cos_sin(layouts.position_ids("width", grid), 128, 1024)
    np.testing.assert_array_equal(np.asarray(cos), cases["rope/cos"])
    np.testing.assert_array_equal(np.asarray(sin), cases["rope/sin"])


def test_plain_forward(cases):
    model = load_transformer(FIXTURE / "transformer", progress=False, modality_layout="none",
                             domain_embeddings=False)
    assert rel_l2(forward(model, cases), cases["output/plain"]) <= 1e-5


def test_fourdnex_forward_with_and_without_lora(cases):
    model = load_transformer(FIXTURE / "transformer", progress=False, modality_layout="width",
                             domain_embeddings=True, lora_rank=4, lora_alpha=2.0)
    apply_adapter(model, domain_embeddings=cases["domain_embeddings"])
    # Fresh LoRA (B = 0) is the identity: the 4DNeX forward without adapter.
    assert rel_l2(forward(model, cases), cases["output/fourdnex"]) <= 1e-5
    apply_adapter(model, lora={k[len("lora/"):]: v for k, v in cases.items() if k.startswith("lora/")})
    assert rel_l2(forward(model, cases), cases["output/fourdnex_lora"]) <= 1e-5
