"""Named rematerialisation (gradient checkpointing) policies for scanned layers.

=====================  ==================================================================================
name                   what the backward pass keeps from the forward pass of each layer
=====================  ==================================================================================
``none``               everything (no remat; fastest, most memory)
``full``               only the layer input (recompute the whole layer; least memory)
``save_dots``          results of matmuls without batch dimensions (the projections), recompute the rest
``save_qkv``           the tagged q/k/v after norm+RoPE and the attention output
``save_attention_out`` the tagged attention outputs only (attention is the costliest op to recompute)
=====================  ==================================================================================

Tags are set with ``jax.ad_checkpoint.checkpoint_name`` in the attention module.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv": jax.checkpoint_policies.save_only_these_names("query", "key", "value", "attention_out"),
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}


def remat_policy(name: str) -> Callable | None:
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {name!r}; choose one of {sorted(REMAT_POLICIES)}")
    return REMAT_POLICIES[name]
