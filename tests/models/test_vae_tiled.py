"""The spatially tiled VAE decode (``WanVAE.decode(tile=...)``) against the whole decode: exact with the decoder's
halo, visibly wrong with a smaller one (the seams are real), on the shipped tiny VAE and on a random VAE with
Wan2.1's channel counts (the 14B pipeline's VAE) at a small spatial size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
from fourdnex_jax.models.vae.config import decoder_halo
from fourdnex_jax.models.vae.model import tile_windows
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.testing.numerics import rel_l2

TOL = 1e-5  # fp32 relative L2 (the bound); measured: 0.0 on CPU


def _decode(vae, z, **kw):
    return np.asarray(jax.jit(lambda z: vae.decode(z, clip=False, **kw))(z))


def test_decoder_halo():
    # Wan2.1: 3 resnets per up block, 3 x2 upsamplers: 6 + 1/2 + 3 + 1/4 + 3/2 + 1/8 + 3/4 + 1/8 = 12.25
    assert decoder_halo(WanVAEConfig.wan21()) == 13
    # tiny: 2 resnets per up block: 4 + 1/2 + 2 + 1/4 + 1 + 1/8 + 1/2 + 1/8 = 8.5
    assert decoder_halo(WanVAEConfig.tiny()) == 9


@pytest.mark.parametrize("size,core,halo", [(60, 16, 13), (180, 45, 13), (20, 8, 9), (37, 5, 3), (10, 4, 3)])
def test_tile_windows_cover_and_keep_halo(size, core, halo):
    core_n, window, cores, windows = tile_windows(size, core, halo)
    covered = np.zeros(size, bool)
    for c, w in zip(cores, windows):
        assert 0 <= w and w + window <= size and w <= c and c + core_n <= w + window
        covered[c:c + core_n] = True
        # a window edge inside the axis is >= halo pixels from the core
        assert w == 0 or c - w >= halo
        assert w + window == size or (w + window) - (c + core_n) >= halo
    assert covered.all()


def test_tile_windows_untiled_when_the_window_covers_the_axis():
    assert tile_windows(30, 8, 13) == (30, 30, [0], [0])


@pytest.mark.integration  # ~40-200 s on the 2-core VM (compiles the tiny models)
def test_tiled_decode_equals_whole_on_the_tiny_checkpoint():
    from fourdnex_jax.weights.restore import restore_model

    vae = restore_model(bundle_lib.DEFAULT_BUNDLE, "vae")
    z = jax.random.normal(jax.random.key(0), (1, 3, 20, 36, vae.config.z_dim))
    whole = _decode(vae, z)
    # the shipped tiny VAE: spatial and temporal factor 2, halo 7 -> 3 x 5 tiles with windows of up to 22 x 22
    assert decoder_halo(vae.config) == 7
    tiled = _decode(vae, z, tile=(8, 8))
    assert tiled.shape == whole.shape == (1, 5, 40, 72, 3)
    assert rel_l2(tiled, whole) <= TOL
    # too small a halo: the core sees the window's zero padding
    assert rel_l2(_decode(vae, z, tile=(8, 8), halo=2), whole) > 1e-3  # measured 1.8e-2


@pytest.mark.slow
def test_tiled_decode_equals_whole_unchunked_and_clipped():
    vae = WanVAE(WanVAEConfig.tiny(), rngs=nnx.Rngs(3))
    z = 3.0 * jax.random.normal(jax.random.key(1), (2, 2, 24, 20, 16))
    whole = np.asarray(jax.jit(lambda z: vae.decode(z, chunked=False))(z))
    tiled = np.asarray(jax.jit(lambda z: vae.decode(z, chunked=False, tile=(5, 7)))(z))
    assert rel_l2(tiled, whole) <= TOL


@pytest.mark.slow
def test_tiled_decode_equals_whole_with_wan21_channels():
    """The real VAE's architecture (base_dim 96, 384-channel mid block, 3 resnets per up block), random weights,
    a 40 x 48 latent (320 x 384 pixels), 3 latent frames -> 9 frames."""
    cfg = WanVAEConfig.wan21()
    vae = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(vae)
    keys = iter(jax.random.split(jax.random.key(5), len(jax.tree.leaves(state))))
    # random weights at the scale of torch's default init (fan-in), norms' scales around 1
    state = jax.tree.map(lambda a: (jax.random.normal(next(keys), a.shape, jnp.float32)
                                    * (a.shape[-2] * int(np.prod(a.shape[:-2]))) ** -0.5 if len(a.shape) > 1
                                    else 1.0 + 0.1 * jax.random.normal(next(keys), a.shape, jnp.float32)), state)
    vae = nnx.merge(graphdef, state)
    z = jax.random.normal(jax.random.key(2), (1, 3, 40, 48, cfg.z_dim))
    whole = _decode(vae, z)
    tiled = _decode(vae, z, tile=(8, 12))  # 5 x 4 tiles, windows 34 x 38 (halo 13)
    assert rel_l2(tiled, whole) <= TOL
    assert rel_l2(_decode(vae, z, tile=(8, 12), halo=4), whole) > 1e-3
