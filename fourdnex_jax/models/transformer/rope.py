"""Wan's 3-axis rotary position embedding (interleaved pairs), with tables built on the host in float64.

The head dimension is split into time/height/width parts of ``head_dim - 4*(head_dim//6)``, ``2*(head_dim//6)``
and ``2*(head_dim//6)`` channels (44/42/42 for 128). Each part rotates *adjacent* channel pairs (x[2j], x[2j+1]) by
``pos * theta**(-2j/part_dim)`` — Wan's ``view_as_complex(x.reshape(..., -1, 2))`` convention, not LLaMA's
rotate-half. Angles and their cos/sin are computed in float64 exactly as diffusers does and rounded once to fp32
(diffusers' ``.float()``), so the fp32 tables are bit-identical to the reference. Position ids come from
:mod:`fourdnex_jax.models.transformer.layouts`; the rotation itself runs in fp32 and rounds once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the (t, h, w) parts of a head."""
    h = w = 2 * (head_dim // 6)
    return head_dim - h - w, h, w


@functools.lru_cache(maxsize=32)
def axis_tables(head_dim: int, max_len: int, theta: float = 10000.0) -> tuple[np.ndarray, ...]:
    """Per-axis fp32 tables ``(cos_t, sin_t, cos_h, sin_h, cos_w, sin_w)``, each (max_len, part_dim // 2)."""
    out = []
    for dim in axis_dims(head_dim):
        inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        angles = np.outer(np.arange(max_len, dtype=np.float64), inv_freq)
        out += [np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)]
    for t in out:
        t.setflags(write=False)
    return tuple(out)


def rope_cos_sin(position_ids: jax.Array, head_dim: int, max_len: int, theta: float = 10000.0
                 ) -> tuple[jax.Array, jax.Array]:
    """cos/sin per token and channel pair.

    Args:
      position_ids: (L, 3) integer (t, h, w) positions, each < ``max_len``.
    Returns:
      cos, sin: (L, head_dim // 2) fp32; pair j of a head rotates by the angle whose cos is ``cos[:, j]``.
    """
    ct, st, ch, sh, cw, sw = (jnp.asarray(t) for t in axis_tables(head_dim, max_len, theta))
    t, h, w = position_ids[:, 0], position_ids[:, 1], position_ids[:, 2]
    cos = jnp.concatenate([ct[t], ch[h], cw[w]], axis=-1)
    sin = jnp.concatenate([st[t], sh[h], sw[w]], axis=-1)
    return cos, sin


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates interleaved channel pairs of ``x`` (B, L, H, D) by cos/sin (L, D // 2); fp32 math, one rounding."""
    b, l, h, d = x.shape
    pairs = x.astype(jnp.float32).reshape(b, l, h, d // 2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    return out.reshape(b, l, h, d).astype(x.dtype)
