"""The jitted train step: gradient accumulation, clipping + AdamW, NaN/inf policy, fixed shardings, donation.

``train_step(state, frozen, batch) -> (state, metrics)``:
  * ``batch`` leaves are ``(grad_accum_steps, micro_batch, ...)``, the micro-batch axis sharded over the
    ``batch`` rule (``data`` x ``fsdp``); the loss and gradients of the micro-batches are averaged in a
    ``lax.scan`` (one optimizer update per step, memory of one micro-batch);
  * the step key is ``fold_in(rng, step)`` and micro-batch ``i`` uses ``fold_in(step key, i)``; noise is drawn for
    the global batch inside jit, so it does not depend on the mesh or the number of processes;
  * non-finite loss or gradient norm: the update is dropped (trainable and optimizer state unchanged, ``step``
    still advances past the batch, ``nan_skips``/``skipped`` count it); the host then applies ``nan_policy``
    (:class:`fourdnex_jax.training.trainer.Trainer`);
  * ``state`` is donated; its output shardings equal its input shardings; ``frozen`` is read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fourdnex_jax import sharding as mesh_lib
from fourdnex_jax.training import objective
from fourdnex_jax.training.state import ModelParts


def build_train_step(parts: ModelParts, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                     grad_accum_steps: int = 1, sample_posterior: bool = True) -> Callable:
    """The pure step function (jit it with :func:`jit_train_step`)."""

    def micro_loss(trainable, frozen, micro_batch, key):
        model = parts.merge(trainable, frozen)
        return objective.loss_fn(model, micro_batch, key, sample_posterior)

    grad_fn = jax.value_and_grad(micro_loss)

    def train_step(state: Mapping[str, Any], frozen: Mapping[str, Any], batch: Mapping[str, jax.Array]):
        trainable = state["trainable"]
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        if grad_accum_steps == 1:
            loss, grads = grad_fn(trainable, frozen, jax.tree.map(lambda x: x[0], batch),
                                  jax.random.fold_in(step_key, 0))
        else:
            def body(carry, xs):
                i, micro = xs
                loss_i, g_i = grad_fn(trainable, frozen, micro, jax.random.fold_in(step_key, i))
                return (carry[0] + loss_i, jax.tree.map(jnp.add, carry[1], g_i)), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (loss, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros),
                                            (jnp.arange(grad_accum_steps), batch))
            loss = loss / grad_accum_steps
            grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state["opt_state"], trainable)
        new_trainable = optax.apply_updates(trainable, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        applied = state["step"] - state["skipped"]  # optimizer updates so far (the schedule's step)
        new_state = {
            "step": state["step"] + 1,
            "trainable": keep(new_trainable, trainable),
            "opt_state": keep(new_opt, state["opt_state"]),
            "rng": state["rng"],
            "nan_skips": jnp.where(finite, 0, state["nan_skips"] + 1).astype(jnp.int32),
            "skipped": (state["skipped"] + jnp.where(finite, 0, 1)).astype(jnp.int32),
        }
        metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(applied),
                   "finite": finite, "param_norm": optax.global_norm(new_state["trainable"])}
        return new_state, metrics

    return train_step


def batch_shardings(mesh: Mesh, rules, batch_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, NamedSharding]:
    """Shardings of the ``(accum, micro, ...)`` batch leaves."""
    return {k: mesh_lib.batch_sharding(mesh, rules, len(s), leading=1) for k, s in batch_shapes.items()}


def jit_train_step(step_fn: Callable, state_sh, frozen_sh, batch_sh, mesh: Mesh):
    rep = NamedSharding(mesh, P())
    metrics_sh = {k: rep for k in ("loss", "grad_norm", "learning_rate", "finite", "param_norm")}
    return jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh), out_shardings=(state_sh, metrics_sh),
                   donate_argnums=(0,))
