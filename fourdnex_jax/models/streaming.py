"""Layer weights streamed from host memory: a stacked module's weights live in host memory (JAX memory kinds,
``pinned_host``) and each layer's slice is brought to the device one layer ahead of its use inside the layer scan.

Inside the scan the carry holds the block being computed and the next one, already on its way: the transfer of
block i + 1 (``jax.device_put`` to device memory) does not depend on block i's compute, so the scheduler can overlap
the two (XLA's async host-to-device copies on GPU / TPU). Two blocks of weights are on the device at a time instead
of all of them. The values are the same arrays, so a streamed pass computes exactly what the resident one does.

Where the weights are is the caller's choice (:func:`host_shardings` places the ``blocks`` leaves of a state's
shardings in host memory); :func:`stream_scan` works as well on weights already on the device (the transfer is then
a no-op), so a model configured to stream runs unchanged on a backend or a test without host memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

#: The memory kind streamed weights live in (page-locked host memory: the device can DMA from it).
HOST_MEMORY = "pinned_host"
#: The image-to-4D pipeline's models whose stacked ``blocks`` stream (the DiT and UMT5).
STREAMED_MODELS = ("transformer", "text_encoder")


def to_device(tree: Any) -> Any:
    """``tree``'s arrays in device memory, their shardings otherwise unchanged (inside ``jit``: a host-to-device
    transfer; a no-op for arrays already there)."""
    return jax.tree.map(lambda a: jax.device_put(a, jax.memory.Space.Device), tree)


def stream_scan(layer: Callable[[Any, jax.Array], jax.Array], stacked: Any, x: jax.Array) -> jax.Array:
    """``x = layer(layer_weights_i, x)`` for i = 0 .. L-1 over ``stacked`` (a pytree whose leaves carry a leading
    layers axis of L, typically in host memory), with layer i + 1's weights transferred to the device while layer
    i computes (one layer of prefetch: two layers' weights on the device at a time; the per-layer vectors of
    every layer stay on the device during the scan). The last iteration fetches layer L-1 again (a fixed loop
    body; 1/L more traffic)."""
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    # vectors per layer ((L, d): norms, biases) come to the device whole, once: they are small, and the TPU compiler
    # cannot slice one row of a packed (bf16) host-memory array ("Sublane slicing size must be multiple of element
    # packing factor"); the matrices ((L, ..., m, n)) are sliced on their layer axis, a major one
    stacked = jax.tree.map(lambda a: to_device(a) if a.ndim <= 2 else a, stacked)

    def weights(i):
        return to_device(jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), stacked))

    def step(carry, i):
        h, current = carry
        upcoming = weights(jax.numpy.minimum(i + 1, num_layers - 1))  # independent of h: overlaps layer i
        return (layer(current, h), upcoming), None

    (x, _), _ = jax.lax.scan(step, (x, weights(0)), jax.numpy.arange(num_layers))
    return x


def streamed(model: nnx.Module) -> nnx.Module:
    """A module sharing ``model``'s weights that streams its stacked ``blocks``: the DiT with
    ``config.stream_blocks=True``, UMT5 with ``stream_blocks = True``. ``model`` itself is unchanged."""
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)
    config = getattr(copy, "config", None)
    if hasattr(config, "stream_blocks"):
        copy.config = config.replace(stream_blocks=True)
    elif hasattr(copy, "stream_blocks"):
        copy.stream_blocks = True
    else:
        raise TypeError(f"{type(model).__name__} cannot stream its blocks (no stream_blocks setting)")
    return copy


def is_streamed(path: tuple, prefix: str = "blocks") -> bool:
    """Whether a state path (of ``nnx.State`` / ``jax.tree_util`` keys) is under ``prefix`` (the stacked blocks)."""
    if not path:
        return False
    first = path[0]
    return getattr(first, "key", getattr(first, "name", first)) == prefix


def host_shardings(shardings: Any, prefix: str = "blocks") -> Any:
    """``shardings`` (a pytree of ``Sharding``s, e.g. :func:`fourdnex_jax.sharding.state_shardings` of a DiT's state)
    with the leaves under ``prefix`` moved to host memory (:data:`HOST_MEMORY`), the rest unchanged."""
    return jax.tree_util.tree_map_with_path(
        lambda path, s: s.with_memory_kind(HOST_MEMORY) if is_streamed(path, prefix) else s, shardings)
