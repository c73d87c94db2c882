"""CLIP vision tower + preprocessing vs transformers' CLIPVisionModel / CLIPImageProcessor and diffusers' Wan
``encode_image`` (fp32, CPU). Tiny random models with every parameter perturbed; a synthetic photo made with PIL."""

import json
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.media.resize import resize_uint8
from fourdnex_jax.models.image_encoder import (
    CLIPPreprocessConfig,
    CLIPVisionConfig,
    CLIPVisionTower,
    clip_vision_mapping,
    preprocess_images,
)
from fourdnex_jax.models.image_encoder.preprocess import shortest_edge_size
from fourdnex_jax.models.mapping import DictSource, WeightMappingError
from fourdnex_jax.models.params import count, flat_variables, targets_of
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights.from_diffusers import load_clip_vision_from_hf

# Wan2.1-I2V-14B-480P-Diffusers image_encoder/config.json (laion/CLIP-ViT-H-14-laion2B-s32B-b79K vision tower,
# saved from CLIPVisionModelWithProjection by transformers 4), as a literal.
WAN_IMAGE_CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"], "attention_dropout": 0.0, "dropout": 0.0,
    "hidden_act": "gelu", "hidden_size": 1280, "image_size": 224, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05, "model_type": "clip_vision_model",
    "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 32, "patch_size": 14, "projection_dim": 1024,
    "torch_dtype": "float32", "transformers_version": "4.48.0",
}
# image_processor/preprocessor_config.json (OpenAI CLIP preprocessing).
WAN_PREPROCESSOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
}


# ---------------------------------------------------------------------------------------------------- helpers
def _hf_config(cfg: CLIPVisionConfig):
    from transformers import CLIPVisionConfig as HFConfig

    return HFConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                    num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                    num_channels=cfg.num_channels, image_size=cfg.image_size, patch_size=cfg.patch_size,
                    hidden_act=cfg.hidden_act, layer_norm_eps=cfg.layer_norm_eps)


def _torch_model(torch, cfg: CLIPVisionConfig, seed: int = 0):
    from transformers import CLIPVisionModel

    torch.manual_seed(seed)
    model = CLIPVisionModel(_hf_config(cfg)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # perturb everything, layer-norm weights and biases included
        for _, p in model.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen) * p.std().clamp(min=0.1))
    return model


def _photo(width: int, height: int, seed: int = 0):
    """A 'real-looking' RGB photo: colour gradients, a sinusoidal texture, noise and hard-edged shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([255 * xx / width, 255 * yy / height, 128 + 100 * np.sin(xx / 17.0 + yy / 23.0)], -1)
    image = Image.fromarray(np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([0.2 * width, 0.3 * height, 0.6 * width, 0.8 * height], fill=(220, 40, 60))
    draw.rectangle([0.55 * width, 0.1 * height, 0.9 * width, 0.45 * height], fill=(20, 200, 90))
    draw.line([0, height, width, 0], fill=(255, 255, 255), width=5)
    return image


def _processor(**overrides):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(**{**WAN_PREPROCESSOR_CONFIG, **overrides})


@pytest.fixture(scope="module")
def tiny_pair(torch_oracle):
    cfg = CLIPVisionConfig.tiny()
    tm = _torch_model(torch_oracle, cfg)
    return cfg, tm, load_clip_vision_from_hf(tm.state_dict(), cfg)


# ---------------------------------------------------------------------------------------------------- config
def test_config_from_wan_config_json():
    assert CLIPVisionConfig.from_hf_config(WAN_IMAGE_CONFIG) == CLIPVisionConfig.vit_h14()
    cfg = CLIPVisionConfig.vit_h14()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, cfg.image_size,
            cfg.patch_size, cfg.hidden_act, cfg.num_positions) == (1280, 32, 16, 5120, 224, 14, "gelu", 257)
    with pytest.raises(ValueError, match=r"unknown CLIP vision config key\(s\) \['use_rope'\]"):
        CLIPVisionConfig.from_hf_config({**WAN_IMAGE_CONFIG, "use_rope": True})
    # transformers' default activation applies when a file leaves it out
    assert CLIPVisionConfig.from_hf_config({"hidden_size": 24, "num_attention_heads": 2}).hidden_act == "quick_gelu"
    assert CLIPPreprocessConfig.from_hf_config(WAN_PREPROCESSOR_CONFIG) == CLIPPreprocessConfig()
    with pytest.raises(ValueError, match="unknown CLIP preprocessor key"):
        CLIPPreprocessConfig.from_hf_config({**WAN_PREPROCESSOR_CONFIG, "do_pad": True})


@pytest.mark.oracle
def test_config_from_transformers_dict(torch_oracle):
    cfg = CLIPVisionConfig.tiny()
    assert CLIPVisionConfig.from_hf_config(_hf_config(cfg).to_dict()) == cfg


def test_params_are_stacked_and_named():
    model = CLIPVisionTower(CLIPVisionConfig.tiny(), rngs=nnx.Rngs(0))
    for path, var in flat_variables(model, nnx.Param).items():
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var.ndim and all(isinstance(a, str) for a in axes), (path, axes)
        assert (axes[0] == "layers") == path.startswith("layers/"), (path, axes)


# ---------------------------------------------------------------------------------------------------- parity
@pytest.mark.oracle
@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_hidden_states_match_transformers(torch_oracle, tiny_pair, act):
    torch = torch_oracle
    if act == "gelu":
        cfg, tm, model = tiny_pair
    else:
        cfg = CLIPVisionConfig(**{**CLIPVisionConfig.tiny().__dict__, "hidden_act": act})
        tm = _torch_model(torch, cfg, seed=4)
        model = load_clip_vision_from_hf(tm.state_dict(), cfg)
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = tm(pixel_values=pixels, output_hidden_states=True)
    nhwc = jnp.asarray(pixels.numpy().transpose(0, 2, 3, 1))
    out = nnx.jit(lambda m, x: m(x))(model, nhwc)
    assert out.shape == (2, cfg.num_positions, cfg.hidden_size)
    err = rel_l2(out, ref.hidden_states[-2].numpy())
    print(f"CLIP hidden_states[-2] ({act}) rel L2 {err:.2e}")
    assert err <= 1e-5
    for index in (0, 1, -1):
        assert rel_l2(model.hidden_state(nhwc, index), ref.hidden_states[index].numpy()) <= 1e-5
    assert rel_l2(model.pooled(nhwc), ref.pooler_output.numpy()) <= 1e-5


@pytest.mark.oracle
@pytest.mark.parametrize("size", [(333, 500), (500, 333), (1000, 1400), (100, 60)])
def test_preprocessing_matches_clip_image_processor(torch_oracle, size):
    image = _photo(*size)
    ref = _processor()(images=image, return_tensors="np")["pixel_values"]  # (1, 3, 224, 224)
    out = preprocess_images(image, CLIPPreprocessConfig.from_hf_config(WAN_PREPROCESSOR_CONFIG))
    assert out.shape == (1, 224, 224, 3) and out.dtype == np.float32
    err = float(np.abs(out - ref.transpose(0, 2, 3, 1)).max())
    print(f"preprocess {size} max abs {err:.1e}")
    assert err <= 1e-6
    # the resampler alone reproduces Pillow's uint8 output bit for bit
    h, w = shortest_edge_size(size[1], size[0], 224)
    for resample in (2, 3):
        np.testing.assert_array_equal(resize_uint8(np.asarray(image), h, w, resample),
                                      np.asarray(image.resize((w, h), resample)))


@pytest.mark.oracle
def test_preprocessing_alpha_grey_and_numpy_inputs(torch_oracle):
    photo = _photo(300, 260, seed=1)
    rgba = photo.convert("RGBA")
    rgba.putalpha(photo.convert("L"))
    inputs = [rgba, photo.convert("L"), np.asarray(photo), np.asarray(rgba)]
    ref = _processor()(images=inputs, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(preprocess_images(inputs), ref, rtol=0, atol=1e-6)


def _diffusers_encode_image(processor, image_encoder, image):
    """diffusers' own ``WanImageToVideoPipeline.encode_image`` on a stand-in pipeline object."""
    import torch
    from diffusers import WanImageToVideoPipeline

    stub = types.SimpleNamespace(image_processor=processor, image_encoder=image_encoder)
    return WanImageToVideoPipeline.encode_image(stub, image, device=torch.device("cpu")).detach().numpy()


@pytest.mark.oracle
def test_wan_encode_image_end_to_end(torch_oracle, tiny_pair):
    cfg, tm, model = tiny_pair
    image = _photo(333, 500, seed=2)
    crop = {"height": cfg.image_size, "width": cfg.image_size}
    ref = _diffusers_encode_image(_processor(size={"shortest_edge": cfg.image_size}, crop_size=crop), tm, image)
    pre = CLIPPreprocessConfig(size={"shortest_edge": cfg.image_size}, crop_size=crop)
    out = model(jnp.asarray(preprocess_images(image, pre)))
    err = rel_l2(out, ref)
    print(f"Wan encode_image (preprocess + tower) rel L2 {err:.2e}")
    assert err <= 1e-5


# ---------------------------------------------------------------------------------------------------- mapping
@pytest.mark.oracle
def test_mapping_round_trip_is_bit_exact(torch_oracle, tiny_pair):
    cfg, tm, model = tiny_pair
    state = {k: v.numpy() for k, v in tm.state_dict().items()}
    mapping = clip_vision_mapping(cfg)
    flat = mapping.to_jax(DictSource(state), targets_of(model))
    back = mapping.to_torch({p: np.asarray(v[...]) for p, v in flat_variables(model).items()})
    assert set(back) == set(state)
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
        assert value.dtype == state[key].dtype
    for path, value in flat.items():
        np.testing.assert_array_equal(value, np.asarray(flat_variables(model)[path][...]))


def _numpy_state(cfg: CLIPVisionConfig) -> dict:
    model = CLIPVisionTower(cfg, rngs=nnx.Rngs(2))
    return clip_vision_mapping(cfg).to_torch({p: np.asarray(v[...]) for p, v in flat_variables(model).items()})


def test_loader_strict_errors():
    cfg = CLIPVisionConfig.tiny()
    state = _numpy_state(cfg)
    missing = dict(state)
    del missing["encoder.layers.2.mlp.fc1.bias"]
    with pytest.raises(WeightMappingError, match=r"1 missing key\(s\): \['encoder\.layers\.2\.mlp\.fc1\.bias'\]"):
        load_clip_vision_from_hf(missing, cfg)
    with pytest.raises(WeightMappingError, match=r"1 unexpected key\(s\): \['text_projection\.weight'\]"):
        load_clip_vision_from_hf({**state, "text_projection.weight": np.zeros((4, 4), np.float32)}, cfg)
    bad = {**state, "embeddings.patch_embedding.weight": np.zeros((24, 3, 7, 7), np.float32)}
    with pytest.raises(WeightMappingError, match=r"embeddings\.patch_embedding\.weight: shape \(24, 3, 7, 7\) does "
                                                 r"not map to embeddings/patch_kernel \(8, 8, 3, 24\)"):
        load_clip_vision_from_hf(bad, cfg)
    with pytest.raises(ValueError, match="both map to"):  # the same tensor with and without the legacy prefix
        load_clip_vision_from_hf({**state, "vision_model.pre_layrnorm.bias": state["pre_layrnorm.bias"]}, cfg)


def test_loader_accepts_transformers4_checkpoint_layout():
    """Wan's image_encoder/ keys: 'vision_model.' prefix, plus the unused projection head and position_ids."""
    cfg = CLIPVisionConfig.tiny()
    state = _numpy_state(cfg)
    legacy = {f"vision_model.{k}": v for k, v in state.items()}
    legacy["visual_projection.weight"] = np.zeros((16, cfg.hidden_size), np.float32)
    legacy["vision_model.embeddings.position_ids"] = np.arange(cfg.num_positions, dtype=np.float32)[None]
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 32, 32, 3)), jnp.float32)
    np.testing.assert_array_equal(load_clip_vision_from_hf(legacy, cfg)(x), load_clip_vision_from_hf(state, cfg)(x))


@pytest.mark.oracle
def test_load_from_save_pretrained_folder(torch_oracle, tiny_pair, tmp_path):
    cfg, tm, _ = tiny_pair
    tm.save_pretrained(tmp_path)
    assert CLIPVisionConfig.from_hf_config(json.loads((tmp_path / "config.json").read_text())) == cfg
    model = load_clip_vision_from_hf(tmp_path)
    pixels = torch_oracle.randn(1, 3, 32, 32, generator=torch_oracle.Generator().manual_seed(9))
    with torch_oracle.no_grad():
        ref = tm(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].numpy()
    assert rel_l2(model(jnp.asarray(pixels.numpy().transpose(0, 2, 3, 1))), ref) <= 1e-5


# ---------------------------------------------------------------------------------------------------- full size
@pytest.mark.oracle
def test_full_size_parameter_count(torch_oracle):
    from transformers import CLIPVisionModel

    cfg = CLIPVisionConfig.vit_h14()
    with torch_oracle.device("meta"):
        ref = sum(p.numel() for p in CLIPVisionModel(_hf_config(cfg)).parameters())
    total, _ = count(nnx.eval_shape(lambda: CLIPVisionTower(cfg, rngs=nnx.Rngs(0))))
    print(f"CLIP ViT-H/14 vision tower parameters: ours {total:,}, transformers {ref:,}")
    assert total == ref
    out = nnx.eval_shape(lambda: CLIPVisionTower(cfg, rngs=nnx.Rngs(0))(jnp.zeros((2, 224, 224, 3))))
    assert out.shape == (2, 257, 1280)


def test_bf16_runs_close_to_fp32():
    cfg = CLIPVisionConfig.tiny()
    state = _numpy_state(cfg)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)
    ref = load_clip_vision_from_hf(state, cfg)(x)
    half = load_clip_vision_from_hf(state, cfg, param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
    assert flat_variables(half)["layers/mlp/fc1/kernel"].dtype == jnp.bfloat16
    assert rel_l2(half(x), ref) <= 3e-2
