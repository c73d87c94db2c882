"""Token layouts: patchify/unpatchify, the RGB+XYZ modality layouts of 4DNeX and their position/domain ids.

All functions are pure layout code (no learned parameters) on NTHWC latents; tokens are flattened in (t, h, w)
order, the order of diffusers' ``Conv3d(...).flatten(2)``.

Modality layouts (how one RGB latent ``a`` and one XYZ latent ``b``, both (B, T, H, W, C), become one DiT input):

==========  ==========================  ==========================================  =====================
layout      fused latent                RoPE positions                              domain id (0=RGB)
==========  ==========================  ==========================================  =====================
``width``   concat on W: (B,T,H,2W,C)   w mod W/2: token (t,h,w) and (t,h,w+W/2)    w >= W/2
                                        share a phase (4DNeX "samerope")
``height``  concat on H: (B,T,2H,W,C)   h mod H/2                                   h >= H/2
``frame``   concat on T: (B,2T,H,W,C)   t mod T/2                                   t >= T/2
``channel`` concat on C: (B,T,H,W,2C)   plain                                       none
``batch``   interleave: (2B,T,H,W,C)    plain                                       batch index mod 2
``none``    plain Wan (RGB only)        plain                                       none
==========  ==========================  ==========================================  =====================

(Positions above are in patch units, i.e. on the post-patchify grid.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange

# Grid axis (t=0, h=1, w=2) doubled by each token-fusing layout; None for layouts that do not fuse tokens.
_FUSED_GRID_AXIS = {"width": 2, "height": 1, "frame": 0, "channel": None, "batch": None, "none": None}
# Latent axis (NTHWC) along which each layout concatenates the modalities.
_FUSE_AXIS = {"width": 3, "height": 2, "frame": 1, "channel": 4}


def patchify(x: jax.Array, patch_size: tuple[int, int, int]) -> jax.Array:
    """(B, T, H, W, C) -> (B, L, pt*ph*pw*C) with L = T/pt * H/ph * W/pw; features ordered (pt, ph, pw, C)."""
    pt, ph, pw = patch_size
    b, t, h, w, c = x.shape
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent (T,H,W)=({t},{h},{w}) is not divisible by the patch size {patch_size}")
    return rearrange(x, "b (f pt) (g ph) (k pw) c -> b (f g k) (pt ph pw c)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: jax.Array, grid: tuple[int, int, int], patch_size: tuple[int, int, int]) -> jax.Array:
    """Inverse of :func:`patchify`: (B, L, pt*ph*pw*C) -> (B, T, H, W, C)."""
    f, g, k = grid
    pt, ph, pw = patch_size
    return rearrange(tokens, "b (f g k) (pt ph pw c) -> b (f pt) (g ph) (k pw) c", f=f, g=g, k=k, pt=pt, ph=ph, pw=pw)


def patch_grid(latent_shape: tuple[int, ...], patch_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """Post-patchify (frames, height, width) grid of an NTHWC latent shape."""
    _, t, h, w, _ = latent_shape
    return t // patch_size[0], h // patch_size[1], w // patch_size[2]


def check_grid(layout: str, grid: tuple[int, int, int]) -> None:
    axis = _FUSED_GRID_AXIS[layout]
    if axis is not None and grid[axis] % 2:
        raise ValueError(f"layout {layout!r} needs an even number of patches along grid axis {'thw'[axis]}, got "
                         f"grid {grid}: the latent must hold two equal modality halves")


def position_ids(layout: str, grid: tuple[int, int, int]) -> jax.Array:
    """(L, 3) int32 RoPE positions (t, h, w) of the tokens of a fused latent with post-patchify ``grid``."""
    check_grid(layout, grid)
    f, g, k = grid
    t, h, w = jnp.meshgrid(jnp.arange(f), jnp.arange(g), jnp.arange(k), indexing="ij")
    ids = [t, h, w]
    axis = _FUSED_GRID_AXIS[layout]
    if axis is not None:  # the second modality repeats the first one's positions ("shared RoPE")
        ids[axis] = ids[axis] % (grid[axis] // 2)
    return jnp.stack([i.reshape(-1) for i in ids], axis=-1).astype(jnp.int32)


def domain_ids(layout: str, grid: tuple[int, int, int], batch_size: int) -> jax.Array | None:
    """(B, L) or (1, L) int32 modality of each token (0 = RGB, 1 = XYZ); None for single-group layouts."""
    check_grid(layout, grid)
    f, g, k = grid
    if layout in ("none", "channel"):
        return None
    if layout == "batch":
        if batch_size % 2:
            raise ValueError(f"layout 'batch' needs an even batch (RGB/XYZ pairs), got {batch_size}")
        return (jnp.arange(batch_size) % 2).astype(jnp.int32)[:, None]
    axis = _FUSED_GRID_AXIS[layout]
    idx = jnp.meshgrid(jnp.arange(f), jnp.arange(g), jnp.arange(k), indexing="ij")[axis]
    return (idx >= grid[axis] // 2).astype(jnp.int32).reshape(1, -1)


def fuse(rgb: jax.Array, xyz: jax.Array, layout: str) -> jax.Array:
    """Combines RGB and XYZ latents (B, T, H, W, C each) into the DiT input of ``layout``."""
    if rgb.shape != xyz.shape:
        raise ValueError(f"RGB and XYZ latents differ in shape: {rgb.shape} vs {xyz.shape}")
    if layout == "none":
        raise ValueError("layout 'none' holds RGB only; there is nothing to fuse")
    if layout == "batch":
        return rearrange(jnp.stack([rgb, xyz], axis=1), "b m t h w c -> (b m) t h w c")
    return jnp.concatenate([rgb, xyz], axis=_FUSE_AXIS[layout])


def split(fused: jax.Array, layout: str) -> tuple[jax.Array, jax.Array]:
    """Inverse of :func:`fuse`: returns (rgb, xyz)."""
    if layout == "none":
        raise ValueError("layout 'none' holds RGB only; there is nothing to split")
    if layout == "batch":
        pair = rearrange(fused, "(b m) t h w c -> b m t h w c", m=2)
        return pair[:, 0], pair[:, 1]
    rgb, xyz = jnp.split(fused, 2, axis=_FUSE_AXIS[layout])
    return rgb, xyz
