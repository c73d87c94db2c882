"""Seeded random stand-ins for trained artefacts: models, model bundles, encoded datasets.

* :func:`random_model`: any nnx model, built abstractly and filled from NumPy (fast: no per-op init compiles).
* :func:`write_random_bundle`: a sampling bundle of random tiny models (DiT with a non-zero LoRA, VAE, UMT5, CLIP)
  and a word-level tokenizer, to develop and test the pipeline without the trained model.
* :func:`write_random_dataset`: a small ``encoded6d`` dataset of random latents (no encoders involved).
* :func:`ensure_synthetic_dataset`: the embedded default training data: synthetic 4D clips -> ``clips6d`` -> the
  encode step with *random tiny* encoders (real VAE encodings of real clips, by an untrained VAE: enough to test
  that training runs and fits, not to learn 4D).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

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


def word_tokenizer(captions: Iterable[str], *, lowercase: bool = False, extra: Iterable[str] = ()):
    """A ``tokenizers.Tokenizer`` whose word-level vocabulary is the words of ``training_prompt(c)`` for each
    caption and extra text (``<pad>`` 0, ``</s>`` 1 appended to every sequence, ``<unk>`` 2, then the words
    sorted); ``lowercase`` folds case in the vocabulary and in a normalizer. Returns (tokenizer, vocab size)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from fourdnex_jax.recipe import training_prompt

    pre = pre_tokenizers.Whitespace()
    fold = str.lower if lowercase else str
    words = sorted({fold(w) for c in (*captions, *extra) for w, _ in pre.pre_tokenize_str(training_prompt(c))})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tok, len(vocab)


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


# -- the embedded default dataset ----------------------------------------------------------------------------------
def _marker(root: Path) -> Path:
    return root / "encoded_dataset.txt"


def find_synthetic_dataset(root: str | os.PathLike) -> Path | None:
    """The encoded dataset folder recorded under ``root`` by :func:`ensure_synthetic_dataset`, or None."""
    marker = _marker(Path(root))
    if marker.exists():
        path = Path(marker.read_text().strip())
        if (path / "dataset_info.json").exists():
            return path
    return None


def _save_towers_bundle(directory: Path, towers, tokenizer, clip_preprocess: dict, config, num_frames: int,
                        area: int) -> Path:
    """The towers that encode the synthetic dataset, kept as a bundle (``towers/`` next to the data) so a run
    trained on it can be turned into a bundle (``fourdnex bundle --run RUN --base <this folder>``). Its DiT is the
    config's random initial one, a placeholder that ``bundle`` replaces; its preset is the tiny one at the data's
    frames and area. The towers are random, so a bundle built on them samples noise: a check of the training
    pipeline, not a model."""
    import tempfile

    from flax import nnx

    from fourdnex_jax.config import model_config
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.pipelines.bundle import save_bundle
    from fourdnex_jax.recipe import SAMPLING_PRESETS

    if directory.exists():
        shutil.rmtree(directory)  # a build interrupted before the dataset was recorded
    preset = dataclasses.replace(SAMPLING_PRESETS["tiny"], num_frames=num_frames, max_area=area,
                                 text_len=config.data.text_len)
    dit = random_model(lambda: WanTransformer3D(model_config(config), rngs=nnx.Rngs(0)), config.seed)
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer.save(str(Path(tok_dir) / "tokenizer.json"))
        save_bundle(directory, transformer=dit, vae=towers.vae, text_encoder=towers.text_encoder,
                    image_encoder=towers.image_encoder, tokenizer_dir=tok_dir, clip_preprocess=clip_preprocess,
                    preset=preset, info={"name": f"random towers of the synthetic {config.name} dataset "
                                         "(fourdnex train --synthetic); the DiT is a placeholder"})
    return directory


def ensure_synthetic_dataset(config, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The encoded synthetic dataset of ``config.data`` under ``root`` (default ``data.synthetic_dir``), built
    on first use (one process only): ``data.synthetic_clips`` clips of ``synthetic_frames`` x ``synthetic_height``
    x ``synthetic_width``, encoded by random tiny towers (Wan VAE architecture at base_dim 16, a UMT5 of width
    ``model.text_dim``, a CLIP tower of width ``model.image_dim``, a word-level tokenizer of the captions' words),
    which are kept as a bundle under ``root/towers`` (:func:`_save_towers_bundle`) and recorded in the dataset's
    ``towers.json``. Returns the dataset folder."""
    import jax
    from flax import nnx

    from fourdnex_jax.data import encode, prepare, synthetic
    from fourdnex_jax.data.annotations import ClipConfig
    from fourdnex_jax.testing.scenes import write_caption_csv
    from fourdnex_jax.media.io import atomic_save_npz
    from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, CLIPVisionConfig, CLIPVisionTower
    from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder, UMT5Tokenizer
    from fourdnex_jax.models.towers import Towers
    from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
    from fourdnex_jax.utils.progress import Progress

    d, m = config.data, config.model
    root = Path(root or d.synthetic_dir)
    found = find_synthetic_dataset(root)
    if found is not None:
        return found
    if jax.process_count() > 1:
        raise RuntimeError(f"no synthetic dataset under {root}: build it with one process first")
    t, h, w, n = d.synthetic_frames, d.synthetic_height, d.synthetic_width, d.synthetic_clips
    raw = root / "raw"
    captions = {}
    bar = Progress(n, "synthetic clips") if progress else None
    for i in range(n):
        cid = f"synth_train_{i:06d}"
        path = raw / f"{cid}.npz"
        scene = synthetic.make_scene(synthetic.split_seed("train", i))
        if not path.exists():
            r = synthetic.render(scene, t, h, w)
            atomic_save_npz(path, **{k: r[k] for k in ("images", "depths", "intrinsics", "cam_c2w", "dynamic_mask")})
        captions[cid] = scene.caption()
        if bar:
            bar.update()
    write_caption_csv(raw / "captions.csv", captions)
    out = prepare.prepare(prepare.discover("synthetic", raw), root / "tfds", ClipConfig(num_frames=t, height=h,
                                                                                      width=w), progress=progress)
    tok, vocab = word_tokenizer(captions.values())
    tokenizer = UMT5Tokenizer(tok)
    rngs = nnx.Rngs(config.seed)
    clip_cfg = dataclasses.replace(CLIPVisionConfig.tiny(), hidden_size=m.image_dim)
    towers = Towers(WanVAE(WanVAEConfig.tiny(), rngs=rngs),
                    UMT5Encoder(dataclasses.replace(UMT5Config.tiny(vocab), d_model=m.text_dim), rngs=rngs),
                    CLIPVisionTower(clip_cfg, rngs=rngs))
    size = clip_cfg.image_size
    proc = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    towers_dir = _save_towers_bundle(root / "towers", towers, tok, proc, config, t, h * w)
    spec = encode.EncodeSpec(tokenizer, CLIPPreprocessConfig.from_hf_config(proc), d.text_len)
    folder = encode.encode_dataset(out["dataset_dir"], root / "tfds", encode.Encoder(towers, spec), towers,
                                   batch_size=8, shard_size=64, progress=progress, tag="synthetic",
                                   towers_bundle=towers_dir)
    _marker(root).write_text(str(folder.resolve()) + "\n")
    return folder
