"""Seeded random stand-ins for trained artefacts: models, model bundles, encoded datasets.

* :func:`random_model`: any nnx model, built abstractly and filled from NumPy (fast: no per-op init compiles).
* :func:`write_random_bundle`: a sampling bundle of random tiny models (DiT with a non-zero LoRA, VAE, UMT5, CLIP)
  and a word-level tokenizer, to develop and test the pipeline without the trained model.
* :func:`write_random_dataset`: a small ``encoded6d`` dataset of random latents (no encoders involved).

The embedded default training data (``fourdnex train --synthetic``) is a product:
:mod:`fourdnex_jax.data.synthetic_dataset`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "configs" / "tiny.py"


def random_model(make: Callable, seed: int):
    """``make()`` (a model constructor) built abstractly (``nnx.eval_shape``) and filled from NumPy with seed
    ``seed``: eager initialisation compiles every init op separately, minutes for the tiny VAE on a busy CPU.
    Values: norm ``scale`` 1, ``bias`` 0, other 1-D vectors N(0, 0.02), every other array (kernels, tables,
    embeddings; a leading stacked 'layers' axis excluded from the fan-in) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as
    torch's Linear init."""
    import jax.numpy as jnp
    from flax import nnx

    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(nnx.eval_shape(make))
    leaves = []
    for path, var in nnx.to_flat_state(state):
        shape, name = tuple(var.shape), str(path[-1])
        axes = var.get_metadata().get("out_sharding") or ()
        core = shape[1:] if axes and axes[0] == "layers" else shape
        if len(core) == 1 and name == "scale":
            value = np.ones(shape)
        elif len(core) == 1 and name == "bias":
            value = np.zeros(shape)
        elif len(core) == 1:
            value = rng.normal(0.0, 0.02, shape)
        else:
            bound = 1.0 / max(int(np.prod(core[:-1])), 1) ** 0.5
            value = rng.uniform(-bound, bound, shape)
        leaves.append((path, var.replace(jnp.asarray(value, var.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def write_random_bundle(directory: str | os.PathLike, config_path: str | os.PathLike = TINY_CONFIG,
                        *, seed: int = 0, captions: tuple[str, ...] = (), preset=None) -> Path:
    """Writes a bundle of seeded random models (:func:`random_model`: the DiT of ``config_path``'s model section
    with a non-zero LoRA, the tiny VAE / UMT5 / CLIP) and a lower-case word-level tokenizer over ``captions``' words,
    unless ``directory`` already holds a bundle. ``preset``: the :class:`~fourdnex_jax.recipe.SamplingPreset` the
    bundle records (default ``SAMPLING_PRESETS["tiny"]``). Returns ``directory``."""
    directory = Path(directory)
    if (directory / "manifest.json").exists():
        return directory
    from flax import nnx

    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.data.synthetic_dataset import word_tokenizer
    from fourdnex_jax.models.image_encoder import CLIPVisionConfig, CLIPVisionTower
    from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.recipe import SAMPLING_PRESETS

    cfg = model_config(load_config_file(config_path))
    tok, vocab_size = word_tokenizer(captions, lowercase=True, extra=("a synthetic 3d scene",))
    stage = directory.parent / (directory.name + ".tokenizer")
    stage.mkdir(parents=True, exist_ok=True)
    tok.save(str(stage / "tokenizer.json"))
    dit = random_model(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0)), seed)  # LoRA non-zero, as a trained one
    clip_cfg = dataclasses.replace(CLIPVisionConfig.tiny(), hidden_size=cfg.image_dim)
    text_cfg = dataclasses.replace(UMT5Config.tiny(max(64, vocab_size)), d_model=cfg.text_dim)
    size = clip_cfg.image_size
    bundle_lib.save_bundle(directory, transformer=dit,
                           vae=random_model(lambda: WanVAE(WanVAEConfig.tiny(), rngs=nnx.Rngs(0)), seed + 1),
                           text_encoder=random_model(lambda: UMT5Encoder(text_cfg, rngs=nnx.Rngs(0)), seed + 2),
                           image_encoder=random_model(lambda: CLIPVisionTower(clip_cfg, rngs=nnx.Rngs(0)), seed + 3),
                           tokenizer_dir=stage, clip_preprocess={"size": {"shortest_edge": size},
                                                                 "crop_size": {"height": size, "width": size}},
                           preset=preset if preset is not None else SAMPLING_PRESETS["tiny"],
                           info={"name": "random tiny bundle (fourdnex_jax.testing.random_models)", "seed": seed})
    shutil.rmtree(stage)
    return directory


def write_random_dataset(root: str | os.PathLike, model_cfg, *, num_examples: int = 8,
                         latent_thw: tuple[int, int, int] = (3, 8, 12), text_len: int = 16, image_tokens: int = 17,
                         seed: int = 0, nan_example: int | None = None) -> Path:
    """A small ``encoded6d`` dataset of random examples (tests, benchmarks) under ``root``: per-modality latents
    (T, H, W, z) with a per-example structure (smooth patterns) so a model can fit them, the width-fused condition
    latent (T, H, 2W, z), fp16 text (n, text_dim) and image (image_tokens, image_dim) embeddings. ``nan_example``:
    that example's RGB latent is NaN (NaN-policy tests). Returns the dataset folder."""
    from fourdnex_jax.data import staging, tfds_builders
    from fourdnex_jax.recipe import training_prompt

    t, h, w = latent_thw
    z = model_cfg.out_channels
    rng = np.random.default_rng(seed)
    cfg = tfds_builders.encoded_config(t, h, w, z_dim=z, text_dim=model_cfg.text_dim, image_tokens=image_tokens,
                                       image_dim=model_cfg.image_dim, tag="random")
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij"), -1)
    examples = []
    for i in range(num_examples):
        freq = rng.normal(size=(2, z))
        base = np.sin(grid @ freq * 2.0)[None] * np.linspace(1.0, 0.5, t)[:, None, None, None]
        rgb = (base + 0.1 * rng.normal(size=(t, h, w, z))).astype(np.float32)
        xyz = (0.5 * base[..., ::-1] + 0.1 * rng.normal(size=(t, h, w, z))).astype(np.float32)
        if nan_example == i:
            rgb[:] = np.nan
        cond = np.zeros((t, h, 2 * w, z), np.float32)
        cond[0] = np.concatenate([rgb[0], xyz[0] * 0.3], axis=1)
        n_txt = int(rng.integers(3, text_len))
        examples.append({
            "rgb_latent": rgb, "rgb_latent_std": np.full_like(rgb, 0.05), "xyz_latent": xyz,
            "xyz_latent_std": np.full_like(xyz, 0.05), "cond_latent": cond,
            "text_embeds": rng.normal(size=(n_txt, model_cfg.text_dim)).astype(np.float16),
            "text_len": np.int32(n_txt),
            "image_embeds": rng.normal(size=(image_tokens, model_cfg.image_dim)).astype(np.float16),
            "prompt": training_prompt(f"random example {i}"), "clip_id": f"random_{i:04d}"})
    sdir = Path(root) / "_staging" / cfg.name / "train"
    items = [(str(i), i) for i in range(num_examples)]
    shards, _, _ = staging.plan_shards(items, sdir, num_examples)
    staging.write_shard(sdir, shards[0][1], examples, {"kept": num_examples, "skipped": {}, "ids": {}})
    tfds_builders.build(tfds_builders.Encoded6D, root, cfg, {"train": sdir})
    return Path(root) / tfds_builders.Encoded6D.name / cfg.name / str(tfds_builders.Encoded6D.VERSION)
