"""UMT5 text encoder vs transformers' UMT5EncoderModel / T5Tokenizer and diffusers' Wan prompt embedding (fp32, CPU).

Tiny random models with every parameter (norm weights and position-bias tables included) perturbed away from its
init, built in-process; tokenizer files are written with ``save_pretrained`` into a tmp folder. No network.
"""

import json
import string
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.models.mapping import DictSource, WeightMappingError
from fourdnex_jax.models.params import count, flat_variables, targets_of
from fourdnex_jax.models.text_encoder import (
    UMT5Config,
    UMT5Encoder,
    UMT5Tokenizer,
    encode_prompts,
    umt5_mapping,
    wan_prompt_embeds,
)
from fourdnex_jax.models.text_encoder.model import T5LayerNorm, relative_position_buckets
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights.from_diffusers import load_umt5_from_hf

PROMPTS = ["a robot walks", "  the camera   pans, slowly!  the scene POINTMAP_STYLE. ", "x" * 600,
           "&amp;quot;a&amp;quot; scene with UNKNOWN chars 7!"]

# What transformers writes for Wan's text_encoder/config.json (google/umt5-xxl encoder), as a literal.
WAN_TEXT_CONFIG = {
    "architectures": ["UMT5EncoderModel"], "classifier_dropout": 0.0, "d_ff": 10240, "d_kv": 64, "d_model": 4096,
    "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
    "layer_norm_epsilon": 1e-06, "model_type": "umt5", "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24,
    "output_past": True, "pad_token_id": 0, "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32, "scalable_attention": True, "tie_word_embeddings": False,
    "tokenizer_class": "T5Tokenizer", "torch_dtype": "float32", "transformers_version": "4.41.2", "use_cache": True,
    "vocab_size": 256384,
}


# ---------------------------------------------------------------------------------------------------- helpers
def _hf_config(cfg: UMT5Config):
    from transformers import UMT5Config as HFConfig

    return HFConfig(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                    num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                    relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                    relative_attention_max_distance=cfg.relative_attention_max_distance,
                    layer_norm_epsilon=cfg.layer_norm_epsilon, feed_forward_proj=cfg.feed_forward_proj,
                    dropout_rate=0.0)


def _torch_model(torch, cfg: UMT5Config, seed: int = 0):
    """transformers encoder with every parameter perturbed (norm weights become ~1 +- 0.3, not exactly 1)."""
    from transformers import UMT5EncoderModel

    torch.manual_seed(seed)
    model = UMT5EncoderModel(_hf_config(cfg)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen) * p.std().clamp(min=1.0))
    return model


def _tokenizer_dir(tmp_path):
    """A tiny SentencePiece-Unigram T5 tokenizer, saved as transformers saves it (tokenizer.json + config)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -2.0) for c in string.ascii_lowercase]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ".,!?'\"&;_-"]
    pieces += [("\u2581" + w, -1.0) for w in ["a", "the", "robot", "walks", "camera", "scene", "with"]]
    T5Tokenizer(vocab=pieces, extra_ids=2).save_pretrained(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_pair(torch_oracle):
    cfg = UMT5Config.tiny(vocab_size=96)
    tm = _torch_model(torch_oracle, cfg)
    return cfg, tm, load_umt5_from_hf(tm.state_dict(), cfg)


# ---------------------------------------------------------------------------------------------------- config
def test_config_from_wan_config_json():
    assert UMT5Config.from_hf_config(WAN_TEXT_CONFIG) == UMT5Config.umt5_xxl()
    cfg = UMT5Config.umt5_xxl()
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.d_kv, cfg.d_ff, cfg.vocab_size) == (
        4096, 24, 64, 64, 10240, 256384)
    assert (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, cfg.is_gated,
            cfg.activation) == (32, 128, True, "gelu_new")
    with pytest.raises(ValueError, match=r"unknown UMT5 config key\(s\) \['rope_theta'\]"):
        UMT5Config.from_hf_config({**WAN_TEXT_CONFIG, "rope_theta": 1e4})
    with pytest.raises(ValueError, match="decoder"):
        UMT5Config.from_hf_config({**WAN_TEXT_CONFIG, "is_decoder": True})
    with pytest.raises(ValueError, match="dense_act_fn"):
        UMT5Config.from_hf_config({**WAN_TEXT_CONFIG, "dense_act_fn": "relu"})


@pytest.mark.oracle
def test_config_from_transformers_dict(torch_oracle):
    cfg = UMT5Config.tiny()
    assert UMT5Config.from_hf_config(_hf_config(cfg).to_dict()) == cfg


# ---------------------------------------------------------------------------------------------------- layers
def test_params_are_stacked_and_named():
    model = UMT5Encoder(UMT5Config.tiny(), rngs=nnx.Rngs(0))
    for path, var in flat_variables(model, nnx.Param).items():
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var.ndim and all(isinstance(a, str) for a in axes), (path, axes)
        assert (axes[0] == "layers") == path.startswith("blocks/"), (path, axes)
    assert flat_variables(model)["blocks/attn/relative_attention_bias"].shape == (2, 8, 4)  # a table per layer


@pytest.mark.oracle
def test_relative_position_buckets_match_torch(torch_oracle, tiny_pair):
    torch = torch_oracle
    attention = tiny_pair[1].encoder.block[0].layer[0].SelfAttention
    for length, buckets, distance in [(512, 32, 128), (40, 8, 20), (300, 16, 64)]:
        attention.relative_attention_num_buckets = buckets
        attention.relative_attention_max_distance = distance
        rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
        ref = attention._relative_position_bucket(rel).numpy()
        np.testing.assert_array_equal(relative_position_buckets(length, length, buckets, distance), ref)
    attention.relative_attention_num_buckets, attention.relative_attention_max_distance = 8, 20


@pytest.mark.oracle
def test_t5_layer_norm_dtypes_match_transformers(torch_oracle):
    """Output dtype and bf16 values equal UMT5LayerNorm's for every input/weight dtype pair (layers.RMSNorm returns
    the input dtype instead, which is why the encoder has its own norm)."""
    import ml_dtypes
    from transformers.models.umt5.modeling_umt5 import UMT5LayerNorm

    torch = torch_oracle
    to_np = lambda t: (t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
                       if t.dtype == torch.bfloat16 else t.numpy())
    gen = torch.Generator().manual_seed(3)
    x32, w32 = 3 * torch.randn(2, 5, 48, generator=gen), 1 + 0.3 * torch.randn(48, generator=gen)
    for x_dtype in (torch.float32, torch.bfloat16):
        for w_dtype in (torch.float32, torch.bfloat16):
            ref_norm = UMT5LayerNorm(48, eps=1e-6)
            ref_norm.weight.data = w32.to(w_dtype)
            with torch.no_grad():
                ref = to_np(ref_norm(x32.to(x_dtype)))
            norm = T5LayerNorm(48, eps=1e-6, param_dtype=jnp.bfloat16 if w_dtype == torch.bfloat16 else jnp.float32)
            norm.scale[...] = jnp.asarray(to_np(ref_norm.weight.data))
            out = np.asarray(norm(jnp.asarray(to_np(x32.to(x_dtype)))))
            assert out.dtype == ref.dtype, (x_dtype, w_dtype)
            if ref.dtype == ml_dtypes.bfloat16:
                np.testing.assert_array_equal(out, ref)
            else:
                assert rel_l2(out, ref) <= 1e-6


# ---------------------------------------------------------------------------------------------------- parity
@pytest.mark.oracle
@pytest.mark.parametrize("ffn", ["gated-gelu", "relu"])
def test_encoder_matches_transformers(torch_oracle, tiny_pair, ffn):
    torch = torch_oracle
    if ffn == "gated-gelu":
        cfg, tm, model = tiny_pair
    else:
        cfg = UMT5Config(**{**UMT5Config.tiny(vocab_size=96).__dict__, "feed_forward_proj": ffn})
        tm = _torch_model(torch, cfg, seed=5)
        model = load_umt5_from_hf(tm.state_dict(), cfg)
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, cfg.vocab_size, (3, 37), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 20:] = 0
    mask[2, 1:] = 0  # a single real token
    with torch.no_grad():
        ref = tm(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
        ref_nomask = tm(input_ids=ids).last_hidden_state.numpy()
    out = nnx.jit(lambda m, i, k: m.encode(i, k))(model, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()))
    assert out.shape == (3, 37, cfg.d_model)
    err = rel_l2(out, ref)
    print(f"UMT5 encoder ({ffn}) rel L2 {err:.2e}")
    assert err <= 1e-5
    assert rel_l2(model(jnp.asarray(ids.numpy())), ref_nomask) <= 1e-5


def _diffusers_prompt_embeds(tokenizer, text_encoder, prompts):
    """diffusers' own ``_get_t5_prompt_embeds`` (incl. ftfy/whitespace cleaning) on a stand-in pipeline object."""
    import torch
    from diffusers import WanImageToVideoPipeline

    stub = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=text_encoder)
    embeds = WanImageToVideoPipeline._get_t5_prompt_embeds(stub, prompt=prompts, max_sequence_length=512,
                                                           device=torch.device("cpu"), dtype=torch.float32)
    return embeds.detach().numpy()


@pytest.mark.oracle
def test_prompt_embeds_match_diffusers(torch_oracle, tiny_pair, tmp_path):
    from transformers import AutoTokenizer

    cfg, tm, model = tiny_pair
    folder = _tokenizer_dir(tmp_path)
    ref = _diffusers_prompt_embeds(AutoTokenizer.from_pretrained(folder), tm, PROMPTS)
    out = np.asarray(encode_prompts(model, UMT5Tokenizer.from_dir(folder), PROMPTS))
    assert out.shape == ref.shape == (len(PROMPTS), 512, cfg.d_model)
    err = rel_l2(out, ref)
    print(f"Wan prompt embeds rel L2 {err:.2e}")
    assert err <= 1e-5
    zero_ref, zero_out = np.all(ref == 0, axis=-1), np.all(out == 0, axis=-1)
    np.testing.assert_array_equal(zero_out, zero_ref)  # exact zeros at exactly the same positions
    lens = (~zero_ref).sum(1)
    assert lens[2] == 512 and lens.min() < 20  # truncated prompt fills all 512, short ones are mostly zeros
    assert np.all(np.any(out[np.arange(len(PROMPTS)), lens - 1] != 0, axis=-1))


def test_wan_prompt_embeds_zeroing():
    model = UMT5Encoder(UMT5Config.tiny(), rngs=nnx.Rngs(1))
    ids = jnp.array([[5, 6, 1, 0, 0, 0], [7, 8, 9, 10, 11, 1]])
    mask = (jnp.arange(6)[None] < jnp.array([[3], [6]])).astype(jnp.int32)
    out = np.asarray(wan_prompt_embeds(model, ids, mask, dtype=jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and np.all(out[0, 3:] == 0) and np.all(np.any(out[:, :3] != 0, axis=-1))


# ---------------------------------------------------------------------------------------------------- tokenizer
@pytest.mark.oracle
def test_tokenizer_ids_match_transformers(torch_oracle, tmp_path):
    from transformers import AutoTokenizer

    folder = _tokenizer_dir(tmp_path)
    ref_tok, tok = AutoTokenizer.from_pretrained(folder), UMT5Tokenizer.from_dir(folder)
    texts = PROMPTS + ["", "<extra_id_0> a robot", "ünïcödé 日本語 and tabs\tand\nnewlines", "the " * 300]
    for max_length in (512, 9):
        ref = ref_tok(texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
                      return_attention_mask=True, return_tensors="np")
        ids, mask = tok(texts, max_length=max_length)
        np.testing.assert_array_equal(ids, ref.input_ids)
        np.testing.assert_array_equal(mask, ref.attention_mask)
    assert tok.vocab_size == len(ref_tok)


def test_tokenizer_needs_tokenizer_json(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match="only spiece.model"):
        UMT5Tokenizer.from_dir(tmp_path)


# ---------------------------------------------------------------------------------------------------- mapping
@pytest.mark.oracle
def test_mapping_round_trip_is_bit_exact(torch_oracle, tiny_pair):
    cfg, tm, model = tiny_pair
    state = {k: v.numpy() for k, v in tm.state_dict().items()}
    mapping = umt5_mapping(cfg)
    flat = mapping.to_jax(DictSource(state), targets_of(model))
    back = mapping.to_torch({p: np.asarray(v[...]) for p, v in flat_variables(model).items()})
    assert set(back) == set(state) - {"encoder.embed_tokens.weight"}  # the tied copy is not written twice
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
        assert value.dtype == state[key].dtype
    for path, value in flat.items():
        np.testing.assert_array_equal(value, np.asarray(flat_variables(model)[path][...]))


def _numpy_state(cfg: UMT5Config) -> dict:
    model = UMT5Encoder(cfg, rngs=nnx.Rngs(2))
    return umt5_mapping(cfg).to_torch({p: np.asarray(v[...]) for p, v in flat_variables(model).items()})


def test_loader_strict_errors():
    cfg = UMT5Config.tiny()
    state = _numpy_state(cfg)
    missing = dict(state)
    del missing["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"]
    with pytest.raises(WeightMappingError, match=r"1 missing key\(s\): \['encoder\.block\.1\.layer\.0\.SelfAttention"
                                                 r"\.relative_attention_bias\.weight'\]"):
        load_umt5_from_hf(missing, cfg)
    with pytest.raises(WeightMappingError, match=r"1 unexpected key\(s\): \['lm_head\.weight'\]"):
        load_umt5_from_hf({**state, "lm_head.weight": state["shared.weight"]}, cfg)
    bad = {**state, "encoder.block.0.layer.1.DenseReluDense.wo.weight": np.zeros((cfg.d_model, cfg.d_ff + 1),
                                                                                 np.float32)}
    with pytest.raises(WeightMappingError, match=r"encoder\.block\.0\.layer\.1\.DenseReluDense\.wo\.weight: shape "
                                                 r"\(24, 41\) does not map to blocks/ffn/wo/kernel \(40, 24\)"):
        load_umt5_from_hf(bad, cfg)
    with pytest.raises(WeightMappingError, match=r"10 missing key\(s\): \['encoder\.block\.2\."):  # too deep a config
        load_umt5_from_hf(state, UMT5Config(**{**cfg.__dict__, "num_layers": 3}))


def test_loader_tied_embedding_keys():
    cfg = UMT5Config.tiny()
    state = _numpy_state(cfg)
    ids = jnp.array([[3, 4, 5, 1]])
    ref = load_umt5_from_hf(state, cfg)(ids)
    both = load_umt5_from_hf({**state, "encoder.embed_tokens.weight": state["shared.weight"]}, cfg)
    only_tied = dict(state)
    only_tied["encoder.embed_tokens.weight"] = only_tied.pop("shared.weight")
    np.testing.assert_array_equal(both(ids), ref)
    np.testing.assert_array_equal(load_umt5_from_hf(only_tied, cfg)(ids), ref)


@pytest.mark.oracle
def test_load_from_save_pretrained_folder(torch_oracle, tiny_pair, tmp_path):
    cfg, tm, _ = tiny_pair
    tm.save_pretrained(tmp_path)
    assert UMT5Config.from_hf_config(json.loads((tmp_path / "config.json").read_text())) == cfg
    model = load_umt5_from_hf(tmp_path)
    ids = torch_oracle.randint(0, cfg.vocab_size, (1, 16), generator=torch_oracle.Generator().manual_seed(1))
    with torch_oracle.no_grad():
        ref = tm(input_ids=ids).last_hidden_state.numpy()
    assert rel_l2(model(jnp.asarray(ids.numpy())), ref) <= 1e-5


# ---------------------------------------------------------------------------------------------------- full size
@pytest.mark.oracle
def test_full_size_parameter_count(torch_oracle):
    from transformers import UMT5EncoderModel

    cfg = UMT5Config.umt5_xxl()
    with torch_oracle.device("meta"):
        ref = sum(p.numel() for p in UMT5EncoderModel(_hf_config(cfg)).parameters())  # tied embedding counted once
    abstract = nnx.eval_shape(lambda: UMT5Encoder(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16))
    total, nbytes = count(abstract)
    print(f"UMT5-XXL encoder parameters: ours {total:,}, transformers {ref:,}")
    assert total == ref
    assert nbytes == {"bfloat16": 2 * total}
    out = nnx.eval_shape(lambda m: m(jnp.zeros((2, 512), jnp.int32), jnp.ones((2, 512), jnp.int32)), abstract)
    assert out.shape == (2, 512, 4096)


def test_bf16_runs_close_to_fp32():
    cfg = UMT5Config.tiny()
    state = _numpy_state(cfg)
    ids = jnp.array([[3, 9, 27, 1, 0], [5, 6, 7, 8, 1]])
    mask = (ids > 0).astype(jnp.int32).at[1, 4].set(1)
    ref = load_umt5_from_hf(state, cfg)(ids, mask)
    half = load_umt5_from_hf(state, cfg, param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
    out = half(ids, mask)
    assert flat_variables(half)["blocks/attn/q/kernel"].dtype == jnp.bfloat16 and out.dtype == jnp.bfloat16
    assert rel_l2(out, ref) <= 3e-2
