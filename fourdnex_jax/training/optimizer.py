"""The optimizer of the trainable adapter: ``config.optim`` (a preset of :data:`fourdnex_jax.recipe.OPTIMIZER_PRESETS`
plus explicit overrides) in optax.

``clip_by_global_norm(grad_clip_norm)`` then ``adamw(schedule, b1, b2, eps, weight_decay)`` (decoupled decay on
every trainable tensor, as DeepSpeed's/torch's AdamW with ``weight_decay`` does). Schedule: linear warmup from 0 over
``warmup_steps`` to ``learning_rate``, then ``constant`` or ``linear_decay`` to ``end_learning_rate`` at
``decay_steps`` (default the run length). The default preset, ``reference_effective``, is a constant 2e-5 with betas
(0.9, 0.999): what the reference's DeepSpeed run effectively used (evidence in :mod:`fourdnex_jax.recipe`).

Gradient accumulation is not an optax wrapper: the train step averages the gradients of ``grad_accum_steps``
micro-batches inside one compiled step (:mod:`fourdnex_jax.training.step`), so each optimizer step is one call.
"""

from __future__ import annotations

import dataclasses

import optax

from fourdnex_jax.recipe import OPTIMIZER_PRESETS, SCHEDULES, OptimizerPreset


def resolve(optim_cfg) -> OptimizerPreset:
    """The preset named by ``optim_cfg.preset`` with every non-None field of ``optim_cfg`` applied on top."""
    if optim_cfg.preset not in OPTIMIZER_PRESETS:
        raise ValueError(f"optim.preset must be one of {sorted(OPTIMIZER_PRESETS)}, got {optim_cfg.preset!r}")
    preset = OPTIMIZER_PRESETS[optim_cfg.preset]
    overrides = {f.name: optim_cfg[f.name] for f in dataclasses.fields(preset) if optim_cfg.get(f.name) is not None}
    out = dataclasses.replace(preset, **overrides)
    if out.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {out.schedule!r}")
    return out


def learning_rate_schedule(optim_cfg, num_steps: int) -> optax.Schedule:
    """LR of the update applied at step ``s`` (0-based), see the module docstring."""
    o = resolve(optim_cfg)
    peak, warmup = float(o.learning_rate), int(o.warmup_steps)
    if o.schedule == "constant":
        after = optax.constant_schedule(peak)
    else:
        total = int(optim_cfg.decay_steps) or int(num_steps)
        after = optax.linear_schedule(peak, float(o.end_learning_rate), max(total - warmup, 1))
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(optim_cfg, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    o = resolve(optim_cfg)
    schedule = learning_rate_schedule(optim_cfg, num_steps)
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(o.grad_clip_norm)))
    parts.append(optax.adamw(schedule, b1=float(o.b1), b2=float(o.b2), eps=float(o.eps),
                             weight_decay=float(o.weight_decay)))
    return optax.chain(*parts), schedule
