"""Novel-view video of a dynamic point cloud: z-buffered point splatting in JAX (CPU or accelerator).

Output frame i shows the point cloud of time ``i mod T`` from camera ``c2w[i]``. Every valid point is projected
to the nearest pixel and splatted as a ``splat x splat`` square at its depth; a scatter-min keeps the nearest depth
per pixel and a second scatter-min the index of the nearest point (deterministic ties: lowest index). Pixels no
point reaches keep the ``hole_color`` (holes are visible, not in-painted) and are reported in ``holes``.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("height", "width", "splat"))
def splat_frame(points: jnp.ndarray, colors: jnp.ndarray, keep: jnp.ndarray, w2c: jnp.ndarray, K: jnp.ndarray,
                height: int, width: int, splat: int = 1, near: float = 1e-3):
    """points (N, 3) world, colors (N, 3) uint8, keep (N,) bool, w2c (4, 4), K (3, 3) ->
    (image (H, W, 3) uint8 with holes black, depth (H, W) float32 (inf = hole), hole (H, W) bool)."""
    n = points.shape[0]
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = p[:, 2]
    zs = jnp.where(z > near, z, 1.0)
    u = K[0, 0] * p[:, 0] / zs + K[0, 2]
    v = K[1, 1] * p[:, 1] / zs + K[1, 2]
    off = (splat - 1) / 2.0
    ui0 = jnp.floor(u - off + 0.5).astype(jnp.int32)
    vi0 = jnp.floor(v - off + 0.5).astype(jnp.int32)
    ok = keep & (z > near)
    dd, ii = [], []
    for dy in range(splat):
        for dx in range(splat):
            ui, vi = ui0 + dx, vi0 + dy
            inside = ok & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
            ii.append(jnp.where(inside, vi * width + ui, height * width))  # out of range -> dropped slot
            dd.append(jnp.where(inside, z, jnp.inf))
    idx, dep = jnp.concatenate(ii), jnp.concatenate(dd)
    pid = jnp.tile(jnp.arange(n, dtype=jnp.int32), splat * splat)
    zbuf = jnp.full((height * width + 1,), jnp.inf, jnp.float32).at[idx].min(dep)
    win = (dep <= zbuf[idx]) & jnp.isfinite(dep)
    owner = jnp.full((height * width + 1,), n, jnp.int32).at[idx].min(jnp.where(win, pid, n))[:-1]
    hole = owner == n
    cpad = jnp.concatenate([colors, jnp.zeros((1, 3), colors.dtype)])
    img = cpad[owner].reshape(height, width, 3)
    return img, zbuf[:-1].reshape(height, width), hole.reshape(height, width)


def render_video(points: np.ndarray, colors: np.ndarray, keep: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 height: int, width: int, splat: int = 1, hole_color=(0, 0, 0)) -> dict:
    """points (T, N, 3) (or (T, H, W, 3)), colors (T, N, 3) uint8, keep (T, N) bool; c2w (F, 4, 4), K (3, 3) or
    (F, 3, 3). Returns ``frames`` (F, H, W, 3) uint8, ``holes`` (F, H, W) bool, ``fps`` (frames/s of the splatting
    after the first, compiled, frame) and ``hole_fraction``."""
    t = points.shape[0]
    pts = jnp.asarray(np.asarray(points, np.float32).reshape(t, -1, 3))
    col = jnp.asarray(np.asarray(colors, np.uint8).reshape(t, -1, 3))
    kp = jnp.asarray(np.asarray(keep, bool).reshape(t, -1))
    c2w = np.asarray(c2w, np.float64)
    w2c = np.linalg.inv(c2w).astype(np.float32)
    Ks = np.broadcast_to(np.asarray(K, np.float32), (len(c2w), 3, 3))
    frames, holes = [], []
    t_first = None
    t0 = time.perf_counter()
    for i in range(len(c2w)):
        img, _, hole = splat_frame(pts[i % t], col[i % t], kp[i % t], jnp.asarray(w2c[i]), jnp.asarray(Ks[i]),
                                   height, width, splat)
        img, hole = np.asarray(img), np.asarray(hole)
        if t_first is None:
            t_first = time.perf_counter()
        if any(hole_color):
            img = np.where(hole[..., None], np.asarray(hole_color, np.uint8), img)
        frames.append(img)
        holes.append(hole)
    t_end = time.perf_counter()
    nrest = len(c2w) - 1
    fps = nrest / (t_end - t_first) if nrest > 0 and t_end > t_first else float("nan")
    holes = np.stack(holes)
    return {"frames": np.stack(frames), "holes": holes, "fps": fps, "first_frame_s": t_first - t0,
            "hole_fraction": float(holes.mean())}

