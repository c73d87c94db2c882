"""Building blocks of the Wan2.1 VAE in NNX: causal 3D conv, Wan RMS norm, residual block, attention block, resample.

Layout: activations are NTHWC (batch, frames, height, width, channels) throughout.

Logical axis names of the parameters (given to :func:`fourdnex_jax.models.layers.make_param`):
  * 3D conv kernel ``(kt, kh, kw, in, out)``: ``('conv_t', 'conv_h', 'conv_w', 'conv_in', 'conv_out')``;
  * 2D conv kernel ``(kh, kw, in, out)``: ``('conv_h', 'conv_w', 'conv_in', 'conv_out')``;
  * 1x1 projections of the attention block ``(in, out)``: ``('conv_in', 'conv_out')``;
  * per-channel vectors (conv biases, norm ``scale``): ``('conv_out',)``, the channel axis they act on.

Causal feature cache. Every temporal module is called as ``y, new_cache = module(x, cache)``:
  * ``cache=None`` means "no history": the first chunk of a chunked pass, or a whole clip in one call. The module
    applies diffusers' first-chunk rules and returns a cache of fixed shape;
  * otherwise ``cache`` holds the previous chunk's trailing frames and the output continues the sequence.
A causal conv with ``2p`` frames of time padding caches the last ``2p`` frames of ``concat(cache, x)`` and starts from
zeros, so its cache has one fixed shape from the first chunk on (diffusers caches 1 frame after a 1-frame chunk and
zero-pads the rest, which is the same thing). Calling a module once on a whole clip equals calling it chunk by chunk.

Dtypes: ``param_dtype`` stores parameters, ``dtype`` is the activation dtype. Convs and projections accumulate in
fp32 (``preferred_element_type``) and round once; norms and softmax run in fp32. ``precision`` defaults to HIGHEST so
that fp32 convs do not silently drop to TF32/bf16 passes on GPU/TPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.layers import make_param, torch_linear_init

Cache = Any  # a pytree of arrays (dicts of arrays / None); its structure is fixed after the first chunk
CONV3D_AXES = ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")
CONV2D_AXES = ("conv_h", "conv_w", "conv_in", "conv_out")
CHANNEL_AXES = ("conv_out",)
DEFAULT_PRECISION = jax.lax.Precision.HIGHEST


def sub_cache(cache: Cache, name) -> Cache:
    """The sub-cache of one child, or None while there is no history."""
    return None if cache is None else cache[name]


class CausalConv3d(nnx.Module):
    """3D convolution, causal in time (diffusers ``WanCausalConv3d``).

    x (N, T, H, W, Cin) -> y (N, T', H', W', Cout). Time is padded with ``2 * padding[0]`` frames on the left only
    (zeros, or the cached frames of the previous chunk); height and width are padded symmetrically by ``padding[1:]``.
    Returns ``(y, cache)`` where cache is the last ``2 * padding[0]`` input frames (None when that is 0).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int | Sequence[int], *, stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 precision=DEFAULT_PRECISION):
        kernel, stride, padding = (tuple(v) if isinstance(v, Sequence) else (v,) * 3 for v in (kernel, stride, padding))
        self.stride = stride
        self.context = 2 * padding[0]
        self.spatial_padding = ((padding[1], padding[1]), (padding[2], padding[2]))
        self.dtype, self.precision = dtype, precision
        fan_in = in_dim * kernel[0] * kernel[1] * kernel[2]
        self.kernel = make_param(torch_linear_init(fan_in), rngs.params(), (*kernel, in_dim, out_dim), param_dtype,
                                 CONV3D_AXES)
        self.bias = make_param(torch_linear_init(fan_in), rngs.params(), (out_dim,), param_dtype, CHANNEL_AXES)
        self.pointwise = kernel == (1, 1, 1) and stride == (1, 1, 1)

    def __call__(self, x: jax.Array, cache: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        x = x.astype(self.dtype)
        new_cache = None
        if self.context:
            if cache is None:  # no history: causal zero padding
                cache = jnp.zeros((x.shape[0], self.context, *x.shape[2:]), x.dtype)
            x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
            new_cache = x[:, -self.context:]
        kernel = self.kernel[...].astype(self.dtype)
        if self.pointwise:  # 1x1x1 conv: a plain channel matmul is cheaper than a conv op
            y = jnp.einsum("nthwi,io->nthwo", x, kernel[0, 0, 0], precision=self.precision,
                           preferred_element_type=jnp.float32)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel, window_strides=self.stride, padding=((0, 0), *self.spatial_padding),
                dimension_numbers=("NTHWC", "THWIO", "NTHWC"), precision=self.precision,
                preferred_element_type=jnp.float32)
        return (y + self.bias[...].astype(jnp.float32)).astype(self.dtype), new_cache


class Conv2d(nnx.Module):
    """Per-frame 2D convolution with explicit padding ``((top, bottom), (left, right))``.

    x (N, T, H, W, Cin) -> (N, T, H', W', Cout); frames are folded into the batch."""

    def __init__(self, in_dim: int, out_dim: int, *, stride: int, padding: tuple[tuple[int, int], tuple[int, int]],
                 rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32, precision=DEFAULT_PRECISION):
        self.stride, self.padding = (stride, stride), padding
        self.dtype, self.precision = dtype, precision
        fan_in = in_dim * 9
        self.kernel = make_param(torch_linear_init(fan_in), rngs.params(), (3, 3, in_dim, out_dim), param_dtype,
                                 CONV2D_AXES)
        self.bias = make_param(torch_linear_init(fan_in), rngs.params(), (out_dim,), param_dtype, CHANNEL_AXES)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, t = x.shape[:2]
        y = jax.lax.conv_general_dilated(
            x.reshape(n * t, *x.shape[2:]).astype(self.dtype), self.kernel[...].astype(self.dtype),
            window_strides=self.stride, padding=self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision, preferred_element_type=jnp.float32)
        y = (y + self.bias[...].astype(jnp.float32)).astype(self.dtype)
        return y.reshape(n, t, *y.shape[1:])


class WanRMSNorm(nnx.Module):
    """Wan's "RMS_norm": ``x / max(||x||_2, eps) * sqrt(C) * scale`` over the channel axis (torch ``F.normalize``
    semantics: eps clamps the L2 norm, it is not added to a mean square). Computed in fp32, returned in x's dtype.
    Wan2.1 has no bias (diffusers ``bias=False``)."""

    def __init__(self, dim: int, *, eps: float = 1e-12, param_dtype=jnp.float32):
        self.eps = eps
        self.dim = dim
        self.scale = make_param(nnx.initializers.ones, None, (dim,), param_dtype, CHANNEL_AXES)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
        y = x32 / jnp.maximum(norm, self.eps) * (self.dim ** 0.5) * self.scale[...].astype(jnp.float32)
        return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
    """``conv2(silu(norm2(conv1(silu(norm1(x)))))) + shortcut(x)`` (diffusers ``WanResidualBlock``, eval mode).

    x (N, T, H, W, in_dim) -> (N, T, H, W, out_dim). The shortcut is a 1x1x1 conv when the width changes.
    Cache: ``{'conv1': ..., 'conv2': ...}`` (2 frames each)."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 precision=DEFAULT_PRECISION):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, precision=precision)
        self.norm1 = WanRMSNorm(in_dim, param_dtype=param_dtype)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1, **kw)
        self.norm2 = WanRMSNorm(out_dim, param_dtype=param_dtype)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1, **kw)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1, **kw) if in_dim != out_dim else None

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)[0]
        y, c1 = self.conv1(jax.nn.silu(self.norm1(x)), sub_cache(cache, "conv1"))
        y, c2 = self.conv2(jax.nn.silu(self.norm2(y)), sub_cache(cache, "conv2"))
        return (y + h.astype(y.dtype)), {"conv1": c1, "conv2": c2}


class Pointwise(nnx.Module):
    """1x1 convolution = affine map over the channel axis: (..., in_dim) -> (..., out_dim), fp32 accumulation.
    ``kernel`` is (in, out), the transpose of torch's ``Conv2d(.., 1)`` weight without its 1x1 tail."""

    def __init__(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 precision=DEFAULT_PRECISION):
        self.dtype, self.precision = dtype, precision
        init = torch_linear_init(in_dim)
        self.kernel = make_param(init, rngs.params(), (in_dim, out_dim), param_dtype, ("conv_in", "conv_out"))
        self.bias = make_param(init, rngs.params(), (out_dim,), param_dtype, CHANNEL_AXES)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns fp32 (the caller decides where to round)."""
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                       precision=self.precision, preferred_element_type=jnp.float32)
        return y + self.bias[...].astype(jnp.float32)


class AttentionBlock(nnx.Module):
    """Single-head self-attention over the H*W positions of each frame, plus the input (``WanAttentionBlock``).

    x (N, T, H, W, C) -> same shape. Frames never attend to each other, so it has no cache (returns ``{}``). Logits
    and softmax are fp32, scaled by 1/sqrt(C). ``to_qkv`` (C -> 3C) packs q | k | v along its output axis."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 precision=DEFAULT_PRECISION):
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, precision=precision)
        self.dtype, self.precision = dtype, precision
        self.norm = WanRMSNorm(dim, param_dtype=param_dtype)
        self.to_qkv = Pointwise(dim, 3 * dim, **kw)
        self.proj = Pointwise(dim, dim, **kw)

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        del cache
        n, t, h, w, c = x.shape
        qkv = self.to_qkv(self.norm(x)).astype(self.dtype)
        q, k, v = (a.reshape(n * t, h * w, c) for a in jnp.split(qkv, 3, axis=-1))
        logits = jnp.einsum("bqc,bkc->bqk", q, k, precision=self.precision, preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(logits * (c ** -0.5), axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", probs, v.astype(jnp.float32), precision=self.precision)
        out = self.proj(out.reshape(n, t, h, w, c).astype(self.dtype))
        return (out + x.astype(jnp.float32)).astype(x.dtype), {}


class Resample(nnx.Module):
    """Spatial x2 up/down-sampling, optionally with a causal x2 time resampling (diffusers ``WanResample``).

    Modes (x is (N, T, H, W, C)):
      * ``upsample2d``: nearest x2 in H and W, then a 3x3 conv to ``out_dim`` (default C // 2);
      * ``upsample3d``: first ``time_conv`` (3x1x1, C -> 2C) whose two halves become two consecutive frames, then as
        upsample2d. First-chunk rule: frame 0 of the first chunk skips ``time_conv`` (diffusers' "Rep" marker) and
        the remaining frames start from zero history, so T frames become 1 + 2 (T - 1) on the first call, 2T later;
      * ``downsample2d``: zero-pad right/bottom by 1, 3x3 conv with stride 2;
      * ``downsample3d``: as downsample2d, then ``time_conv`` (3x1x1, stride 2 in time, no padding) over the previous
        chunk's last frame followed by the chunk. First-chunk rule: frame 0 passes through unchanged and the
        strided windows start at frame 0, so T frames become 1 + (T - 1) / 2 on the first call, T / 2 later.
    Cache: ``{'time_conv': frames}`` for the 3d modes (2 frames up, 1 frame down), ``{}`` otherwise.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, out_dim: int | None = None, *, rngs: nnx.Rngs, param_dtype=jnp.float32,
                 dtype=jnp.float32, precision=DEFAULT_PRECISION):
        if mode not in self.MODES:
            raise ValueError(f"unknown resample mode {mode!r}; expected one of {self.MODES}")
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, precision=precision)
        self.mode = mode
        time_conv = None
        if mode.startswith("upsample"):
            out_dim = dim // 2 if out_dim is None else out_dim
            self.conv = Conv2d(dim, out_dim, stride=1, padding=((1, 1), (1, 1)), **kw)
            if mode == "upsample3d":
                time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0), **kw)
        else:
            self.conv = Conv2d(dim, dim, stride=2, padding=((0, 1), (0, 1)), **kw)
            if mode == "downsample3d":
                time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=0, **kw)
        self.time_conv = time_conv

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        new_cache = {}
        if self.mode == "upsample3d":
            x, new_cache = self._time_upsample(x, cache)
        if self.mode.startswith("upsample"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # == torch nearest-exact for an integer factor 2
        x = self.conv(x)
        if self.mode == "downsample3d":
            x, new_cache = self._time_downsample(x, cache)
        return x, new_cache

    @staticmethod
    def _interleave(y: jax.Array) -> jax.Array:
        """(N, T, H, W, 2C) -> (N, 2T, H, W, C): channel half j of frame t becomes frame 2t + j."""
        n, t, h, w, c2 = y.shape
        y = y.reshape(n, t, h, w, 2, c2 // 2)
        return jnp.moveaxis(y, 4, 2).reshape(n, 2 * t, h, w, c2 // 2)

    def _time_upsample(self, x, cache):
        if cache is not None:
            y, state = self.time_conv(x, cache["time_conv"])
            return self._interleave(y), {"time_conv": state}
        head, rest = x[:, :1], x[:, 1:]
        if rest.shape[1] == 0:  # a 1-frame first chunk: only the zero history is cached
            return head, {"time_conv": jnp.zeros((x.shape[0], self.time_conv.context, *x.shape[2:]), x.dtype)}
        y, state = self.time_conv(rest)
        return jnp.concatenate([head, self._interleave(y).astype(head.dtype)], axis=1), {"time_conv": state}

    def _time_downsample(self, x, cache):
        state = x[:, -1:]
        if cache is not None:
            y, _ = self.time_conv(jnp.concatenate([cache["time_conv"].astype(x.dtype), x], axis=1))
            return y, {"time_conv": state}
        if x.shape[1] == 1:
            return x, {"time_conv": state}
        if (x.shape[1] - 1) % 2:
            raise ValueError(f"downsample3d needs 1 + 2k frames on its first call, got {x.shape[1]}")
        y, _ = self.time_conv(x)  # windows (0,1,2), (2,3,4), ...: frame 0 is reused as the first window's history
        return jnp.concatenate([x[:, :1], y.astype(x.dtype)], axis=1), {"time_conv": state}
