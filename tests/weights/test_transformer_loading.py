"""Loading the DiT from diffusers folders: sharded safetensors, bf16 policy, strict errors, corrupt files."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import jax.numpy as jnp
from diffusers import WanTransformer3DModel
from flax import nnx

from fourdnex_jax.models import params
from fourdnex_jax.models.mapping import DictSource, WeightMappingError
from fourdnex_jax.models.transformer import FROZEN, WanTransformerConfig
from fourdnex_jax.models.transformer.mapping import base_mapping
from fourdnex_jax.testing import torch_reference as ref
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights.from_diffusers import load_transformer, transformer_from_source
from fourdnex_jax.weights.safetensors import CheckpointFileError

pytestmark = pytest.mark.oracle
NO_4DNEX = dict(modality_layout="none", domain_embeddings=False)


@nnx.jit
def _run(model, latents, timestep, text_embeds, image_embeds):
    return model(latents, timestep, text_embeds, image_embeds)


def jax_forward(model, batch):
    return np.asarray(_run(model, *(jnp.asarray(batch[k]) for k in
                                    ("latents", "timestep", "text_embeds", "image_embeds"))))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny diffusers transformer saved in shards (index + several safetensors files)."""
    path = tmp_path_factory.mktemp("wan_tiny")
    model = ref.build(ref.TINY, seed=11)
    model.save_pretrained(path, max_shard_size="100KB", safe_serialization=True)
    assert (path / "diffusion_pytorch_model.safetensors.index.json").exists()
    return path, model


def test_load_sharded_folder_matches_torch(saved):
    path, torch_model = saved
    model = load_transformer(path, progress=False, **NO_4DNEX)
    batch = ref.inputs(ref.TINY, seed=11)
    assert rel_l2(jax_forward(model, batch), ref.forward(torch_model, batch)) <= 1e-5


def test_bf16_error_within_1p5x_of_diffusers_bf16(saved):
    """Our bf16 path vs the fp32 reference is no worse than 1.5x diffusers' own bf16-vs-fp32 error; and every
    parameter has the dtype diffusers gives it under from_pretrained(torch_dtype=bf16) (_keep_in_fp32_modules)."""
    path, torch_model = saved
    batch = ref.inputs(ref.TINY, seed=12)
    reference = ref.forward(torch_model, batch)
    torch_bf16 = WanTransformer3DModel.from_pretrained(path, torch_dtype=torch.bfloat16).eval()
    err_torch = rel_l2(ref.forward(torch_bf16, batch, dtype=torch.bfloat16), reference)
    model = load_transformer(path, progress=False, param_dtype="bfloat16", compute_dtype="bfloat16", **NO_4DNEX)
    bf16_batch = {k: (v if k == "timestep" else jnp.asarray(v, jnp.bfloat16)) for k, v in batch.items()}
    out = jax_forward(model, bf16_batch)
    assert out.dtype == jnp.bfloat16
    err_jax = rel_l2(out.astype(np.float32), reference)
    print(f"bf16 rel L2 vs fp32 reference: jax {err_jax:.3e}, diffusers {err_torch:.3e}, "
          f"ratio {err_jax / err_torch:.2f}")
    assert err_jax <= 1.5 * err_torch

    ours = base_mapping(model.config).to_torch(
        {p: np.asarray(v[...]) for p, v in params.flat_variables(model, FROZEN).items()})
    theirs = {k: v.dtype for k, v in torch_bf16.state_dict().items()}
    wrong = {k: (str(ours[k].dtype), str(theirs[k])) for k in theirs
             if str(ours[k].dtype) != str(theirs[k]).replace("torch.", "")}
    assert not wrong, f"dtype policy differs from diffusers: {wrong}"


def test_mapping_roundtrip_bit_exact(saved):
    _, torch_model = saved
    sd = ref.state_dict_numpy(torch_model)
    cfg = WanTransformerConfig.from_diffusers_config(ref.TINY, **NO_4DNEX)
    model = transformer_from_source(cfg, DictSource(sd))
    back = base_mapping(cfg).to_torch({p: np.asarray(v[...]) for p, v in params.flat_variables(model, FROZEN).items()})
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_strict_errors_list_every_problem(saved):
    _, torch_model = saved
    sd = ref.state_dict_numpy(torch_model)
    cfg = WanTransformerConfig.from_diffusers_config(ref.TINY, **NO_4DNEX)
    sd.pop("blocks.1.attn1.to_k.bias")
    sd.pop("condition_embedder.time_proj.weight")
    sd["blocks.0.ffn.net.0.proj.weight"] = np.zeros((7, 64), np.float32)
    sd["blocks.0.attn1.extra.weight"] = np.zeros(3, np.float32)
    sd["scale_shift_table"] = np.zeros((1, 2, 64), np.int64)
    sd["blocks.0.attn2.norm_added_q.weight"] = np.ones(64, np.float32)  # documented ignore: accepted
    with pytest.raises(WeightMappingError) as info:
        transformer_from_source(cfg, DictSource(sd))
    msg = str(info.value)
    for needle in ("2 missing key(s)", "blocks.1.attn1.to_k.bias", "condition_embedder.time_proj.weight",
                   "1 unexpected key(s): ['blocks.0.attn1.extra.weight']",
                   "blocks.0.ffn.net.0.proj.weight: shape (7, 64)",
                   "scale_shift_table: dtype int64"):
        assert needle in msg, (needle, msg)
    assert "norm_added_q" not in msg


def test_config_mismatch_and_unknown_keys(saved):
    path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match="unknown diffusers config key 'window_size'"):
        WanTransformerConfig.from_diffusers_config({**cfg, "window_size": [-1, -1]})
    with pytest.raises(ValueError, match="qk_norm='layer_norm' is not supported"):
        WanTransformerConfig.from_diffusers_config({**cfg, "qk_norm": "layer_norm"})
    # A config that disagrees with the weights (wrong ffn_dim) is caught by the shape check, before any data read.
    bad = WanTransformerConfig.from_diffusers_config({**cfg, "ffn_dim": 96}, **NO_4DNEX)
    with pytest.raises(WeightMappingError, match="ffn.net.0.proj.weight: shape"):
        transformer_from_source(bad, DictSource(ref.state_dict_numpy(ref.build(ref.TINY))))


def test_corrupt_and_missing_files_are_named(saved, tmp_path):
    path, _ = saved
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = sorted(tmp_path.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated download
    with pytest.raises(CheckpointFileError, match=shard.name):
        load_transformer(tmp_path, progress=False, **NO_4DNEX)
    shard.unlink()
    with pytest.raises(CheckpointFileError, match=r"lists 1 shard\(s\) that do not exist"):
        load_transformer(tmp_path, progress=False, **NO_4DNEX)
    with pytest.raises(CheckpointFileError, match="config.json"):
        load_transformer(tmp_path / "nowhere", progress=False)
