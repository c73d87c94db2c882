"""Layers stacked on a leading 'layers' axis (created once with ``nnx.vmap``) and run with one traced body."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx


def stack_layers(make: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
    """``num_layers`` independently initialised copies of a module, every parameter stacked on a leading axis whose
    logical name is 'layers'."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(r: nnx.Rngs) -> nnx.Module:
        return make(r)

    return create(rngs)


def scan_layers(stack: nnx.Module, x: jax.Array, *args, length: int | None = None, stream: bool = False
                ) -> jax.Array:
    """Runs ``x = layer(x, *args)`` for the first ``length`` (default: all) layers of a stacked module with
    ``jax.lax.scan`` (one traced layer body, whatever the depth). ``stream``: the layers' weights may be in host
    memory; each is brought to the device one layer ahead (:func:`fourdnex_jax.models.streaming.stream_scan`)."""
    graphdef, state = nnx.split(stack)
    if length is not None:
        state = jax.tree.map(lambda a: a[:length], state)
    if stream:
        from fourdnex_jax.models import streaming

        return streaming.stream_scan(lambda weights, h: nnx.merge(graphdef, weights)(h, *args), state, x)

    def body(carry, layer_state):
        return nnx.merge(graphdef, layer_state)(carry, *args), None

    return jax.lax.scan(body, x, state)[0]
