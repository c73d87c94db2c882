"""Conversion and readers refuse what would give a wrong model or exhaust memory (issue 18): bounded .pt reads (no
zero-stride blow-up, no zip bomb), NaN/inf weights, a damaged Hugging Face download, an incomplete 4DNeX adapter,
config keys of newer libraries (accepted only when they cannot change the module), messages that suggest a fix that
applies, and an export published as a unit."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.models import params
from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.utils.errors import InputError, OutputExistsError
from fourdnex_jax.weights import adapter as adapter_lib
from fourdnex_jax.weights import torch_pickle as tp
from fourdnex_jax.weights.jax_to_torch import export, library_config
from fourdnex_jax.weights.registry import SPECS
from fourdnex_jax.weights.torch_to_jax import ConversionError, convert
from tests.weights.test_convert import SKIP_ENCODERS, _write_st, numpy_transformer

ROOT = Path(__file__).resolve().parents[2]
ONLY_TEXT = ("transformer", "vae", "image_encoder", "tokenizer", "scheduler", "image_processor")


def _pt_with(tmp_path: Path, size, stride, storage_numel: int, compress: bool = False, payload: bytes | None = None
             ) -> Path:
    """A torch zip whose one tensor has the given geometry over a float32 storage of ``storage_numel``."""
    storage = tp._tuple([tp._str("storage"), tp._global("torch", "FloatStorage"), tp._str("0"), tp._str("cpu"),
                         tp._int(storage_numel)]) + b"Q"
    hooks = tp._global("collections", "OrderedDict") + b")R"
    args = tp._tuple([storage, tp._int(0), tp._tuple([tp._int(s) for s in size]),
                      tp._tuple([tp._int(s) for s in stride]), b"\x89", hooks])
    pkl = b"\x80\x02" + tp._global("torch._utils", "_rebuild_tensor_v2") + args + b"R."
    path = tmp_path / "t.pt"
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", payload if payload is not None else b"\0" * (4 * storage_numel))
    return path


def test_tiny_pt_asking_for_16_gib_is_refused(tmp_path):
    path = _pt_with(tmp_path, size=(2**32,), stride=(0,), storage_numel=1)
    assert path.stat().st_size < 1000
    with pytest.raises(tp.PtFormatError, match="overlapping strides"):
        tp.load_pt(path)
    np.testing.assert_array_equal(tp.load_pt(_pt_with(tmp_path, size=(2, 3), stride=(3, 1), storage_numel=6)),
                                  np.zeros((2, 3), np.float32))


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    n = 2**24  # 64 MiB of zeros, ~65 KB deflated
    path = _pt_with(tmp_path, size=(n,), stride=(1,), storage_numel=n, compress=True)
    assert path.stat().st_size < 200_000
    t0 = time.perf_counter()
    with pytest.raises(tp.PtFormatError, match="compressed"):
        tp.load_pt(path)
    assert time.perf_counter() - t0 < 5.0  # refused from the zip directory, not after inflating


def test_nan_weights_fail_the_conversion_and_nothing_is_published(tmp_path):
    src = tmp_path / "src"
    sd = numpy_transformer(src / "transformer")
    key = "blocks.1.attn1.to_k.weight"
    bad = dict(sd)
    bad[key] = bad[key].copy()
    bad[key][0, 0] = np.nan
    for f in (src / "transformer").glob("*.safetensors*"):
        f.unlink()
    _write_st(src / "transformer", "diffusion_pytorch_model", bad)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=rf"NaN/inf in 1 tensor\(s\): \['{key}'\]"):
        convert(src, out, skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no bundle, no temporary folder


def test_damaged_hub_download_is_detected(tmp_path):
    """A Hugging Face cache snapshot links each weight file to blobs/<sha256>: a file whose content no longer has
    that hash (bit flip, partial download) fails the conversion."""
    src = tmp_path / "snap"
    numpy_transformer(src / "transformer", max_shard_bytes=2**62)
    f = src / "transformer" / "diffusion_pytorch_model.safetensors"
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    wrong = blobs / ("0" * 64)  # the name the hub would give a file with another content
    os.replace(f, wrong)
    f.symlink_to(wrong)
    with pytest.raises(ConversionError, match="differ from the Hugging Face download's published hash"):
        convert(src, tmp_path / "out", skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
                progress=False)
    from fourdnex_jax.weights.safetensors import sha256_file

    right = blobs / sha256_file(wrong)
    os.replace(wrong, right)
    f.unlink()
    f.symlink_to(right)
    convert(src, tmp_path / "out", skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
            progress=False)


def _adapter(directory: Path, attentions=(1, 2), domain: bool = True) -> None:
    rng = np.random.default_rng(0)
    lora = {f"blocks.{i}.attn{a}.{m}.lora_{x}.weight": rng.standard_normal((4, 64) if x == "A" else (64, 4))
            .astype(np.float32) for i in range(2) for a in attentions for m in ("to_q", "to_k", "to_v", "to_out.0")
            for x in "AB"}
    adapter_lib.write_adapter(directory, lora, rng.standard_normal((2, 64)).astype(np.float32) if domain else None)


def test_incomplete_4dnex_adapter_is_refused_unless_allowed(tmp_path):
    src = tmp_path / "src"
    numpy_transformer(src / "transformer")
    skip = SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor")
    _adapter(tmp_path / "no_domain", domain=False)
    with pytest.raises(ConversionError, match="learnable_domain_embeddings.pt missing.*--allow-no-domain-embeddings"):
        convert(src, tmp_path / "o1", adapter=tmp_path / "no_domain", skip=skip, progress=False)
    _adapter(tmp_path / "attn1_only", attentions=(1,))
    with pytest.raises(ConversionError, match=r"LoRA targets \['attn1.to_k'.*differ from the expected"):
        convert(src, tmp_path / "o2", adapter=tmp_path / "attn1_only", skip=skip, progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    m = convert(src, tmp_path / "o3", adapter=tmp_path / "no_domain", skip=skip, progress=False,
                allow_no_domain_embeddings=True)
    assert m["adapter"]["domain_embeddings"] is False
    m = convert(src, tmp_path / "o4", adapter=tmp_path / "attn1_only", skip=skip, progress=False, lora_targets=None)
    assert sorted(m["adapter"]["targets"]) == ["attn1.to_k", "attn1.to_out.0", "attn1.to_q", "attn1.to_v"]
    _adapter(tmp_path / "full")
    convert(src, tmp_path / "o5", adapter=tmp_path / "full", skip=skip, progress=False)


def _text_encoder_folder(directory: Path, hf: dict, cfg: UMT5Config) -> None:
    spec = SPECS["text_encoder"]
    rng = np.random.default_rng(1)
    targets = params.targets_of(spec.abstract(cfg, "float32"), spec.param_filter)
    flat = {p: rng.standard_normal(t.shape).astype(np.float32) for p, t in targets.items()}
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(hf))
    _write_st(directory, spec.weight_name, spec.mapping(cfg).to_torch(flat))


def test_config_drift_umt5(tmp_path):
    """transformers 5 writes the decoder-only ``scale_decoder_outputs`` into UMT5 configs: accepted and recorded;
    a changed architecture key (``d_model``) or an unknown key is still refused."""
    cfg = UMT5Config.tiny()
    hf = dict(library_config("text_encoder", cfg), scale_decoder_outputs=True, transformers_version="5.24.0")
    _text_encoder_folder(tmp_path / "ok" / "text_encoder", hf, cfg)
    m = convert(tmp_path / "ok", tmp_path / "out_ok", skip=ONLY_TEXT, progress=False)
    accepted = m["models"]["text_encoder"]["accepted_config_keys"]
    decoder = accepted["scale_decoder_outputs"]
    assert decoder["value"] is True and "decoder-only" in decoder["why"]
    changed = dict(hf, d_model=cfg.d_model * 2)  # the weights are of the original width
    _text_encoder_folder(tmp_path / "wide" / "text_encoder", changed, cfg)
    with pytest.raises(ConversionError, match=r"\[text_encoder\].*does not match"):
        convert(tmp_path / "wide", tmp_path / "out_wide", skip=ONLY_TEXT, progress=False)
    _text_encoder_folder(tmp_path / "unknown" / "text_encoder", dict(hf, new_attention_trick=1), cfg)
    with pytest.raises(ConversionError, match="unknown UMT5 config key.*new_attention_trick"):
        convert(tmp_path / "unknown", tmp_path / "out_unknown", skip=ONLY_TEXT, progress=False)


def test_lossy_cast_messages_suggest_a_fix_that_applies(tmp_path):
    src = tmp_path / "src"
    sd = numpy_transformer(src / "transformer")
    bad = dict(sd)
    bad["blocks.0.attn1.to_q.weight"] = bad["blocks.0.attn1.to_q.weight"].astype(np.float64)
    bad["blocks.0.attn1.to_k.weight"] = np.zeros(bad["blocks.0.attn1.to_k.weight"].shape, np.int64)
    for f in (src / "transformer").glob("*.safetensors*"):
        f.unlink()
    _write_st(src / "transformer", "diffusion_pytorch_model", bad)
    with pytest.raises(ConversionError) as e:
        convert(src, tmp_path / "out", skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
                progress=False)
    lines = {ln.split(":")[0].strip(" -"): ln for ln in str(e.value).splitlines()}
    q, k = lines["blocks.0.attn1.to_q.weight"], lines["blocks.0.attn1.to_k.weight"]
    assert "float64" in q and "cast the source to float32" in q and "--param-dtype" not in q
    assert "int64" in k and "not a weight of this model" in k and "--param-dtype" not in k


def _flat(bundle_dir) -> dict:
    """{path: array} of a bundle's transformer (the weights and the domain embeddings)."""
    from flax import nnx

    from fourdnex_jax.weights.restore import restore_model

    state = nnx.to_flat_state(nnx.state(restore_model(bundle_dir, "transformer")))
    return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in state}


def test_export_of_the_shipped_bundle_round_trips_and_is_published_as_a_unit(tmp_path):
    out = tmp_path / "export"
    m = export(ROOT / "checkpoints" / "tiny", out, progress=False)
    assert set(m["models"]) == {"transformer", "vae", "text_encoder", "image_encoder"}
    text = json.loads((out / "text_encoder" / "config.json").read_text())
    assert UMT5Config.from_hf_config(text) == UMT5Config(**{k: text[k] for k in (
        "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets",
        "relative_attention_max_distance", "layer_norm_epsilon", "feed_forward_proj")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary sibling left
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export(ROOT / "checkpoints" / "tiny", out, progress=False)
    # the tiny model was trained whole: its adapter is the domain embeddings and an empty LoRA file
    assert (m["adapter"]["rank"], m["adapter"]["targets"], m["adapter"]["domain_embeddings"]) == (0, [], True)
    # and back: the exported folder converts, to the same DiT weights
    back = convert(out, tmp_path / "again", adapter=out / "adapter", preset="tiny", progress=False)
    assert back["adapter"]["domain_embeddings"] is True
    shipped, again = _flat(ROOT / "checkpoints" / "tiny"), _flat(tmp_path / "again")
    assert sorted(again) == sorted(shipped)
    for name, value in again.items():
        np.testing.assert_array_equal(value, shipped[name], err_msg=name)
    with pytest.raises(InputError, match="no such folder"):
        export(tmp_path / "nope", tmp_path / "x", progress=False)


def test_export_of_a_lora_bundle_round_trips(tmp_path):
    """A bundle with a LoRA (the 4DNeX case): the adapter exports in the release format and converts back, with
    the default (4DNeX) targets, to the same DiT weights, LoRA and domain embeddings included."""
    from fourdnex_jax.testing.random_models import write_random_bundle

    src = write_random_bundle(tmp_path / "bundle")
    m = export(src, tmp_path / "export", progress=False)
    assert m["adapter"]["rank"] > 0 and m["adapter"]["domain_embeddings"] is True
    back = convert(tmp_path / "export", tmp_path / "again", adapter=tmp_path / "export" / "adapter", preset="tiny",
                   progress=False)
    assert back["adapter"]["domain_embeddings"] is True
    original, again = _flat(src), _flat(tmp_path / "again")
    assert sorted(again) == sorted(original) and any("lora" in k for k in original)
    for name, value in again.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)


def test_checkpoint_file_index_names_a_missing_or_truncated_file(tmp_path):
    """save_flat lists its files; a removed or cut data file is reported by name before orbax reads anything, and
    the intact checkpoint restores unchanged (orbax ignores the index)."""
    import jax

    from fourdnex_jax.weights.orbax import FILE_INDEX, file_index_problems, restore_flat, save_flat

    values = {"a/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones((4,), np.float32)}
    ckpt = save_flat(tmp_path / "ckpt", values)
    index = json.loads((ckpt / FILE_INDEX).read_text())["files"]
    assert "_METADATA" in index and any(k.endswith("manifest.ocdbt") for k in index)
    assert file_index_problems(ckpt) == []
    restored = restore_flat(ckpt, {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in values.items()})
    for k, v in values.items():
        np.testing.assert_array_equal(np.asarray(restored[k]), v)
    data = max((p for p in ckpt.rglob("*") if p.is_file() and "/d/" in p.as_posix()), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:-1])
    (problem,) = file_index_problems(ckpt)
    assert str(ckpt) in problem and data.relative_to(ckpt).as_posix() in problem and "bytes" in problem
    data.unlink()
    (problem,) = file_index_problems(ckpt)
    assert f"{data.relative_to(ckpt).as_posix()} missing" in problem
