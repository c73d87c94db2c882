"""End-to-end parity of the JAX image-to-4D pipeline with a PyTorch reference at tiny size, fp32, noise injected.

The reference is the installed diffusers' ``WanImageToVideoPipeline`` (the oracle environment, >= 0.37; the
official pin, 0.34.0, is tested by ``tests/pipelines/test_official_pipeline.py``) with 4DNeX's
``prepare_latents`` (a small subclass below: condition frame = [image | slanted-plane XYZ init]
width-concatenated, zero frames after it, VAE mode, guided mask 1 / 0.5) and the 4DNeX DiT subclass of
``fourdnex_jax.testing.torch_reference`` (domain embeddings + shared RoPE), with tiny random UMT5 + tokenizer,
CLIP + image processor and VAE; the JAX models hold the same weights through the project's loaders. Compared:
schedule (exact), the encoded condition (text, CLIP, condition latent), every step's latents and the decoded video
(4DNeX's decode: XYZ half x 1.70 - 0.13, VAE de-normalisation, fused decode)."""

import string

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import jax
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
)
from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModel, T5Tokenizer, UMT5EncoderModel
from transformers import CLIPVisionConfig as HFCLIPConfig
from transformers import UMT5Config as HFUMT5Config

from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, CLIPVisionConfig
from fourdnex_jax.models.mapping import DictSource
from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Tokenizer
from fourdnex_jax.models.transformer import WanTransformerConfig
from fourdnex_jax.models.vae import WanVAEConfig
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SixDSpec
from fourdnex_jax.testing import torch_reference as ref
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.weights.from_diffusers import (
    apply_adapter,
    load_clip_vision_from_hf,
    load_umt5_from_hf,
    load_vae_from_diffusers,
    transformer_from_source,
)

pytestmark = pytest.mark.oracle
T, H, W = 5, 32, 48  # per modality; latent 2 x 4 x 6, fused width 12
TEXT_DIM, IMG_DIM = 32, 24
PROMPT = "a robot walks"


def uniform_pointmap(h, w):  # 4DNeX generate_uniform_pointmap: [0, 1] ramps, z = 1 - y
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([x, y, 1 - y], 0)


class FourDNeXI2V(WanImageToVideoPipeline):
    """diffusers Wan I2V with 4DNeX's prepare_latents (width-doubled latent, [RGB | XYZ init] condition, mask 1/0.5)."""

    def prepare_latents(self, image, batch_size, num_channels_latents=16, height=480, width=832, num_frames=81,
                        dtype=None, device=None, generator=None, latents=None, last_image=None):
        t_lat = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        h, w = height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial
        assert latents is not None and latents.shape == (batch_size, num_channels_latents, t_lat, h, 2 * w)
        xyz = (uniform_pointmap(height, width) * 2 - 1)[None].expand(image.shape[0], -1, -1, -1).to(image)
        first = torch.cat([image, xyz], dim=-1).unsqueeze(2)
        video_condition = torch.cat([first, first.new_zeros(first.shape[0], 3, num_frames - 1, height, 2 * width)], 2)
        cond = retrieve_latents(self.vae.encode(video_condition), sample_mode="argmax")
        mean = torch.tensor(self.vae.config.latents_mean).view(1, -1, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1, 1)
        cond = ((cond - mean) * inv_std).repeat(batch_size, 1, 1, 1, 1)
        self.recorded_condition = cond.clone()
        mask = torch.ones(batch_size, 1, num_frames, h, 2 * w)
        mask[:, :, 1:] = 0
        mask[:, :, 0, :, w:] = 0.5  # the XYZ half of the first frame is only "partially known"
        first_mask = torch.repeat_interleave(mask[:, :, 0:1], dim=2, repeats=self.vae_scale_factor_temporal)
        mask = torch.cat([first_mask, mask[:, :, 1:]], dim=2)
        mask = mask.view(batch_size, -1, self.vae_scale_factor_temporal, h, 2 * w).transpose(1, 2)
        return latents.to(dtype), torch.cat([mask, cond], dim=1)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.manual_seed(0)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + c, -2.0) for c in string.ascii_lowercase] + [(c, -3.0) for c in string.ascii_lowercase]
    pieces += [("\u2581" + w, -1.0) for w in ["a", "the", "robot", "walks", "camera", "scene"]]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tok_dir = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(tok_dir)
    hf_t5 = HFUMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                         relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    text_encoder = ref.randomize_(UMT5EncoderModel(hf_t5).eval(), 1)
    hf_clip = HFCLIPConfig(hidden_size=IMG_DIM, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=IMG_DIM)
    image_encoder = ref.randomize_(CLIPVisionModel(hf_clip).eval(), 2)
    proc = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    image_processor = CLIPImageProcessor(**proc)
    vae = ref.randomize_(AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1).eval(), 3)
    transformer = ref.build(ref.TINY, seed=4, fourdnex=True)
    rng = np.random.default_rng(0)
    image = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    image[:, : W // 2] //= 2  # some structure
    torch_parts = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, image_processor=image_processor,
                       image_encoder=image_encoder, transformer=transformer)
    # the same weights in JAX
    sd = lambda m: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    jt5 = load_umt5_from_hf(sd(text_encoder), UMT5Config.from_hf_config(hf_t5.to_dict()))
    jclip = load_clip_vision_from_hf(sd(image_encoder), CLIPVisionConfig.from_hf_config(hf_clip.to_dict()))
    jvae = load_vae_from_diffusers(sd(vae), config=WanVAEConfig.from_diffusers_config(dict(vae.config)))
    tsd = ref.state_dict_numpy(transformer)
    demb = tsd.pop("learnable_domain_embeddings")
    cfg = WanTransformerConfig.from_diffusers_config(ref.TINY, modality_layout="width", domain_embeddings=True)
    jdit = transformer_from_source(cfg, DictSource(tsd))
    apply_adapter(jdit, domain_embeddings=demb)
    jax_parts = (jdit, jvae, jt5, jclip, UMT5Tokenizer.from_dir(tok_dir), CLIPPreprocessConfig.from_hf_config(proc))
    return torch_parts, jax_parts, image


def run_torch(torch_parts, image, noise, solver, steps):
    if solver == "unipc":
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = FourDNeXI2V(scheduler=sched, **torch_parts)
    steps_seen = []

    def cb(p, i, t, kw):
        steps_seen.append(kw["latents"].detach().numpy().transpose(0, 2, 3, 4, 1).copy())
        return kw

    with torch.no_grad():
        latents = pipe(image=Image.fromarray(image), prompt=PROMPT + " POINTMAP_STYLE.", negative_prompt="",
                       height=H, width=W, num_frames=T, num_inference_steps=steps, guidance_scale=5.0,
                       latents=torch.from_numpy(noise.transpose(0, 4, 1, 2, 3).copy()), output_type="latent",
                       callback_on_step_end=cb, max_sequence_length=512).frames
        text, neg = pipe.encode_prompt(PROMPT + " POINTMAP_STYLE.", "", max_sequence_length=512)
        clip = pipe.encode_image(Image.fromarray(image), "cpu")
        w = latents.shape[-1] // 2
        lat = latents.clone()
        lat[..., w:] = lat[..., w:] * 1.70 - 0.13  # 4DNeX inference.py: undo the XYZ latent normalisation
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
        video = pipe.vae.decode(lat / inv_std + mean, return_dict=False)[0]
    return dict(steps=steps_seen, timesteps=sched.timesteps.numpy(), sigmas=sched.sigmas.numpy(),
                text=text.numpy(), neg=neg.numpy(), clip=clip.numpy(),
                cond=pipe.recorded_condition.numpy().transpose(0, 2, 3, 4, 1),
                video=video.numpy().transpose(0, 2, 3, 4, 1))


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_pipeline_matches_diffusers(parts, solver):
    torch_parts, jax_parts, image = parts
    steps = 4
    # the installed diffusers' flow-sigma formula (>= 0.37: 'diffusers_0_37'; the official 0.34.0 run is pinned by
    # tests/pipelines/test_official_pipeline.py)
    import diffusers

    sigma_schedule = ("diffusers_0_37" if tuple(int(v) for v in diffusers.__version__.split(".")[:2]) >= (0, 37)
                      else "diffusers_0_34")
    settings = SampleSettings(num_frames=T, max_area=H * W, num_steps=steps, solver=solver, flow_shift=3.0,
                              sigma_schedule=sigma_schedule, guidance_scale=5.0, negative_prompt="", text_len=512,
                              batch_size=1)
    # 2 devices on a data mesh: with CFG the two branches go over `data`, so a call takes pipe.batch (= 1) image
    pipe = ImageTo4D(*jax_parts, settings, spec=SixDSpec(), devices=jax.devices()[:2])
    assert pipe.layout.cfg_over_data and pipe.batch == 1
    assert pipe.sample_size(image) == (H, W)  # the aspect rule keeps the H x W image as it is (diffusers: resized)
    noise = np.random.default_rng(1).standard_normal((1, *pipe.latent_shape(H, W))).astype(np.float32)
    theirs = run_torch(torch_parts, image, noise, solver, steps)
    np.testing.assert_array_equal(pipe.schedule.timesteps.astype(theirs["timesteps"].dtype), theirs["timesteps"])
    np.testing.assert_array_equal(pipe.schedule.sigmas, theirs["sigmas"])
    text, neg = (np.asarray(a) for a in pipe.encode_prompt([PROMPT] * pipe.batch))
    clip, cond = (np.asarray(a) for a in pipe.encode_image([image] * pipe.batch))
    errs = {"text": rel_l2(text[:1], theirs["text"]), "negative": rel_l2(neg[:1], theirs["neg"]),
            "clip": rel_l2(clip[:1], theirs["clip"]), "condition": rel_l2(cond[:1], theirs["cond"])}
    mine = []
    res = pipe([image], [PROMPT], noise=list(noise), progress=False, on_step=lambda i, x: mine.append(x[:1]))[0]
    step_errs = [rel_l2(a, b) for a, b in zip(mine, theirs["steps"])]
    assert len(mine) == len(theirs["steps"]) == steps
    errs["video"] = rel_l2(res.video[None], theirs["video"])
    print(f"\n{solver}: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
          + "; steps " + " ".join(f"{e:.1e}" for e in step_errs))
    for k in ("text", "negative", "clip", "condition"):
        assert errs[k] <= 1e-5, (k, errs[k])
    assert max(step_errs) <= 1e-5, step_errs
    assert errs["video"] <= 1e-4
    # the split: RGB = left half mapped to uint8, XYZ = right half
    np.testing.assert_array_equal(res.xyz, res.video[:, :, W:])
