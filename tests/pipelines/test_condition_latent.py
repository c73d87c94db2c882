"""The pipeline conditions a sample exactly as the encode step conditioned training: for the same image (frame 0
of a clip) and caption, ``ImageTo4D.encode_image`` / ``encode_prompt`` give the encode step's ``cond_latent``,
``image_embeds`` and ``text_embeds`` (both call :mod:`fourdnex_jax.models.towers`). Random tiny bundle, one
device."""

import jax
import numpy as np

from fourdnex_jax.data import encode
from fourdnex_jax.models.towers import Towers
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SamplingPreset
from fourdnex_jax.testing.random_models import write_random_bundle

T, H, W = 5, 32, 48
PRESET = SamplingPreset(num_frames=T, max_area=H * W, num_steps=2, guidance_scale=5.0, negative_prompt="",
                        text_len=16, flow_shift=3.0, solver="unipc")
CAPTION = "a ball on the floor"


def test_pipeline_condition_equals_encode_step(tmp_path):
    b = bundle_lib.load_bundle(write_random_bundle(tmp_path / "bundle", captions=(CAPTION,)))
    dev = jax.devices()[:1]
    rng = np.random.default_rng(0)
    rgb = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    record = {"rgb": rgb, "xyz": rng.uniform(-1, 1, (T, H, W, 3)).astype(np.float32), "caption": CAPTION.encode(),
              "clip_id": b"clip0"}

    pipe = ImageTo4D.from_bundle(b, SampleSettings.from_preset(PRESET), devices=dev)
    assert pipe.sample_size(rgb[0]) == (H, W)  # the image is already at its sampling size: no resize
    clip, cond = (np.asarray(a)[0] for a in pipe.encode_image([rgb[0]]))
    text = np.asarray(pipe.encode_prompt([CAPTION])[0])[0]

    towers = Towers(b.vae, b.text_encoder, b.image_encoder)
    spec = encode.EncodeSpec(b.tokenizer, b.clip_preprocess, PRESET.text_len)
    ex = encode.Encoder(towers, spec, devices=dev)([record])[0]

    assert ex["prompt"] == pipe.full_prompt(CAPTION)
    f = b.vae.config.spatial_factor
    assert cond.shape == ex["cond_latent"].shape == (1 + (T - 1) // 4, H // f, 2 * W // f, b.vae.config.z_dim)
    np.testing.assert_array_equal(cond, ex["cond_latent"])
    np.testing.assert_array_equal(clip, ex["image_embeds"])
    n = int(ex["text_len"])
    np.testing.assert_array_equal(text[:n], ex["text_embeds"])
    assert not text[n:].any()  # zero past the prompt, as the stored embeddings are padded back for training
