"""Training input: ``encoded6d`` examples -> global ``(accum, micro, ...)`` batches on the mesh.

Global batches do not depend on the number of hosts: the dataset is shuffled by seed and repeated as one stream;
optimizer step ``b`` consumes records ``b*G ... b*G+G-1`` of it (``G`` = global batch), arranged as
``(grad_accum_steps, micro_batch)``, and host ``p`` of ``P`` reads only its columns ``[p*m, (p+1)*m)`` of every
micro-batch (``m`` = micro_batch / P). So 1 host and 2 hosts train on identical global batches (tested), and a
run can resume on another host count. The grain iterator state (one small JSON per host) is checkpointed with
the train state.

:func:`ensure_synthetic_dataset` builds the embedded default data when ``data.dir`` is empty: synthetic 4D clips
(:mod:`fourdnex_jax.data.synthetic`) -> ``clips6d`` -> the encode step with *random tiny* JAX encoders (Wan VAE
architecture at base_dim 16, a UMT5 of width ``model.text_dim``, a CLIP tower of width ``model.image_dim``, a
word-level tokenizer of the captions' words). The latents are real VAE encodings of real clips, but of an
untrained VAE: enough to test that training runs and fits, not to learn 4D.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from fourdnex_jax.data import pipeline, tfds_builders

#: Keys of a decoded ``encoded6d`` example that the train step consumes.
BATCH_KEYS = ("rgb_latent", "rgb_latent_std", "xyz_latent", "xyz_latent_std", "cond_latent", "text_embeds",
              "image_embeds")


def micro_layout(global_batch: int, grad_accum_steps: int, process_count: int) -> tuple[int, int]:
    """(micro batch, per-host columns m) with checks."""
    if global_batch % grad_accum_steps:
        raise ValueError(f"global_batch_size {global_batch} is not a multiple of grad_accum_steps {grad_accum_steps}")
    micro = global_batch // grad_accum_steps
    if micro % process_count:
        raise ValueError(f"micro batch {micro} is not a multiple of the process count {process_count}")
    return micro, micro // process_count


def make_train_dataset(source, *, global_batch: int, grad_accum_steps: int = 1, seed: int = 0, text_len: int = 512,
                       process_index: int | None = None, process_count: int | None = None):
    """A grain MapDataset whose element ``b`` is this host's part of global step ``b``:
    ``{key: (accum * m, ...)}`` (reshape with :func:`to_global`)."""
    import grain

    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    micro, m = micro_layout(global_batch, grad_accum_steps, process_count)
    stream = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
    local = grad_accum_steps * m

    def pick(k: int):
        b, q = divmod(k, local)
        i, r = divmod(q, m)
        return stream[b * global_batch + i * micro + process_index * m + r]

    def decode(ex):
        ex = pipeline.decode_encoded(ex, text_len)
        return {k: ex[k] for k in BATCH_KEYS}

    n = (2 ** 62 // global_batch) * local
    return grain.MapDataset.range(n).map(pick).map(decode).batch(local, drop_remainder=True)


def make_iterator(ds, data_cfg):
    return pipeline.make_iterator(ds, num_threads=data_cfg.num_threads, num_workers=data_cfg.num_workers)


def to_global(local: Mapping[str, np.ndarray], shardings: Mapping[str, Any], global_batch: int,
              grad_accum_steps: int) -> dict[str, jax.Array]:
    """Host batch ``(accum*m, ...)`` -> global arrays ``(accum, micro, ...)`` sharded on the batch axis."""
    micro = global_batch // grad_accum_steps
    out = {}
    for k, v in local.items():
        v = np.asarray(v).reshape(grad_accum_steps, -1, *v.shape[1:])
        out[k] = jax.make_array_from_process_local_data(shardings[k], v, (grad_accum_steps, micro, *v.shape[2:]))
    return out


def batch_shapes(dataset_dir: str | os.PathLike, global_batch: int, grad_accum_steps: int,
                 text_len: int) -> dict[str, tuple[int, ...]]:
    """Global ``(accum, micro, ...)`` shapes of the batch leaves of an encoded6d dataset."""
    import tensorflow_datasets as tfds

    feats = tfds.builder_from_directory(os.fspath(dataset_dir)).info.features
    micro = global_batch // grad_accum_steps
    shapes = {}
    for k in BATCH_KEYS:
        s = tuple(feats[k].shape)
        if k == "text_embeds":
            s = (text_len, s[-1])
        shapes[k] = (grad_accum_steps, micro, *s)
    return shapes


def abstract_batch_shapes(model_cfg, global_batch: int, grad_accum_steps: int, latent_thw: tuple[int, int, int],
                          text_len: int, image_tokens: int = 257) -> dict[str, tuple[int, ...]]:
    """The same shapes without a dataset (AOT planning): per-modality latent (T, H, W)."""
    t, h, w = latent_thw
    z = model_cfg.out_channels
    lead = (grad_accum_steps, global_batch // grad_accum_steps)
    lat = (*lead, t, h, w, z)
    return {"rgb_latent": lat, "rgb_latent_std": lat, "xyz_latent": lat, "xyz_latent_std": lat,
            "cond_latent": (*lead, t, h, 2 * w, z), "text_embeds": (*lead, text_len, model_cfg.text_dim),
            "image_embeds": (*lead, image_tokens, model_cfg.image_dim)}


# -- the embedded default dataset ----------------------------------------------------------------------------------
def _marker(root: Path) -> Path:
    return root / "encoded_dataset.txt"


def find_synthetic_dataset(root: str | os.PathLike) -> Path | None:
    marker = _marker(Path(root))
    if marker.exists():
        path = Path(marker.read_text().strip())
        if (path / "dataset_info.json").exists():
            return path
    return None


def _word_tokenizer(captions):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from fourdnex_jax.data.captions import training_prompt
    from fourdnex_jax.models.text_encoder import UMT5Tokenizer

    pre = pre_tokenizers.Whitespace()
    words = sorted({w for c in captions for w, _ in pre.pre_tokenize_str(training_prompt(c))})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return UMT5Tokenizer(tok), len(vocab)


def ensure_synthetic_dataset(config, root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The encoded synthetic dataset of ``config.data`` under ``root`` (default ``data.synthetic_dir``), built
    on first use (one process only). Returns the dataset folder."""
    import dataclasses

    from flax import nnx

    from fourdnex_jax.data import encode, prepare, synthetic
    from fourdnex_jax.data.annotations import ClipConfig
    from fourdnex_jax.data.writers import write_caption_csv
    from fourdnex_jax.io_utils import Progress, atomic_save_npz
    from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, CLIPVisionConfig, CLIPVisionTower
    from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder
    from fourdnex_jax.models.vae import WanVAE, WanVAEConfig

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
    tokenizer, vocab = _word_tokenizer(captions.values())
    rngs = nnx.Rngs(config.seed)
    clip_cfg = dataclasses.replace(CLIPVisionConfig.tiny(), hidden_size=m.image_dim)
    towers = encode.Towers(WanVAE(WanVAEConfig.tiny(), rngs=rngs),
                           UMT5Encoder(dataclasses.replace(UMT5Config.tiny(vocab), d_model=m.text_dim), rngs=rngs),
                           CLIPVisionTower(clip_cfg, rngs=rngs))
    size = clip_cfg.image_size
    spec = encode.EncodeSpec(tokenizer, CLIPPreprocessConfig(size={"shortest_edge": size},
                                                            crop_size={"height": size, "width": size}), d.text_len)
    folder = encode.encode_dataset(out["dataset_dir"], root / "tfds", encode.Encoder(towers, spec), towers,
                                   batch_size=8, shard_size=64, progress=progress, tag="synthetic")
    _marker(root).write_text(str(folder.resolve()) + "\n")
    return folder


def dataset_dir(config) -> Path:
    """``data.dir`` or the synthetic dataset (built if missing)."""
    if config.data.dir:
        return Path(config.data.dir)
    return ensure_synthetic_dataset(config)


def data_source(folder: str | os.PathLike, split: str = "train"):
    return tfds_builders.data_source(folder, split)


def write_random_dataset(root: str | os.PathLike, model_cfg, *, num_examples: int = 8,
                         latent_thw: tuple[int, int, int] = (3, 8, 12), text_len: int = 16, image_tokens: int = 17,
                         seed: int = 0, nan_example: int | None = None) -> Path:
    """A small ``encoded6d`` dataset of random examples (tests, benchmarks): no encoders involved. Latents have a
    per-example structure (smooth patterns) so a model can fit them. ``nan_example``: that example's RGB latent
    is NaN (NaN-policy tests)."""
    from fourdnex_jax.data import staging

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
            "prompt": f"random example {i} POINTMAP_STYLE.", "clip_id": f"random_{i:04d}"})
    sdir = Path(root) / "_staging" / cfg.name / "train"
    items = [(str(i), i) for i in range(num_examples)]
    shards, _, _ = staging.plan_shards(items, sdir, num_examples)
    staging.write_shard(sdir, shards[0][1], examples, {"kept": num_examples, "skipped": {}, "ids": {}})
    tfds_builders.build(tfds_builders.Encoded6D, root, cfg, {"train": sdir})
    return Path(root) / tfds_builders.Encoded6D.name / cfg.name / str(tfds_builders.Encoded6D.VERSION)
