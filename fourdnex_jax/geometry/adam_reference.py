"""The 4DNeX reference registration (``pm_registration.py::optimise_xyz_batch``) re-implemented in JAX.

Faithful to the reference: input decoded XYZ in [0, 1]^3 with 0.5 subtracted from x and y (z unchanged);
parameters per-pixel depth (init ``||xyz||``), ONE shared K (init fx = 1.2 W, fy = 1.2 H, cx = W/2, cy = H/2, all
four optimised), per-frame 6D rotation (Zhou 2019, init identity) and translation (init 0); loss = mean squared
error between ``R K^-1 (d [u, v, 1]) + t`` and the XYZ over all frames jointly (pixels in raw units, pixel
centres at integers as ``torch.meshgrid(arange)``), depth clamped at 1e-4 in the forward pass; Adam
(lr 5e-3, betas 0.9/0.999, eps 1e-8 as torch), 1500 iterations, no regulariser. Unlike the reference, the
recovered cameras are returned (it discards them). Used as the baseline of ``benchmarks/register.py``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def _normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """torch ``F.normalize``: x / max(||x||, eps), with torch's zero (sub)gradient of the norm at x = 0."""
    ss = (x * x).sum(-1, keepdims=True)
    n = jnp.where(ss > 0, jnp.sqrt(jnp.where(ss > 0, ss, 1.0)), 0.0)
    return x / jnp.maximum(n, eps)


def rot6d_to_matrix(d6: jnp.ndarray) -> jnp.ndarray:
    a1, a2 = d6[:, 0:3], d6[:, 3:6]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - (a2 * b1).sum(-1, keepdims=True) * b1)
    b3 = jnp.stack([b1[:, 1] * b2[:, 2] - b1[:, 2] * b2[:, 1], b1[:, 2] * b2[:, 0] - b1[:, 0] * b2[:, 2],
                    b1[:, 0] * b2[:, 1] - b1[:, 1] * b2[:, 0]], -1)
    return jnp.stack([b1, b2, b3], axis=2)  # columns, as torch.stack(dim=2)


def model_xyz_to_reference_input(xyz: np.ndarray) -> np.ndarray:
    """Our model output in [-1, 1] -> the reference's decoded [0, 1] XYZ with 0.5 subtracted from x and y."""
    x01 = (np.asarray(xyz, np.float32) + 1.0) / 2.0
    x01[..., :2] -= 0.5
    return x01


def _loss(params, pix, target):
    depth, fx, fy, cx, cy, rot6d, trans = params
    d = jnp.maximum(depth, 1e-4)[..., None]  # (B, N, 1)
    kinv = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    kinv = kinv.at[0, 0].set(1 / fx).at[0, 2].set(-cx / fx).at[1, 1].set(1 / fy).at[1, 2].set(-cy / fy)
    cam = (d * pix) @ kinv.T  # (B, N, 3)
    r = rot6d_to_matrix(rot6d)
    world = jnp.einsum("bij,bnj->bni", r, cam) + trans[:, None, :]
    return jnp.mean((world - target) ** 2)


def adam_fit(xyz_ref: np.ndarray, iters: int = 1500, lr: float = 5e-3) -> dict:
    """xyz_ref (B, H, W, 3) in the reference's input convention. Returns depth (B, H, W), K (3, 3), c2w (B, 4, 4)
    (R, t as the reference defines them: camera-to-world of its own world), final loss and seconds."""
    b, h, w, _ = xyz_ref.shape
    target = jnp.asarray(xyz_ref.reshape(b, h * w, 3), jnp.float32)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pix = jnp.asarray(np.stack([xs, ys, np.ones_like(xs)], -1).reshape(1, h * w, 3), jnp.float32)
    params = (jnp.linalg.norm(target, axis=-1), jnp.float32(w * 1.2), jnp.float32(h * 1.2), jnp.float32(w / 2),
              jnp.float32(h / 2), jnp.tile(jnp.eye(3)[:, :2].reshape(1, 6), (b, 1)),
              jnp.zeros((b, 3), jnp.float32))
    # Reference quirk, kept: eye(3)[:, :2].reshape(6) is row-major (1,0, 0,1, 0,0), i.e. a1 = a2 = (1,0,0), so
    # the initial "rotation" is degenerate (b2 = b3 = 0); torch's F.normalize makes the first step's gradient on
    # a2 huge (1/eps) and Adam's normalised step turns it into a usable frame after one iteration.
    grad = jax.value_and_grad(_loss)
    b1, b2, eps = 0.9, 0.999, 1e-8

    @jax.jit
    def run(params):
        def step(carry, i):
            p, m, v = carry
            loss, g = grad(p, pix, target)
            k = i + 1.0
            m = jax.tree.map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
            v = jax.tree.map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
            p = jax.tree.map(lambda p_, m_, v_: p_ - lr * (m_ / (1 - b1 ** k)) / (jnp.sqrt(v_ / (1 - b2 ** k)) + eps),
                             p, m, v)
            return (p, m, v), loss
        zeros = jax.tree.map(jnp.zeros_like, params)
        (p, _, _), losses = jax.lax.scan(step, (params, zeros, zeros), jnp.arange(iters, dtype=jnp.float32))
        return p, losses

    t0 = time.perf_counter()
    p, losses = run(params)
    jax.block_until_ready(p)
    secs = time.perf_counter() - t0
    depth, fx, fy, cx, cy, rot6d, trans = (np.asarray(a, np.float64) for a in p)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    c2w = np.tile(np.eye(4), (b, 1, 1))
    c2w[:, :3, :3] = np.asarray(rot6d_to_matrix(jnp.asarray(rot6d)))
    c2w[:, :3, 3] = trans
    return {"depth": np.maximum(depth, 1e-4).reshape(b, h, w), "K": K, "c2w": c2w,
            "loss": float(losses[-1]), "seconds": secs}
