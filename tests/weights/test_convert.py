"""Checkpoint conversion (fourdnex_jax.weights, `fourdnex convert`): torch -> orbax -> torch bit-exact for the four
models, the exported 4DNeX adapter against diffusers + peft, strict errors, sharded restore on 8 fake devices,
the torch-free .pt reader/writer and the manifest.

Torch-free tests build diffusers-layout folders from the weight tables (``mapping.to_torch`` of random arrays);
oracle tests build tiny diffusers / transformers models and ``save_pretrained`` them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from fourdnex_jax.models import params
from fourdnex_jax.models.transformer import FROZEN, WanTransformerConfig
from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights import adapter as adapter_lib
from fourdnex_jax.weights.jax_to_torch import export
from fourdnex_jax.weights.registry import SPECS
from fourdnex_jax.weights.restore import restore_model
from fourdnex_jax.weights.safetensors import (
    CheckpointFileError,
    SafetensorsSource,
    ShardedSafetensorsWriter,
    sha256_file,
)
from fourdnex_jax.weights.torch_pickle import PtFormatError, load_pt, load_pt_tensor, save_pt
from fourdnex_jax.weights.torch_to_jax import ConversionError, convert

TINY_DIFFUSERS = dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=32, in_channels=36,
                      out_channels=16, text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True,
                      qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=24, added_kv_proj_dim=64,
                      rope_max_seq_len=1024, pos_embed_seq_len=None, _class_name="WanTransformer3DModel")


# ------------------------------------------------------------------------------------------------ torch-free folders
def _write_st(directory: Path, name: str, tensors: dict, max_shard_bytes: int = 2**62) -> None:
    w = ShardedSafetensorsWriter(directory, name, [(k, v.shape, v.dtype) for k, v in tensors.items()],
                                 max_shard_bytes=max_shard_bytes)
    for k, v in tensors.items():
        w.write(k, v)
    w.close()


def numpy_transformer(directory: Path, dtype=np.float32, seed: int = 0, max_shard_bytes: int = 60_000) -> dict:
    """A diffusers-layout transformer folder written from the weight table; returns its state dict."""
    cfg = WanTransformerConfig.from_diffusers_config(TINY_DIFFUSERS, modality_layout="none",
                                                     domain_embeddings=False)
    rng = np.random.default_rng(seed)
    targets = params.targets_of(SPECS["transformer"].abstract(cfg, "float32"), FROZEN)
    flat = {p: rng.standard_normal(t.shape).astype(np.float32) for p, t in targets.items()}
    sd = {k: v.astype(dtype) for k, v in SPECS["transformer"].mapping(cfg).to_torch(flat).items()}
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(TINY_DIFFUSERS))
    _write_st(directory, "diffusion_pytorch_model", sd, max_shard_bytes)
    return sd


def _copied_components(root: Path) -> None:
    for name, fname in (("tokenizer", "tokenizer.json"), ("scheduler", "scheduler_config.json"),
                        ("image_processor", "preprocessor_config.json")):
        (root / name).mkdir(parents=True)
        (root / name / fname).write_text(json.dumps({"component": name}))


SKIP_ENCODERS = ("vae", "text_encoder", "image_encoder")


def _jax_forward(model, batch) -> np.ndarray:
    """The DiT's output for a ``torch_reference.inputs`` batch (NTHWC latents)."""
    return np.asarray(nnx.jit(lambda m, *a: m(*a))(model, *(jnp.asarray(batch[k]) for k in
                                                      ("latents", "timestep", "text_embeds", "image_embeds"))))


# ------------------------------------------------------------------------------------------------ .pt format
def test_pt_reader_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        z.writestr("archive/byteorder", "little")
    with pytest.raises(PtFormatError, match=r"refusing to load global (posix|os)\.system"):
        load_pt(path)
    assert not marker.exists()
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(PtFormatError, match="not a torch zip checkpoint"):
        load_pt(tmp_path / "legacy.pt")


def test_pt_writer_reader_roundtrip_without_torch(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 7)).astype(ml_dtypes.bfloat16)
    save_pt(tmp_path / "a.pt", x)
    np.testing.assert_array_equal(load_pt(tmp_path / "a.pt").view(np.uint16), x.view(np.uint16))
    save_pt(tmp_path / "d.pt", {"a": x.astype(np.float32), "b": np.arange(5)})
    d = load_pt(tmp_path / "d.pt")
    assert list(d) == ["a", "b"] and d["b"].dtype == np.int64
    np.testing.assert_array_equal(d["a"], x.astype(np.float32))


@pytest.mark.oracle
def test_pt_reader_and_writer_against_torch(torch_oracle, tmp_path):
    torch = torch_oracle
    t = torch.randn(3, 5)
    for dtype in (torch.float32, torch.bfloat16):
        torch.save(t.to(dtype), tmp_path / "bare.pt")
        got = load_pt(tmp_path / "bare.pt")
        want = t.to(dtype)
        want = want.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if dtype == torch.bfloat16 else want.numpy()
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    torch.save({"w": t, "p": torch.nn.Parameter(t[:, 1:3].clone()), "tr": t.t()}, tmp_path / "dict.pt")
    d = load_pt(tmp_path / "dict.pt")
    np.testing.assert_array_equal(d["w"], t.numpy())
    np.testing.assert_array_equal(d["p"], t[:, 1:3].numpy())
    np.testing.assert_array_equal(d["tr"], t.t().numpy())  # strided view resolved
    # ours -> torch.load(weights_only=True)
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(ml_dtypes.bfloat16)
    save_pt(tmp_path / "ours.pt", x)
    y = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert y.dtype == torch.bfloat16 and y.view(torch.int16).numpy().tobytes() == x.tobytes()
    save_pt(tmp_path / "ours_dict.pt", {"learnable_domain_embeddings": x.astype(np.float32)})
    y = torch.load(tmp_path / "ours_dict.pt", weights_only=True, mmap=True)
    assert torch.equal(y["learnable_domain_embeddings"], torch.from_numpy(x.astype(np.float32)))


# ------------------------------------------------------------------------------------------------ strictness
def test_strict_errors_are_listed_together(tmp_path):
    src = tmp_path / "src"
    sd = numpy_transformer(src / "transformer")
    _copied_components(src)
    # rewrite the transformer with one key missing, one unexpected and one mis-shaped
    shutil.rmtree(src / "transformer")
    bad = dict(sd)
    bad.pop("blocks.1.attn2.to_v.weight")
    bad["blocks.0.ffn.net.0.proj.weight"] = np.zeros((3, 3), np.float32)
    bad["blocks.0.attn1.to_q.lora_A.weight"] = np.zeros((2, 64), np.float32)
    (src / "transformer").mkdir()
    (src / "transformer" / "config.json").write_text(json.dumps(TINY_DIFFUSERS))
    _write_st(src / "transformer", "diffusion_pytorch_model", bad, 60_000)
    with pytest.raises(ConversionError) as info:
        convert(src, tmp_path / "out", skip=("vae",), progress=False)  # text/image encoders missing, not skipped
    msg = str(info.value)
    for needle in ("blocks.1.attn2.to_v.weight", "missing", "blocks.0.attn1.to_q.lora_A.weight", "unexpected",
                   "blocks.0.ffn.net.0.proj.weight: shape (3, 3)", "component text_encoder/ missing",
                   "component image_encoder/ missing", "--skip image_encoder"):
        assert needle in msg, needle
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_lossy_cast_is_an_error(tmp_path):
    src = tmp_path / "src"
    numpy_transformer(src / "transformer")
    with pytest.raises(ConversionError, match=r"lossy cast.*\n.*float32 -> .* bfloat16 would lose precision"):
        convert(src, tmp_path / "out", skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
                param_dtype="bfloat16", progress=False)


def test_corrupt_and_missing_shards_are_named(tmp_path):
    src = tmp_path / "src"
    numpy_transformer(src / "transformer")
    shards = sorted((src / "transformer").glob("*-of-*.safetensors"))
    assert len(shards) >= 3
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointFileError, match=rf"{shards[1].name}.*truncated"):
        SafetensorsSource.from_model_dir(src / "transformer", "diffusion_pytorch_model")
    shards[1].write_bytes(struct.pack("<Q", 40) + b"{not json" + b" " * 40)  # corrupt header
    with pytest.raises(CheckpointFileError, match=rf"{shards[1].name}: corrupt safetensors header"):
        SafetensorsSource.from_model_dir(src / "transformer", "diffusion_pytorch_model")
    shards[2].unlink()
    with pytest.raises(ConversionError, match=rf"shard\(s\) that do not exist: \['{shards[2].name}'\]"):
        convert(src, tmp_path / "out", skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
                progress=False)


# ------------------------------------------------------------------------------------------------ sharded restore
def test_restore_into_mesh_sharding_on_8_devices(tmp_path):
    assert jax.device_count() == 8
    src = tmp_path / "src"
    sd = numpy_transformer(src / "transformer", dtype=ml_dtypes.bfloat16)
    out = tmp_path / "out"
    manifest = convert(src, out, skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"), progress=False)
    assert manifest["models"]["transformer"]["param_dtype"] == "bfloat16"
    mesh = jax.make_mesh((1, 2, 1, 4), ("data", "fsdp", "context", "tensor"))
    model = restore_model(out, "transformer", mesh, DEFAULT_LOGICAL_AXIS_RULES)
    q = model.blocks.attn1.to_q.kernel[...]  # (layers, embed, heads) = (2, 64, 64)
    assert q.sharding.spec == P(None, "fsdp", "tensor") and q.sharding.mesh.shape == mesh.shape
    assert {s.data.shape for s in q.addressable_shards} == {(2, 32, 16)}
    assert len({s.device for s in q.addressable_shards}) == 8
    want = sd["blocks.1.attn1.to_q.weight"].T
    assert np.asarray(q)[1].tobytes() == want.tobytes()
    ffn = model.blocks.ffn.proj_in.kernel[...]  # (layers, embed, mlp)
    assert ffn.sharding.spec == P(None, "fsdp", "tensor")
    assert {s.data.shape for s in ffn.addressable_shards} == {(2, 32, 32)}
    # every parameter comes back with the rules' sharding and the source's bits
    table = SPECS["transformer"].mapping(model.config)
    flat = {p: v[...] for p, v in params.flat_variables(model, FROZEN).items()}
    for key, value in table.to_torch({p: np.asarray(v) for p, v in flat.items()}).items():
        assert value.astype(sd[key].dtype).tobytes() == sd[key].tobytes(), key
    assert all(isinstance(v.sharding, jax.sharding.NamedSharding) for v in flat.values())


# ------------------------------------------------------------------------------------------------ oracle folders
def _perturb(torch, model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def write_wan_folder(torch, root: Path, dtype) -> None:
    """Tiny diffusers-layout Wan I2V folder written by diffusers / transformers ``save_pretrained``."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig as HFCLIP
    from transformers import CLIPVisionModel, UMT5EncoderModel
    from transformers import UMT5Config as HFUMT5

    from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
    from fourdnex_jax.models.text_encoder.config import UMT5Config
    from fourdnex_jax.models.vae.config import WanVAEConfig
    from fourdnex_jax.testing import torch_reference as ref

    torch.manual_seed(0)
    ref.build(ref.TINY, seed=1).to(dtype).save_pretrained(root / "transformer", max_shard_size="40KB")
    _perturb(torch, AutoencoderKLWan(**WanVAEConfig.tiny().to_diffusers_config()), 2).to(dtype).save_pretrained(
        root / "vae")
    u = UMT5Config.tiny(vocab_size=96)
    hf = HFUMT5(vocab_size=u.vocab_size, d_model=u.d_model, d_kv=u.d_kv, d_ff=u.d_ff, num_layers=u.num_layers,
                num_heads=u.num_heads, relative_attention_num_buckets=u.relative_attention_num_buckets,
                relative_attention_max_distance=u.relative_attention_max_distance, feed_forward_proj="gated-gelu",
                dropout_rate=0.0)
    _perturb(torch, UMT5EncoderModel(hf), 3).to(dtype).save_pretrained(root / "text_encoder", max_shard_size="20KB")
    c = CLIPVisionConfig.tiny()
    hf = HFCLIP(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, patch_size=c.patch_size,
                num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                image_size=c.image_size, hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps)
    _perturb(torch, CLIPVisionModel(hf), 4).to(dtype).save_pretrained(root / "image_encoder")
    _copied_components(root)


def _all_tensors(directory: Path, name: str) -> dict[str, np.ndarray]:
    source = SafetensorsSource.from_model_dir(directory, name)
    return {k: source.get(k) for k in source.keys()}


def test_training_base_restores_through_the_one_restore_path(tmp_path):
    """``training.state.restore_base`` = ``restore_params(config=run's, param_filter=FROZEN)``: the frozen base
    only (the adapter checkpoint is not read), sharded like the run's variables, and a config that differs from
    the converted one in an architecture field is refused."""
    from fourdnex_jax.training.state import ModelParts, restore_base
    from fourdnex_jax.utils.tree import flatten
    from fourdnex_jax.weights.restore import read_config, restore_params

    src = tmp_path / "src"
    sd = numpy_transformer(src / "transformer")
    out = tmp_path / "out"
    convert(src, out, skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"), progress=False)
    stored, _ = read_config(out, "transformer")
    mesh = jax.make_mesh((1, 4, 1, 2), ("data", "fsdp", "context", "tensor"))
    parts = ModelParts.build(stored.replace(attention="chunked"))  # execution fields may differ
    frozen = flatten(restore_base(str(out), parts, mesh, DEFAULT_LOGICAL_AXIS_RULES))
    assert set(frozen) == set(parts.frozen_vars)
    want = {p: np.asarray(v[...]) for p, v in params.flat_variables(restore_model(out, "transformer"), FROZEN).items()}
    for p, value in frozen.items():
        assert np.asarray(value).tobytes() == want[p].tobytes(), p
    assert frozen["blocks/attn1/to_q/kernel"].sharding.spec == P(None, "fsdp", "tensor")
    assert np.asarray(frozen["blocks/attn1/to_q/kernel"])[0].tobytes() == sd["blocks.0.attn1.to_q.weight"].T.tobytes()
    _, trainable = restore_params(out, "transformer", param_filter=lambda path, var: False)
    assert trainable == {}
    with pytest.raises(ValueError, match=r"differs from the config in \['ffn_dim'\]"):
        restore_base(str(out), ModelParts.build(stored.replace(ffn_dim=96)), mesh, DEFAULT_LOGICAL_AXIS_RULES)
    with pytest.raises(ValueError, match="either config= or overrides"):
        restore_params(out, "transformer", config=stored, attention="xla")
    # trainable='full': the same base becomes the initial value of every trained tensor, in the run's sharding
    import optax

    from fourdnex_jax.training.state import init_state, state_shardings

    full = ModelParts.build(stored.replace(attention="chunked"), mode="full")
    assert full.frozen_vars == {} and set(want) <= set(full.trainable_vars)
    tx = optax.adam(1e-3)
    state = init_state(full, tx, state_shardings(full, tx, mesh, DEFAULT_LOGICAL_AXIS_RULES), 0,
                       restore_base(str(out), full, mesh, DEFAULT_LOGICAL_AXIS_RULES))
    trained = flatten(state["trainable"])
    for p, value in want.items():
        assert np.asarray(trained[p]).tobytes() == value.tobytes(), p
    assert trained["blocks/attn1/to_q/kernel"].sharding.spec == P(None, "fsdp", "tensor")
    for p in set(trained) - set(want):  # not in the base (LoRA, domain embeddings): the model's own init
        assert p.endswith(("lora_a", "lora_b", "domain_embeddings")), p


@pytest.mark.oracle
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_roundtrip_bit_exact_all_models_and_manifest(torch_oracle, tmp_path, dtype_name):
    torch = torch_oracle
    src, out, back = tmp_path / "src", tmp_path / "jax", tmp_path / "back"
    write_wan_folder(torch, src, getattr(torch, dtype_name))
    manifest = convert(src, out, progress=False)
    export(out, back, progress=False)
    for name, spec in SPECS.items():
        before = _all_tensors(src / name, spec.weight_name)
        after = _all_tensors(back / name, spec.weight_name)
        ignored = manifest["models"][name]["tensors_ignored"]
        assert set(after) == set(before) - set(ignored), name
        for key, value in after.items():
            assert value.dtype == before[key].dtype and value.shape == before[key].shape, key
            assert value.tobytes() == before[key].tobytes(), f"{name}/{key} differs"
        assert json.loads((back / name / "config.json").read_text()) == json.loads((src / name / "config.json")
                                                                                  .read_text())
        entry = manifest["models"][name]
        assert entry["param_dtype"] == dtype_name and entry["source_passes"] == 1
        assert entry["tensors_converted"] + len(ignored) == len(before)
        for rel, rec in entry["files"].items():
            assert rec["sha256"] == sha256_file(src / rel) and rec["bytes"] == (src / rel).stat().st_size, rel
    assert len([f for f in manifest["models"]["transformer"]["files"] if f.endswith(".safetensors")]) > 2  # sharded
    assert set(manifest["copied"]) == {"tokenizer", "scheduler", "image_processor"}
    assert (back / "tokenizer" / "tokenizer.json").read_text() == (src / "tokenizer" / "tokenizer.json").read_text()
    assert manifest["skipped"] == [] and manifest["direction"] == "torch-to-jax"
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["models"]["vae"]["bytes_stored"] > 0


def _lora_pair(torch, rank=4):
    """A 4DNeX torch model (base from a plain diffusers model) with a random LoRA and domain embeddings."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from fourdnex_jax.testing import torch_reference as ref

    plain = ref.build(ref.TINY, seed=1)
    m = ref.WanTransformer3DModelDembSameRope(**ref.TINY).eval()
    m.load_state_dict(plain.state_dict(), strict=False)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        m.learnable_domain_embeddings.copy_(0.3 * torch.randn(m.learnable_domain_embeddings.shape, generator=gen))
    m.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                             target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    lora = get_peft_model_state_dict(m)
    return plain, m, lora


@pytest.mark.oracle
def test_exported_adapter_loads_in_diffusers_and_matches_our_model(torch_oracle, tmp_path):
    torch = torch_oracle
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig

    from fourdnex_jax.testing import torch_reference as ref

    plain, m, lora = _lora_pair(torch)
    src = tmp_path / "src"
    plain.save_pretrained(src / "transformer", max_shard_size="40KB")
    adapter = tmp_path / "adapter"
    WanImageToVideoPipeline.save_lora_weights(adapter, transformer_lora_layers=lora)  # no alpha metadata
    torch.save(m.learnable_domain_embeddings.detach().clone(), adapter / adapter_lib.DOMAIN_FILE)
    out, back = tmp_path / "jax", tmp_path / "back"
    manifest = convert(src, out, adapter=adapter, skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
                       progress=False)
    a = manifest["adapter"]
    assert a["effective_scale"] == 0.5 and a["key_prefix"] == "transformer." and a["rank"] == 4
    assert "no lora_adapter_metadata" in a["derivation"] and a["export_fuse_scale"] == 0.5
    model = restore_model(out, "transformer")
    assert model.config.lora_scale == 0.5 and model.config.modality_layout == "width"
    export(out, back, progress=False)
    assert manifest["adapter"]["files"][adapter_lib.LORA_FILE]["sha256"] == sha256_file(adapter / adapter_lib.LORA_FILE)

    # diffusers, as 4DNeX does it: load_lora_weights (peft scaling 1.0: no alpha metadata) + fuse_lora(scale)
    exported = back / "adapter"
    state = WanImageToVideoPipeline.lora_state_dict(exported)
    assert all(k.startswith("transformer.") for k in state)
    torch_model = ref.WanTransformer3DModelDembSameRope(**ref.TINY).eval()
    torch_model.load_state_dict(plain.state_dict(), strict=False)
    WanImageToVideoPipeline.load_lora_into_transformer(state, transformer=torch_model)
    assert torch_model.blocks[0].attn1.to_q.scaling["default_0"] == 1.0
    fuse = json.loads((back / "manifest.json").read_text())["adapter"]["fuse_lora_scale"]
    torch_model.fuse_lora(lora_scale=fuse)
    demb = torch.load(exported / adapter_lib.DOMAIN_FILE, weights_only=True)
    with torch.no_grad():
        torch_model.learnable_domain_embeddings.copy_(demb)
    batch = ref.inputs(ref.TINY, width=8, seed=3)
    theirs = ref.forward(torch_model, batch)
    err = rel_l2(_jax_forward(model, batch), theirs)
    print(f"exported adapter: diffusers fuse_lora({fuse}) vs our model rel L2 = {err:.2e}")
    assert err <= 1e-5
    # the trained torch model at training scale 0.5 (alpha/r) is the same function
    for module in m.modules():
        if hasattr(module, "scaling") and isinstance(module.scaling, dict):
            module.scaling["default"] = 0.5
    assert rel_l2(ref.forward(m, batch), theirs) <= 1e-5
    # an adapter *with* alpha metadata (alpha 2, r 4) fused at 0.5 is 0.25, as diffusers would do it
    meta = tmp_path / "adapter_meta"
    WanImageToVideoPipeline.save_lora_weights(
        meta, transformer_lora_layers=lora,
        transformer_lora_adapter_metadata=LoraConfig(r=4, lora_alpha=2, target_modules=["to_q"]).to_dict())
    read = adapter_lib.read_adapter(meta)
    assert read.metadata["lora_alpha"] == 2 and read.effective_scale == 0.25 and "lora_alpha 2 / r 4" in read.derivation


def test_adapter_without_prefix_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    lora = {f"blocks.{i}.attn{a}.{m}.lora_{x}.weight": rng.standard_normal((4, 64) if x == "A" else (64, 4))
            .astype(np.float32) for i in range(2) for a in (1, 2) for m in ("to_q", "to_k", "to_v", "to_out.0")
            for x in "AB"}
    adapter_lib.write_adapter(tmp_path, {k: v for k, v in lora.items()}, rng.standard_normal((2, 64)).astype(
        np.float32))
    # rewrite without the prefix: both forms are accepted
    tensors = {k[len("transformer."):]: v for k, v in _all_tensors(tmp_path, "pytorch_lora_weights").items()}
    (tmp_path / "pytorch_lora_weights.safetensors").unlink()
    _write_st(tmp_path, "pytorch_lora_weights", tensors)
    read = adapter_lib.read_adapter(tmp_path, fuse_scale=0.5)
    assert not read.had_prefix and read.rank == 4 and read.targets == ("to_k", "to_out.0", "to_q", "to_v")
    assert read.effective_scale == 0.5 and read.metadata is None
    np.testing.assert_array_equal(read.lora["blocks.1.attn2.to_v.lora_B.weight"],
                                  lora["blocks.1.attn2.to_v.lora_B.weight"])
    assert load_pt_tensor(tmp_path / adapter_lib.DOMAIN_FILE).shape == (2, 64)
