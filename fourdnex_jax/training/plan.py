"""AOT memory plan of the real train step: lower + compile for a mesh of (possibly deviceless) devices and read
the compiler's per-device memory analysis. Nothing is materialised: parameters, optimizer state and batch are
``ShapeDtypeStruct``s with their shardings.

Per device: ``params`` = frozen base + trainable shards, ``optimizer`` = optimizer-state shards (from the
shardings, exact), ``arguments`` / ``outputs`` / ``alias`` / ``temp`` / ``code`` / ``peak`` from the compiler
(:func:`fourdnex_jax.utils.memory_plan.memory_analysis`: ``peak = arguments + outputs - alias + temp + code``, the
donated train state aliased), as the inference plan counts them. On a deviceless TPU topology
(``jax.experimental.topologies``, needs ``libtpu``) the TPU compiler also rejects plans over the HBM size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from fourdnex_jax import sharding as mesh_lib
from fourdnex_jax.config import model_config
from fourdnex_jax.data import loader, schema
from fourdnex_jax.training import optimizer as optim_lib
from fourdnex_jax.training import state as state_lib
from fourdnex_jax.training import step as step_lib
from fourdnex_jax.utils.memory_plan import memory_analysis, shard_bytes


def compile_train_step(config, devices: Sequence[Any], *, mesh_shape: Sequence[int] | None = None,
                       latent_thw: tuple[int, int, int] = (13, 60, 90), text_len: int | None = None,
                       image_tokens: int = 257) -> dict[str, Any]:
    """Compiles the train step of ``config`` for ``devices`` and returns the plan numbers (bytes per device)."""
    t = config.train
    cfg = model_config(config)
    mesh = mesh_lib.make_mesh(config.sharding, devices=devices, shape=mesh_shape)
    rules = mesh_lib.rules_of(config.sharding)
    text_len = text_len or config.data.text_len
    t0 = time.perf_counter()
    parts = state_lib.ModelParts.build(cfg, config.seed, config.train.trainable)
    tx, schedule = optim_lib.make_optimizer(config.optim, t.num_steps)
    state_sh = state_lib.state_shardings(parts, tx, mesh, rules)
    frozen_sh = parts.frozen_shardings(mesh, rules)
    spec = schema.EncodedSpec(*latent_thw, z_dim=cfg.out_channels, text_dim=cfg.text_dim, image_tokens=image_tokens,
                              image_dim=cfg.image_dim)
    shapes = loader.global_batch_shapes(spec, t.global_batch_size, t.grad_accum_steps, text_len)
    batch_sh = step_lib.batch_shardings(mesh, rules, shapes)
    abstract_state = state_lib.abstract_state(parts, tx, state_sh)
    abstract_frozen = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                   parts.abstract_frozen(), frozen_sh)
    abstract_batch = {k: jax.ShapeDtypeStruct(s, np.float32, sharding=batch_sh[k]) for k, s in shapes.items()}
    fn = step_lib.jit_train_step(step_lib.build_train_step(parts, tx, schedule, grad_accum_steps=t.grad_accum_steps,
                                                           sample_posterior=config.data.sample_posterior),
                                 state_sh, frozen_sh, batch_sh, mesh)
    with jax.set_mesh(mesh):
        lowered = fn.lower(abstract_state, abstract_frozen, abstract_batch)
        t1 = time.perf_counter()
        compiled = lowered.compile()
    t2 = time.perf_counter()
    out = {"mesh": dict(mesh.shape), "devices": len(devices), "device_kind": devices[0].device_kind,
           "global_batch": t.global_batch_size, "grad_accum": t.grad_accum_steps,
           "tokens": int(np.prod(latent_thw)) * 2 // int(np.prod(cfg.patch_size)),
           "frozen_params": state_lib.count_params(parts.abstract_frozen()),
           "trainable_params": state_lib.count_params(parts.abstract_trainable()),
           "params_bytes": shard_bytes(abstract_frozen) + shard_bytes(abstract_state["trainable"]),
           "optimizer_bytes": shard_bytes(abstract_state["opt_state"]),
           "lower_s": t1 - t0, "compile_s": t2 - t1, "compiled": compiled}
    out.update(memory_analysis(compiled))
    return out
