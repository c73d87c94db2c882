"""Sharded LoRA training of the 4DNeX DiT (one job per module).

* :mod:`mesh`: device mesh and logical-axis shardings from the config; ``jax.distributed`` for multi-host runs.
* :mod:`objective`: the 4DNeX flow-matching loss (condition, guided mask, x_t, target eps - x, MSE).
* :mod:`optimizer`: AdamW + clipping + warmup/linear-decay schedule (4DNeX / DeepSpeed preset).
* :mod:`state`: the train state (trainable fp32 + optimizer state + step + RNG) and the frozen base, sharded.
* :mod:`step`: the jitted train step (gradient accumulation, NaN/inf policy, donated buffers, fixed shardings).
* :mod:`metrics`: analytic FLOP count, MFU, TensorBoard / JSON-lines / console writers.
* :mod:`checkpoint`: orbax CheckpointManager of train state + data iterator + metadata (frozen base referenced).
* :mod:`input`: encoded6d batches, host-count-invariant global batches, the synthetic dataset builder.
* :mod:`trainer`: the loop used by ``tools/train.py``.
"""
