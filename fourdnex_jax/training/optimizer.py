"""The optimizer of the trainable adapter: the 4DNeX preset (DeepSpeed AdamW + WarmupDecayLR) in optax.

``clip_by_global_norm(grad_clip_norm)`` then ``adamw(schedule, b1, b2, eps, weight_decay)`` (decoupled decay on
every trainable tensor, as DeepSpeed's AdamW with ``weight_decay`` does). Schedule: linear warmup from 0 over
``warmup_steps`` to ``learning_rate``, then linear decay to ``end_learning_rate`` at ``decay_steps`` (default the
run length), which is what the reference's DeepSpeed ``WarmupDecayLR`` runs (its CLI ``constant_with_warmup`` is
overridden by the ZeRO-2 json; reference §3). DeepSpeed's default warmup curve is logarithmic; a linear warmup is
used here (the 100 warmup steps are 2% of a 5,000-step run).

Gradient accumulation is not an optax wrapper: the train step averages the gradients of ``grad_accum_steps``
micro-batches inside one compiled step (:mod:`fourdnex_jax.training.step`), so each optimizer step is one call.
"""

from __future__ import annotations

import optax


def learning_rate_schedule(optim_cfg, num_steps: int) -> optax.Schedule:
    peak = float(optim_cfg.learning_rate)
    warmup = int(optim_cfg.warmup_steps)
    total = int(optim_cfg.decay_steps) or int(num_steps)
    end = float(optim_cfg.end_learning_rate)
    warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
    decay = optax.linear_schedule(peak, end, max(total - warmup, 1))
    if warmup <= 0:
        return decay
    return optax.join_schedules([warm, decay], [warmup])


def make_optimizer(optim_cfg, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(optim_cfg, num_steps)
    parts = []
    if optim_cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(optim_cfg.grad_clip_norm)))
    parts.append(optax.adamw(schedule, b1=float(optim_cfg.b1), b2=float(optim_cfg.b2), eps=float(optim_cfg.eps),
                             weight_decay=float(optim_cfg.weight_decay)))
    return optax.chain(*parts), schedule
