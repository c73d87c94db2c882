"""Digests of the lowered StableHLO of :mod:`benchmarks.dit_vs_diffusers`' JAX programs (the trainer's train step
and the forward, per size): run it in two checkouts to tell a code change of the compiled programs from noise in a
timing (same digests, same jax/jaxlib: the same executables).

    python -m benchmarks.hlo_digest [small medium ...]

Lowering only (nothing compiled); prints one line per size: ``SIZE train_step DIGEST CHARS forward DIGEST CHARS``.
"""

from __future__ import annotations

import hashlib
import os
import sys


def digests(size_name: str) -> dict[str, tuple[str, int]]:
    """``{program: (sha256 prefix, characters)}`` of the lowered train step and forward of ``size_name``."""
    import jax

    from benchmarks.common import SIZES, build_jax, jax_forward_fn, jax_train_step_fn, load_size_config, make_inputs

    size = SIZES[size_name]
    side = build_jax(load_size_config(size), 0)
    inputs = make_inputs(side.cfg, size.latent, 1)
    step, batch_sh = jax_train_step_fn(side, {k: v.shape for k, v in inputs["train"].items()})
    batch = {k: jax.device_put(v, batch_sh[k]) for k, v in inputs["train"].items()}
    texts = {"train_step": step.lower(side.state, side.frozen, batch).as_text(),
             "forward": jax_forward_fn(side).lower(side.state["trainable"], side.frozen, inputs["latents"],
                                                   inputs["timestep"], inputs["text_embeds"],
                                                   inputs["image_embeds"]).as_text()}
    return {k: (hashlib.sha256(t.encode()).hexdigest()[:16], len(t)) for k, t in texts.items()}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    for name in (argv if argv is not None else sys.argv[1:]) or ["small", "medium"]:
        d = digests(name)
        print(name, " ".join(f"{k} {h} {n}" for k, (h, n) in d.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
