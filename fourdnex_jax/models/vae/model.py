"""The Wan2.1 video VAE (diffusers ``AutoencoderKLWan``) in Flax NNX: encoder, decoder and chunked encode/decode.

Shapes (NTHWC; F = 4 frames per latent frame, S = 8 pixels per latent pixel for Wan2.1):
  * ``encode``: video (N, 1 + F*k, H, W, in_channels) in [-1, 1] -> :class:`LatentDist` with ``mean`` and ``logvar``
    of shape (N, 1 + k, H/S, W/S, z_dim). Like diffusers, trailing frames that do not fill a chunk are dropped.
  * ``decode``: latents (N, T, h, w, z_dim) (unnormalised, as ``encode`` returns them) -> video
    (N, 1 + F*(T-1), h*S, w*S, out_channels), clipped to [-1, 1].

Chunking (``chunked=True``, the default) follows diffusers exactly: the encoder sees frame 0, then chunks of 4 frames;
the decoder sees one latent frame at a time; causal convs carry their trailing frames in a cache (see
:mod:`fourdnex_jax.models.vae.layers`). Chunk 0 runs outside ``jax.lax.scan`` and every later chunk inside it: chunk 0
has a different shape (1 input frame vs 4 for encode, 1 output frame vs 4 for decode), takes the first-chunk rules of
the temporal resamplers, and creates every cache as a fixed-shape array (zeros where diffusers has no history yet),
so from chunk 1 on shapes and cache structure are constant and one compiled body serves all chunks. Temporary
memory therefore does not grow with the number of frames (only the output buffer does; see benchmarks/vae_memory.py).
``chunked=False`` runs the same modules once on the whole clip
(same result; used to test the cache bookkeeping).

Tiling in space (``decode(tile=(th, tw))``): the decoder is its latent stage (``conv_in`` + mid block, whose
attention is global over each frame) and its pixel stage (up blocks + head: convolutions, per-pixel norms, nearest
upsampling only). The latent stage runs on the whole latent map; the pixel stage, which holds the full-resolution
activations and most of the causal caches (~12 GiB of the 14B pipeline's 480 x 1440 decode), runs one tile at a
time on a window of the tile plus the decoder's receptive field (:func:`~fourdnex_jax.models.vae.config.decoder_halo`,
13 latent pixels for Wan2.1), so every output pixel is computed from the same inputs as in the whole decode.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.vae.config import WanVAEConfig, decoder_halo, decoder_plan, encoder_plan
from fourdnex_jax.models.vae.layers import (
    DEFAULT_PRECISION,
    AttentionBlock,
    Cache,
    CausalConv3d,
    Resample,
    ResidualBlock,
    WanRMSNorm,
    sub_cache,
)

ENCODE_CHUNK = 4  # frames per encoder chunk after the first frame (hard-coded in diffusers' ``_encode``)
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers DiagonalGaussianDistribution clamp


class LatentDist(NamedTuple):
    """Diagonal Gaussian posterior, NTHWC: ``mean`` (= the mode) and clamped ``logvar``."""

    mean: jax.Array
    logvar: jax.Array

    def mode(self) -> jax.Array:
        return self.mean

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(0.5 * self.logvar) * jax.random.normal(key, self.mean.shape, self.mean.dtype)


class MidBlock(nnx.Module):
    """residual -> attention -> residual at constant width (diffusers ``WanMidBlock`` with one attention layer).
    Cache: ``{'resnets': (c0, c1)}``."""

    def __init__(self, dim: int, **kw):
        self.resnets = nnx.List([ResidualBlock(dim, dim, **kw), ResidualBlock(dim, dim, **kw)])
        self.attentions = nnx.List([AttentionBlock(dim, **kw)])

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        caches = sub_cache(cache, "resnets")
        x, c0 = self.resnets[0](x, sub_cache(caches, 0))
        x, _ = self.attentions[0](x)
        x, c1 = self.resnets[1](x, sub_cache(caches, 1))
        return x, {"resnets": (c0, c1)}


def _run_list(layers, x: jax.Array, cache: Cache) -> tuple[jax.Array, tuple]:
    """Runs cached modules in order (the cache is a tuple aligned with ``layers``)."""
    new = []
    for i, layer in enumerate(layers):
        x, c = layer(x, sub_cache(cache, i))
        new.append(c)
    return x, tuple(new)


class Encoder(nnx.Module):
    """Video (N, T, H, W, in_channels) -> (N, T', H/S, W/S, 2 * z_dim) moments before ``quant_conv``
    (diffusers ``WanEncoder3d``). Cache keys: conv_in, down_blocks, mid_block, conv_out."""

    def __init__(self, cfg: WanVAEConfig, **kw):
        plan, mid_dim = encoder_plan(cfg)
        self.conv_in = CausalConv3d(cfg.in_channels, cfg.base_dim, 3, padding=1, **kw)
        blocks = []
        for spec in plan:
            if spec.kind == "residual":
                blocks.append(ResidualBlock(spec.in_dim, spec.out_dim, **kw))
            elif spec.kind == "attention":
                blocks.append(AttentionBlock(spec.out_dim, **kw))
            else:
                blocks.append(Resample(spec.out_dim, spec.kind, **kw))
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(mid_dim, **kw)
        self.norm_out = WanRMSNorm(mid_dim, param_dtype=kw["param_dtype"])
        self.conv_out = CausalConv3d(mid_dim, 2 * cfg.z_dim, 3, padding=1, **kw)

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        x, c_in = self.conv_in(x, sub_cache(cache, "conv_in"))
        x, c_down = _run_list(self.down_blocks, x, sub_cache(cache, "down_blocks"))
        x, c_mid = self.mid_block(x, sub_cache(cache, "mid_block"))
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), sub_cache(cache, "conv_out"))
        return x, {"conv_in": c_in, "down_blocks": c_down, "mid_block": c_mid, "conv_out": c_out}


class UpBlock(nnx.Module):
    """Residual blocks then an optional resampler that doubles H, W (and T for upsample3d) and halves the
    channels (diffusers ``WanUpBlock``). Cache: ``{'resnets': (...), 'upsampler': {...}}``."""

    def __init__(self, in_dim: int, out_dim: int, num_resnets: int, upsample: str | None, **kw):
        dims = [in_dim] + [out_dim] * num_resnets
        self.resnets = nnx.List([ResidualBlock(a, b, **kw) for a, b in zip(dims[:-1], dims[1:])])
        self.upsampler = Resample(out_dim, upsample, **kw) if upsample else None

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        x, c_res = _run_list(self.resnets, x, sub_cache(cache, "resnets"))
        c_up = {}
        if self.upsampler is not None:
            x, c_up = self.upsampler(x, sub_cache(cache, "upsampler"))
        return x, {"resnets": c_res, "upsampler": c_up}


class Decoder(nnx.Module):
    """Latents (N, T, h, w, z_dim) after ``post_quant_conv`` -> video (N, T', h*S, w*S, out_channels), unclipped
    (diffusers ``WanDecoder3d``). Cache keys: conv_in, mid_block, up_blocks, conv_out."""

    def __init__(self, cfg: WanVAEConfig, **kw):
        mid_dim, plan = decoder_plan(cfg)
        self.conv_in = CausalConv3d(cfg.z_dim, mid_dim, 3, padding=1, **kw)
        self.mid_block = MidBlock(mid_dim, **kw)
        self.up_blocks = nnx.List([UpBlock(*spec, **kw) for spec in plan])
        out_dim = plan[-1].out_dim
        self.norm_out = WanRMSNorm(out_dim, param_dtype=kw["param_dtype"])
        self.conv_out = CausalConv3d(out_dim, cfg.out_channels, 3, padding=1, **kw)

    def __call__(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        x, c_latent = self.latent_stage(x, cache)
        x, c_pixel = self.pixel_stage(x, cache)
        return x, {**c_latent, **c_pixel}

    def latent_stage(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        """``conv_in`` + mid block at the latent resolution: (N, T, h, w, z_dim) -> (N, T, h, w, mid_dim). Holds the
        decoder's only attention (global over each frame), so a tiled decode runs it on the whole map. Cache keys:
        conv_in, mid_block."""
        x, c_in = self.conv_in(x, sub_cache(cache, "conv_in"))
        x, c_mid = self.mid_block(x, sub_cache(cache, "mid_block"))
        return x, {"conv_in": c_in, "mid_block": c_mid}

    def pixel_stage(self, x: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        """Up blocks + ``norm_out`` + ``conv_out``: (N, T, h, w, mid_dim) -> (N, T', h*S, w*S, out_channels).
        Only convolutions, per-pixel norms and nearest upsampling: each output pixel sees at most
        :func:`~fourdnex_jax.models.vae.config.decoder_halo` latent pixels around it, so it tiles exactly with
        that halo. Cache keys: up_blocks, conv_out."""
        x, c_up = _run_list(self.up_blocks, x, sub_cache(cache, "up_blocks"))
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), sub_cache(cache, "conv_out"))
        return x, {"up_blocks": c_up, "conv_out": c_out}


def _scan_chunks(module: nnx.Module, first: jax.Array, rest: jax.Array | None) -> jax.Array:
    """Runs ``module`` on chunk ``first`` (no history), then scans it over ``rest`` (K, N, t, ...) carrying the
    cache. Returns the outputs concatenated in time: (N, T_first + K * t_out, ...)."""
    y0, cache = module(first)
    if rest is None or rest.shape[0] == 0:
        return y0

    def step(carry, chunk):
        y, carry = module(chunk, carry)
        return carry, y

    _, ys = jax.lax.scan(step, cache, rest)  # (K, N, t_out, ...)
    ys = jnp.moveaxis(ys, 0, 1)
    ys = ys.reshape(ys.shape[0], ys.shape[1] * ys.shape[2], *ys.shape[3:])
    return jnp.concatenate([y0, ys.astype(y0.dtype)], axis=1)


def tile_windows(size: int, core: int, halo: int) -> tuple[int, int, list[int], list[int]]:
    """Tiles of one spatial axis of ``size`` latent pixels: ``(core, window, core_starts, window_starts)``.

    Cores of ``core`` pixels cover ``[0, size)`` (the last one moved back to end at ``size``, overlapping its
    neighbour); each window is ``core + 2 * halo`` pixels centred on its core and shifted to lie inside the axis,
    so a core is at least ``halo`` pixels from every window edge that is not the axis's edge. When a window would
    cover the whole axis the axis is not tiled (one core = one window = the axis)."""
    if core < 1 or halo < 0:
        raise ValueError(f"tile core {core} / halo {halo}: use core >= 1 and halo >= 0")
    if core + 2 * halo >= size:
        return size, size, [0], [0]
    window = core + 2 * halo
    cores = [min(i * core, size - core) for i in range(-(-size // core))]
    windows = [min(max(c - halo, 0), size - window) for c in cores]
    return core, window, cores, windows


class WanVAE(nnx.Module):
    """``AutoencoderKLWan`` (Wan2.1): ``encoder`` + ``quant_conv`` and ``post_quant_conv`` + ``decoder``.

    Parameter tree (torch names in brackets where they differ): ``encoder``, ``quant_conv``, ``post_quant_conv``,
    ``decoder``; norms hold ``scale`` [gamma]; resamplers hold ``conv`` [resample.1] and ``time_conv``; decoder up
    blocks hold ``upsampler`` [upsamplers.0]; attention blocks hold ``to_qkv``/``proj`` as (in, out) matrices.
    """

    def __init__(self, config: WanVAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32,
                 precision=DEFAULT_PRECISION):
        self.config = config
        self.dtype = dtype
        kw = dict(rngs=rngs, param_dtype=param_dtype, dtype=dtype, precision=precision)
        z = config.z_dim
        self.encoder = Encoder(config, **kw)
        self.quant_conv = CausalConv3d(2 * z, 2 * z, 1, **kw)
        self.post_quant_conv = CausalConv3d(z, z, 1, **kw)
        self.decoder = Decoder(config, **kw)

    # ------------------------------------------------------------------------------------------------------------
    def encode(self, video: jax.Array, *, chunked: bool = True) -> LatentDist:
        """video (N, T, H, W, C) in [-1, 1] -> :class:`LatentDist` (N, 1 + (T-1)//4, H/8, W/8, z_dim)."""
        n, t = video.shape[:2]
        k = (t - 1) // ENCODE_CHUNK
        video = video[:, : 1 + ENCODE_CHUNK * k].astype(self.dtype)  # diffusers drops an incomplete last chunk
        if chunked:
            rest = video[:, 1:].reshape(n, k, ENCODE_CHUNK, *video.shape[2:])
            h = _scan_chunks(self.encoder, video[:, :1], jnp.moveaxis(rest, 1, 0))
        else:
            h, _ = self.encoder(video)
        h, _ = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return LatentDist(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    def decode(self, latents: jax.Array, *, chunked: bool = True, split_halves: bool = False,
               clip: bool = True, tile: tuple[int, int] | None = None, halo: int | None = None) -> jax.Array:
        """latents (N, T, h, w, z_dim) -> video (N, 1 + 4 (T-1), 8h, 8w, C), clipped to [-1, 1] like diffusers.

        ``split_halves``: decode the left and right width halves (4DNeX's RGB | XYZ fused latent) independently and
        concatenate them. Not equivalent to the fused decode: convs and the mid-block attention see across the seam.
        ``clip=False`` returns the raw decoder output (for tests).
        ``tile=(th, tw)``: the spatially tiled decode (:meth:`_decode_tiled`, same result as the whole decode to fp
        rounding): the pixel stage runs on one (th, tw) latent core at a time with ``halo`` latent pixels around
        it (default :func:`~fourdnex_jax.models.vae.config.decoder_halo`, the exact one; a smaller ``halo`` is
        only for tests that show the seams).
        """
        if tile is not None and not split_halves:
            x, _ = self.post_quant_conv(latents.astype(self.dtype))
            out = self._decode_tiled(x, tile, decoder_halo(self.config) if halo is None else halo, chunked)
            return jnp.clip(out, -1.0, 1.0) if clip else out
        if split_halves:
            w = latents.shape[3]
            if w % 2:
                raise ValueError(f"split_halves needs an even latent width, got {w}")
            halves = [self.decode(latents[:, :, :, s], chunked=chunked, clip=clip, tile=tile, halo=halo)
                      for s in (slice(0, w // 2), slice(w // 2, w))]
            return jnp.concatenate(halves, axis=3)
        x, _ = self.post_quant_conv(latents.astype(self.dtype))
        if chunked:
            out = _scan_chunks(self.decoder, x[:, :1], jnp.moveaxis(x[:, 1:, None], 1, 0))
        else:
            out, _ = self.decoder(x)
        return jnp.clip(out, -1.0, 1.0) if clip else out

    def _decode_tiled(self, x: jax.Array, tile: tuple[int, int], halo: int, chunked: bool) -> jax.Array:
        """``decoder`` on ``x`` (N, T, h, w, z_dim) after ``post_quant_conv``, tiled in space (and chunked in time).

        The latent stage (conv_in + mid block, whose attention is global per frame) runs once on the whole map,
        chunk by chunk: (N, T, h, w, mid_dim), small (1/8 x 1/8 of the pixels, 384 channels for Wan2.1). The pixel
        stage, where the memory is (full-resolution activations and the causal caches of every conv), then runs
        one spatial tile at a time (``lax.scan`` over the tiles; inside, the causal time chunks as in the whole
        decode): the window is the tile's (th, tw) core plus ``halo`` latent pixels on each side, shifted to stay
        inside the map (a window edge on the map's edge pads as the whole decode does), and only the core's
        pixels are written out. With ``halo >= decoder_halo(config)`` no core pixel sees a window edge that is not
        the map's, so the result equals the untiled decode (up to the convolutions' summation order). Memory:
        the pixel stage's temporaries and caches scale with the window area instead of the frame area; compute
        grows by the summed window area over the frame area."""
        n, t, h, w, _ = x.shape
        s = self.config.spatial_factor
        feats = (_scan_chunks(self.decoder.latent_stage, x[:, :1], jnp.moveaxis(x[:, 1:, None], 1, 0)) if chunked
                 else self.decoder.latent_stage(x)[0])
        (core_h, win_h, ch, wh), (core_w, win_w, cw, ww) = (tile_windows(size, core, halo)
                                                            for size, core in zip((h, w), tile))
        grid = [(a, b, c, d) for a, b in zip(ch, wh) for c, d in zip(cw, ww)]
        starts = jnp.asarray(grid, jnp.int32)  # (tiles, 4): core h, window h, core w, window w
        t_out = 1 + self.config.temporal_factor * (t - 1)
        out_channels = self.config.out_channels

        def one_tile(video, start):
            c_h, w_h, c_w, w_w = start[0], start[1], start[2], start[3]
            z = jax.lax.dynamic_slice(feats, (0, 0, w_h, w_w, 0), (n, t, win_h, win_w, feats.shape[-1]))
            if chunked:
                y = _scan_chunks(self.decoder.pixel_stage, z[:, :1], jnp.moveaxis(z[:, 1:, None], 1, 0))
            else:
                y, _ = self.decoder.pixel_stage(z)
            core = jax.lax.dynamic_slice(y, (0, 0, (c_h - w_h) * s, (c_w - w_w) * s, 0),
                                         (n, t_out, core_h * s, core_w * s, out_channels))
            return jax.lax.dynamic_update_slice(video, core.astype(video.dtype), (0, 0, c_h * s, c_w * s, 0)), None

        video = jnp.zeros((n, t_out, h * s, w * s, out_channels), self.dtype)
        return jax.lax.scan(one_tile, video, starts)[0]

    # ------------------------------------------------------------------------------------------------------------
    def normalize_latents(self, latents: jax.Array) -> jax.Array:
        """``(z - mean) * (1 / std)`` per channel (last axis), as the diffusers Wan pipelines write it."""
        mean, inv_std = self._latent_stats()
        return ((latents.astype(jnp.float32) - mean) * inv_std).astype(latents.dtype)

    def denormalize_latents(self, latents: jax.Array) -> jax.Array:
        """Inverse of :meth:`normalize_latents`: ``z / (1 / std) + mean`` (diffusers' decode-side expression)."""
        mean, inv_std = self._latent_stats()
        return (latents.astype(jnp.float32) / inv_std + mean).astype(latents.dtype)

    def _latent_stats(self) -> tuple[jax.Array, jax.Array]:
        mean = jnp.asarray(self.config.latents_mean, jnp.float32)
        inv_std = 1.0 / jnp.asarray(self.config.latents_std, jnp.float32)
        return mean, inv_std
