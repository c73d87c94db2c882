"""Sharded LoRA training of the 4DNeX DiT (one job per module).

* :mod:`objective`: the 4DNeX flow-matching loss (x_t, target eps - x, MSE; mask and DiT input from the recipe).
* :mod:`optimizer`: AdamW + clipping + LR schedule from ``config.optim`` (a preset of the recipe + overrides).
* :mod:`state`: the train state (trainable fp32 + optimizer state + step + RNG) and the frozen base, sharded.
* :mod:`step`: the jitted train step (gradient accumulation, NaN/inf policy, donated buffers, fixed shardings).
* :mod:`metrics`: MFU, TensorBoard / JSON-lines / console writers.
* :mod:`checkpoint`: orbax CheckpointManager of train state + data iterator state + metadata (frozen base
  referenced, never copied).
* :mod:`plan`: AOT compile + memory analysis of the train step (``fourdnex plan``).
* :mod:`trainer`: the loop used by ``fourdnex train``; its input pipeline is :mod:`fourdnex_jax.data.loader`.
"""
