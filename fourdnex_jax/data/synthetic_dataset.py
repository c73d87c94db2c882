"""The embedded default training data (``fourdnex train --synthetic``): synthetic 4D clips -> ``clips6d`` -> the
encode step with *random tiny* encoders (real VAE encodings of real clips, by an untrained VAE: enough to see that
training runs and fits, not to learn 4D), built once per folder (:func:`ensure_synthetic_dataset`); and the
word-level tokenizer over a caption grammar's words that those encoders (and the tiny bundle) use.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path


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


def ensure_synthetic_dataset(config, root: str | os.PathLike | None = None, progress: bool = True,
                             save_towers=None) -> Path:
    """The encoded synthetic dataset of ``config.data`` under ``root`` (default ``data.synthetic_dir``), built
    on first use (one process only): ``data.synthetic_clips`` clips of ``synthetic_frames`` x ``synthetic_height``
    x ``synthetic_width``, encoded by random tiny towers (Wan VAE architecture at base_dim 16, a UMT5 of width
    ``model.text_dim``, a CLIP tower of width ``model.image_dim``, a word-level tokenizer of the captions' words),
    which ``save_towers(directory, towers, tokenizer, clip_preprocess, config, frames, area)`` (e.g.
    :func:`fourdnex_jax.pipelines.runs.save_towers_bundle`) keeps as a bundle under ``root/towers``, recorded in the
    dataset's ``towers.json``. Returns the dataset folder."""
    import jax
    from flax import nnx

    from fourdnex_jax.data import encode, prepare, synthetic
    from fourdnex_jax.data.annotations import ClipConfig
    from fourdnex_jax.data.captions import write_caption_csv
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
    towers_dir = None if save_towers is None else save_towers(root / "towers", towers, tok, proc, config, t, h * w)
    spec = encode.EncodeSpec(tokenizer, CLIPPreprocessConfig.from_hf_config(proc), d.text_len)
    folder = encode.encode_dataset(out["dataset_dir"], root / "tfds", encode.Encoder(towers, spec), towers,
                                   batch_size=8, shard_size=64, progress=progress, tag="synthetic",
                                   towers_bundle=towers_dir)
    _marker(root).write_text(str(folder.resolve()) + "\n")
    return folder
