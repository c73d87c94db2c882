"""The encode step with tiny JAX encoders, data-parallel over the 8 fake CPU devices: equal to a single-device run,
the documented latent normalisation, and the encoded6d TFDS dataset read back through the grain pipeline."""

import jax
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.data import encode, loader, prepare, schema, synthetic, tfds_builders
from fourdnex_jax.data.annotations import ClipConfig
from fourdnex_jax.media.io import atomic_save_npz
from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, CLIPVisionConfig, CLIPVisionTower
from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder, UMT5Tokenizer
from fourdnex_jax.models.towers import Towers
from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
from fourdnex_jax.testing.scenes import write_caption_csv

T, H, W = 5, 32, 48
TEXT_LEN = 16


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = "a synthetic 3d scene with ball box on floor sky the camera orbits pointmap_style.".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return UMT5Tokenizer(tok)


@pytest.fixture(scope="module")
def towers():
    rngs = nnx.Rngs(0)
    return Towers(WanVAE(WanVAEConfig.tiny(), rngs=rngs), UMT5Encoder(UMT5Config.tiny(), rngs=rngs),
                  CLIPVisionTower(CLIPVisionConfig.tiny(), rngs=rngs))


@pytest.fixture(scope="module")
def spec():
    return encode.EncodeSpec(_tokenizer(), CLIPPreprocessConfig(size={"shortest_edge": 32},
                                                                crop_size={"height": 32, "width": 32}), TEXT_LEN)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enc")
    caps = {}
    for i in range(3):
        cid, r, cap = synthetic.generate_clip("train", i, T, H, W)
        atomic_save_npz(tmp / "raw" / f"{cid}.npz", **{k: r[k] for k in ("images", "depths", "intrinsics",
                                                                          "cam_c2w", "dynamic_mask")})
        caps[cid] = cap
    write_caption_csv(tmp / "raw" / "captions.csv", caps)
    items = prepare.discover("synthetic", tmp / "raw")
    out = prepare.prepare(items, tmp / "tfds", ClipConfig(num_frames=T, height=H, width=W), progress=False)
    return tmp, out["dataset_dir"]


@pytest.fixture(scope="module")
def encoder8(towers, spec):
    return encode.Encoder(towers, spec)


def test_sharded_encode_matches_single_device(towers, spec, encoder8, clips_dir):
    assert jax.device_count() == 8
    _, folder = clips_dir
    src = tfds_builders.data_source(folder, "train")
    recs = [src[i] for i in range(3)]
    sharded = encoder8(recs)  # 3 records padded to 8, one per device
    single = encode.Encoder(towers, spec, devices=jax.devices()[:1])(recs)
    ex = sharded[0]
    assert set(ex) == set(schema.EXAMPLE_KEYS)
    assert ex["rgb_latent"].shape == (2, 4, 6, 16) and ex["cond_latent"].shape == (2, 4, 12, 16)
    assert ex["image_embeds"].shape == (17, 24) and ex["text_embeds"].shape == (int(ex["text_len"]), 24)
    assert ex["prompt"].endswith(" POINTMAP_STYLE.") and ex["clip_id"] == recs[0]["clip_id"].decode()
    for a, b in zip(sharded, single):
        for k in a:
            if isinstance(a[k], np.ndarray):
                np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
    # documented normalisation: xyz latent = (VAE-normalised mean + 0.13) / 1.70
    vae = towers.vae
    mean = vae.encode(np.asarray(recs[1]["xyz"], np.float32)[None]).mean
    np.testing.assert_allclose(sharded[1]["xyz_latent"] * 1.70 - 0.13, np.asarray(vae.normalize_latents(mean))[0],
                               rtol=1e-4, atol=1e-4)


def test_encode_dataset_roundtrip(towers, encoder8, clips_dir):
    tmp, folder = clips_dir
    out = encode.encode_dataset(folder, tmp / "tfds", encoder8, towers, batch_size=2, shard_size=2, progress=False)
    assert out.parent.name.startswith("t2_h4_w6_z16_txt24_img17x24")
    ds = loader.make_dataset(tfds_builders.data_source(out, "train"), batch_size=3, num_epochs=1,
                             shard_index=0, shard_count=1, decode=lambda e: loader.decode_encoded(e, TEXT_LEN))
    b = ds[0]
    assert set(b) == set(schema.EXAMPLE_KEYS)
    spec = loader.dataset_spec(out)
    assert spec == schema.EncodedSpec(2, 4, 6, z_dim=16, text_dim=24, image_tokens=17, image_dim=24)
    assert {k: b[k].shape[1:] for k in schema.BATCH_KEYS} == {k: v for k, v in spec.shapes(TEXT_LEN).items()
                                                              if k in schema.BATCH_KEYS}
    assert b["text_embeds"].shape == (3, TEXT_LEN, 24) and b["xyz_latent"].dtype == np.float32
    n = int(b["text_len"][0])
    assert np.all(b["text_embeds"][0, n:] == 0) and np.any(b["text_embeds"][0, :n] != 0)
