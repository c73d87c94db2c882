"""Parity of the NNX Wan2.1 VAE with diffusers ``AutoencoderKLWan`` (fp32, CPU), plus its mapping and loader.

Torch modules are built tiny and seeded, and every parameter (norm gammas included) is perturbed so that no default
value matches by accident. Torch tensors are NCTHW; the port is NTHWC, converted here at the boundary.
Chunked torch calls go through diffusers' own ``feat_cache`` protocol.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.models.mapping import DictSource, WeightMapping, WeightMappingError
from fourdnex_jax.models.params import assign, flat_variables, targets_of
from fourdnex_jax.models.vae import WanVAEConfig, abstract_vae, export_to_diffusers, vae_weight_mapping
from fourdnex_jax.models.vae import layers as L
from fourdnex_jax.models.vae.mapping import attention_rules, conv_rules, resample_rules, residual_rules
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights.from_diffusers import load_vae_from_diffusers

BLOCK_TOL = 1e-5
ENCODE_TOL = 1e-5
DECODE_TOL = 1e-4
CHUNK_TOL = 1e-5

# A tiny Wan2.1-shaped VAE: all four stages, both temporal resamplers, attention in the mid blocks.
TINY = WanVAEConfig.tiny(base_dim=8, z_dim=4, latents_mean=[0.1, -0.2, 0.3, -0.4], latents_std=[1.5, 0.5, 2.0, 1.0])


# ---------------------------------------------------------------------------------------------------------------
# helpers
def ntc(t) -> np.ndarray:
    """torch NCTHW (or NCHW) tensor -> numpy channels-last."""
    a = t.detach().numpy()
    return np.moveaxis(a, 1, -1)


def nct(torch, a):  # -> torch.Tensor in NCTHW
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(a), -1, 1)))


def perturb(torch, module, scale: float = 0.3):
    """Adds noise to every parameter: gammas become 1 + N(0, scale), weights move by ``scale`` times their spread."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + scale * torch.randn_like(p))
            else:
                p.add_(scale * max(float(p.std()) if p.numel() > 1 else 0.0, 0.05) * torch.randn_like(p))
    return module.eval()


def load_block(jmod: nnx.Module, tmod, rules) -> nnx.Module:
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    assign(jmod, WeightMapping(rules).to_jax(DictSource(sd), targets_of(jmod)))
    return jmod


def run_torch_chunks(module, chunks, n_cache: int = 8):
    """Calls a diffusers module chunk by chunk with its own feature-cache protocol."""
    cache, outs = [None] * n_cache, []
    for c in chunks:
        outs.append(module(c, feat_cache=cache, feat_idx=[0]))
    return outs


def run_jax_chunks(module, chunks):
    outs, cache = [], None
    for c in chunks:
        y, cache = module(c, cache)
        outs.append(np.asarray(y))
    return outs


def check_chunks(torch, jmod, tmod, x, sizes, tol=BLOCK_TOL):
    """Runs clip ``x`` (NCTHW) in chunks of ``sizes`` frames: chunked torch vs chunked JAX (per chunk) and vs JAX on
    the whole clip at once. Returns the worst error."""
    bounds = np.cumsum([0, *sizes])
    t_chunks = [x[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    with torch.no_grad():
        ref = [ntc(o) for o in run_torch_chunks(tmod, t_chunks)]
    got = run_jax_chunks(jmod, [ntc(c) for c in t_chunks])
    errs = [rel_l2(g, r) for g, r in zip(got, ref)]
    whole, _ = jmod(ntc(x))
    errs.append(rel_l2(whole, np.concatenate(ref, axis=1)))
    name = f"{type(jmod).__name__} {getattr(jmod, 'mode', '')}".strip()
    report(f"{name}, chunks of {sizes} frames (worst of per-chunk and whole-clip)", max(errs), tol)
    return max(errs)


KW = dict(rngs=nnx.Rngs(0))


def report(name: str, err: float, tol: float) -> None:
    """Prints the measured error (visible with ``pytest -s``) and checks it."""
    print(f"\n[vae parity] {name}: rel L2 {err:.3e} (tol {tol:.0e})")
    assert err <= tol, f"{name}: {err:.3e} > {tol:.0e}"


# ---------------------------------------------------------------------------------------------------------------
# config
@pytest.mark.oracle
def test_config_wan21_matches_diffusers_defaults(torch_oracle):
    AutoencoderKLWan = pytest.importorskip("diffusers").AutoencoderKLWan  # signature only: no model is built

    defaults = {k: p.default for k, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
                if k != "self"}
    ours = WanVAEConfig.wan21().to_diffusers_config()
    assert set(ours) == set(defaults)
    for k, v in defaults.items():
        assert ours[k] == (list(v) if isinstance(v, (list, tuple)) else v), k


def test_config_from_diffusers_rejects_unknown_keys():
    cfg = WanVAEConfig.from_diffusers_config({"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.42.1",
                                              "_use_default_values": [], "base_dim": 16, "dim_mult": [1, 2, 4, 4]})
    assert cfg.base_dim == 16 and cfg.dim_mult == (1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"unknown AutoencoderKLWan config key\(s\): \['bogus'\]"):
        WanVAEConfig.from_diffusers_config({"base_dim": 16, "bogus": 1})
    with pytest.raises(ValueError, match="only the Wan2.1 VAE is ported"):
        WanVAEConfig(is_residual=True)
    with pytest.raises(ValueError, match="z_dim=4"):
        WanVAEConfig(z_dim=4)


def test_param_logical_axes():
    model = abstract_vae(TINY)
    for path, var in flat_variables(model).items():
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == len(var.shape) and all(isinstance(a, str) for a in axes), path


def test_latent_normalization():
    model = abstract_vae(TINY)
    z = jax.random.normal(jax.random.key(0), (1, 2, 3, 3, TINY.z_dim))
    mean, std = np.asarray(TINY.latents_mean, np.float32), np.asarray(TINY.latents_std, np.float32)
    np.testing.assert_allclose(model.normalize_latents(z), (np.asarray(z) - mean) * (1.0 / std), rtol=1e-6)
    np.testing.assert_allclose(model.denormalize_latents(model.normalize_latents(z)), z, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# blocks
@pytest.mark.oracle
def test_causal_conv(torch_oracle):
    torch = torch_oracle
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    worst = 0.0
    for kernel, stride, padding in [(3, 1, 1), (1, 1, 0), ((3, 1, 1), (2, 1, 1), 0), ((3, 1, 1), 1, (1, 0, 0))]:
        tconv = perturb(torch, WanCausalConv3d(4, 6, kernel, stride=stride, padding=padding))
        jconv = load_block(L.CausalConv3d(4, 6, kernel, stride=stride, padding=padding, **KW), tconv,
                           conv_rules("", ""))
        x1, x2 = torch.randn(2, 4, 5, 6, 7), torch.randn(2, 4, 3, 6, 7)
        with torch.no_grad():
            ref1 = tconv(x1)
            ref2 = tconv(x2, x1[:, :, -2:]) if jconv.context else tconv(x2)
        y1, cache = jconv(ntc(x1))
        y2, _ = jconv(ntc(x2), cache)
        worst = max(worst, rel_l2(y1, ntc(ref1)), rel_l2(y2, ntc(ref2)))
    report("causal conv (4 kernel/stride variants, with and without cache)", worst, BLOCK_TOL)


@pytest.mark.oracle
def test_rms_norm(torch_oracle):
    torch = torch_oracle
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    worst = 0.0
    for images, shape in [(False, (2, 6, 3, 4, 5)), (True, (3, 6, 4, 5))]:
        tnorm = perturb(torch, WanRMS_norm(6, images=images))
        x = torch.randn(*shape)
        x[0, :, 0, 0] = 0.0  # exercises the eps clamp (F.normalize gives 0, not NaN)
        x[0, :, 0, 1] = 1e-20  # below eps: divided by eps, not by its tiny norm
        jnorm = L.WanRMSNorm(6)
        assign(jnorm, {"scale": tnorm.gamma.detach().numpy().reshape(-1)})
        with torch.no_grad():
            ref = ntc(tnorm(x))
        got = np.asarray(jnorm(ntc(x)))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got[0, 0, 1], ref[0, 0, 1], rtol=1e-6)
        worst = max(worst, rel_l2(got, ref))
    report("RMS norm (3d and 2d gamma)", worst, BLOCK_TOL)


@pytest.mark.oracle
def test_residual_block_chunked(torch_oracle):
    torch = torch_oracle
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResidualBlock

    tblock = perturb(torch, WanResidualBlock(4, 6))
    jblock = load_block(L.ResidualBlock(4, 6, **KW), tblock, residual_rules("", "", 4, 6))
    # 1 then 4 frames (encoder pattern), then single frames (decoder pattern; exercises the 1-frame cache prepend)
    check_chunks(torch, jblock, tblock, torch.randn(1, 4, 11, 6, 5), [1, 4, 4, 1, 1])


@pytest.mark.oracle
def test_attention_block(torch_oracle):
    torch = torch_oracle
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock

    tblock = perturb(torch, WanAttentionBlock(8))
    jblock = load_block(L.AttentionBlock(8, **KW), tblock, attention_rules("", ""))
    x = torch.randn(2, 8, 3, 5, 6)
    with torch.no_grad():
        ref = ntc(tblock(x))
    got, _ = jblock(ntc(x))
    report("attention block", rel_l2(got, ref), BLOCK_TOL)


@pytest.mark.oracle
@pytest.mark.parametrize("mode, sizes", [
    ("upsample2d", [1, 2]),
    ("downsample2d", [1, 4]),
    ("upsample3d", [1, 1, 1, 1]),   # first decoder upsampler: one latent frame per chunk ("Rep" then zero history)
    ("upsample3d", [1, 2, 2]),      # second decoder upsampler: 1 frame, then 2-frame chunks
    ("downsample3d", [1, 4, 4]),    # first encoder downsampler
    ("downsample3d", [1, 2, 2]),    # second encoder downsampler
])
def test_resample(torch_oracle, mode, sizes):
    torch = torch_oracle
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    tmod = perturb(torch, WanResample(6, mode))
    jmod = load_block(L.Resample(6, mode, **KW), tmod, resample_rules("", "", mode))
    check_chunks(torch, jmod, tmod, torch.randn(1, 6, sum(sizes), 6, 8), sizes)


# ---------------------------------------------------------------------------------------------------------------
# full model
@pytest.fixture(scope="module")
def tiny_pair(torch_oracle):
    """(torch AutoencoderKLWan, WanVAE with the same weights, torch state dict as numpy)."""
    torch = torch_oracle
    from diffusers import AutoencoderKLWan

    torch.manual_seed(1)
    tvae = perturb(torch, AutoencoderKLWan(**TINY.to_diffusers_config()))
    sd = {k: v.detach().numpy() for k, v in tvae.state_dict().items()}
    return tvae, load_vae_from_diffusers(sd, config=TINY), sd


@pytest.fixture(scope="module")
def tiny_run(tiny_pair, torch_oracle):
    """Torch reference encode/decode of a 9-frame 32x64 clip (latent 3x4x8, a fused RGB|XYZ-like width)."""
    torch = torch_oracle
    tvae, _, _ = tiny_pair
    video = torch.rand(1, 3, 9, 32, 64) * 2 - 1
    with torch.no_grad():
        post = tvae.encode(video).latent_dist
        dec = tvae.decode(post.mean).sample
        # the same decode without the final clamp: diffusers' _decode loop, stopped before torch.clamp
        tvae.clear_cache()
        x = tvae.post_quant_conv(post.mean)
        raw = torch.cat([tvae.decoder(x[:, :, i:i + 1], feat_cache=tvae._feat_map, feat_idx=[0],
                                      first_chunk=i == 0) for i in range(x.shape[2])], dim=2)
    return dict(video=ntc(video), mean=ntc(post.mean), logvar=ntc(post.logvar), dec=ntc(dec), raw=ntc(raw))


@pytest.mark.oracle
def test_encode_parity(tiny_pair, tiny_run):
    _, jvae, _ = tiny_pair
    dist = jvae.encode(jnp.asarray(tiny_run["video"]))
    assert dist.mean.shape == (1, 3, 4, 8, TINY.z_dim)
    report("encode mean (mode)", rel_l2(dist.mean, tiny_run["mean"]), ENCODE_TOL)
    report("encode logvar", rel_l2(dist.logvar, tiny_run["logvar"]), ENCODE_TOL)
    whole = jvae.encode(jnp.asarray(tiny_run["video"]), chunked=False)
    report("encode whole-clip vs chunked, mean", rel_l2(whole.mean, dist.mean), CHUNK_TOL)
    report("encode whole-clip vs chunked, logvar", rel_l2(whole.logvar, dist.logvar), CHUNK_TOL)


@pytest.mark.oracle
def test_decode_parity(tiny_pair, tiny_run):
    _, jvae, _ = tiny_pair
    z = jnp.asarray(tiny_run["mean"])
    raw = jvae.decode(z, clip=False)
    assert raw.shape == (1, 9, 32, 64, 3)
    report("decode, unclipped", rel_l2(raw, tiny_run["raw"]), DECODE_TOL)
    # clipping is where diffusers puts it (after the whole decode), and only some values hit it
    assert 0.0 < np.mean(np.abs(tiny_run["raw"]) > 1.0) < 0.5
    report("decode (clipped)", rel_l2(np.clip(np.asarray(raw), -1.0, 1.0), tiny_run["dec"]), DECODE_TOL)
    whole = jvae.decode(z, chunked=False, clip=False)
    report("decode whole-clip vs chunked", rel_l2(whole, raw), CHUNK_TOL)


@pytest.mark.oracle
def test_decode_split_halves(tiny_pair, tiny_run, torch_oracle):
    """Decoding the RGB | XYZ halves separately equals torch decoding each half, and is only an approximation of
    the fused decode (convs and the mid-block attention see across the seam)."""
    torch = torch_oracle
    tvae, jvae, _ = tiny_pair
    z = tiny_run["mean"]
    split = np.asarray(jvae.decode(jnp.asarray(z), split_halves=True))
    w = z.shape[3] // 2
    with torch.no_grad():
        ref = np.concatenate([ntc(tvae.decode(nct(torch, z[:, :, :, s])).sample)
                              for s in (slice(0, w), slice(w, 2 * w))], axis=3)
    report("decode split halves vs torch", rel_l2(split, ref), DECODE_TOL)
    diff = rel_l2(split, tiny_run["dec"])
    px = split.shape[3] // 2
    seam = rel_l2(split[:, :, :, px - 8:px + 8], tiny_run["dec"][:, :, :, px - 8:px + 8])
    print(f"\nsplit-halves decode vs fused decode (random tiny weights): rel L2 {diff:.3e} (whole frame), "
          f"{seam:.3e} (16 px at the seam)")
    assert diff > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# mapping and loader
@pytest.mark.oracle
@pytest.mark.parametrize("overrides", [{}, dict(attn_scales=(1.0, 0.5), num_res_blocks=2, decoder_base_dim=12)])
def test_mapping_round_trip_bit_exact(torch_oracle, overrides):
    torch = torch_oracle
    from diffusers import AutoencoderKLWan

    cfg = dataclasses.replace(TINY, **overrides)
    sd = {k: v.detach().numpy() for k, v in
          perturb(torch, AutoencoderKLWan(**cfg.to_diffusers_config())).state_dict().items()}
    mapping = vae_weight_mapping(cfg)
    flat = mapping.to_jax(DictSource(sd), targets_of(abstract_vae(cfg)))
    back = mapping.to_torch(flat)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k


@pytest.mark.oracle
def test_mapping_covers_real_wan21(torch_oracle):
    """The full-size table matches the real AutoencoderKLWan (built on the meta device: shapes only)."""
    torch = torch_oracle
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        sd = AutoencoderKLWan().state_dict()

    class ShapeSource:
        keys = sd.keys
        shape = staticmethod(lambda k: tuple(sd[k].shape))
        dtype = staticmethod(lambda k: np.dtype(np.float32))

    cfg = WanVAEConfig.wan21()
    vae_weight_mapping(cfg).check(ShapeSource(), targets_of(abstract_vae(cfg)))
    assert len(sd) == len(vae_weight_mapping(cfg).rules)
    from fourdnex_jax.models.params import count

    n_torch = sum(v.numel() for v in sd.values())
    print(f"Wan2.1 VAE parameters: torch {n_torch:,}, ours {count(abstract_vae(cfg))[0]:,}")
    assert count(abstract_vae(cfg))[0] == n_torch


@pytest.mark.oracle
def test_loader_strict_errors(tiny_pair):
    _, _, sd = tiny_pair
    missing = {k: v for k, v in sd.items() if k != "decoder.norm_out.gamma"}
    with pytest.raises(WeightMappingError, match=r"1 missing key\(s\): \['decoder.norm_out.gamma'\]"):
        load_vae_from_diffusers(missing, config=TINY)
    extra = {**sd, "decoder.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightMappingError, match=r"1 unexpected key\(s\): \['decoder.extra.weight'\]"):
        load_vae_from_diffusers(extra, config=TINY)
    bad = {**sd, "encoder.conv_in.weight": np.zeros((8, 3, 3, 3, 1), np.float32)}
    with pytest.raises(WeightMappingError, match=r"encoder.conv_in.weight: shape \(8, 3, 3, 3, 1\) does not map to "
                                                 r"encoder/conv_in/kernel \(3, 3, 3, 3, 8\)"):
        load_vae_from_diffusers(bad, config=TINY)
    with pytest.raises(ValueError, match="config is required"):
        load_vae_from_diffusers(sd)


@pytest.mark.oracle
def test_load_from_save_pretrained_folder(tiny_pair, tmp_path):
    tvae, jvae, sd = tiny_pair
    tvae.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert "_class_name" in json.loads((tmp_path / "config.json").read_text())
    loaded = load_vae_from_diffusers(tmp_path)
    assert loaded.config == TINY
    exported = export_to_diffusers(loaded)
    assert set(exported) == set(sd)
    assert all(np.array_equal(exported[k], v) for k, v in sd.items())
    # bf16 storage: parameters are cast on load
    bf16 = load_vae_from_diffusers(tmp_path, param_dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.bfloat16 for v in flat_variables(bf16).values())
