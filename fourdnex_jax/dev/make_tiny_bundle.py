"""Builds the bundled tiny model (``checkpoints/tiny``) in two steps around ``fourdnex train``.

    # 1. frozen towers (trained tiny VAE + seeded random tiny UMT5/CLIP + a word tokenizer) and the encoded dataset
    python -m fourdnex_jax.dev make-tiny-bundle --step encode --config tiny --vae VAE_DIR --clips CLIPS6D_DIR \
        --stage STAGE_DIR --data-out DATA_DIR
    # 2. after `fourdnex train --config.data.dir=<printed encoded6d folder> --out RUN`:
    python -m fourdnex_jax.dev make-tiny-bundle --step assemble --stage STAGE_DIR --run RUN --out checkpoints/tiny \
        [--vae VAE_DIR] [--config.sample.max_area=AREA ...]
    # 3. the bundle's training-domain statistics: fourdnex make-domain --checkpoint checkpoints/tiny

The UMT5 and CLIP towers are random (seed ``--seed``) frozen feature extractors: the DiT learns to read them during
training, so they only need to be fixed, not pretrained. The tokenizer is word-level over the synthetic captions'
vocabulary (+ the recipe's prompt suffix), unknown words map to ``<unk>``. See docs/tiny_model.md for the exact run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from absl import flags
from ml_collections import config_flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the tiny bundle is built on the host CPU (docs/tiny_model.md)

from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.resources import config_path

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("tiny")), "Experiment config (--step encode: "
                                         "the DiT architecture and the text length; --step assemble: its "
                                         "sample section's preset fields, e.g. --config.sample.max_area=1536, "
                                         "override the stage's sampling preset).", lock_config=True)
_STEP = flags.DEFINE_enum("step", None, ["encode", "assemble"], "encode: towers + encoded dataset; assemble: the "
                          "bundle from the stage and a training run.", required=True)
_VAE = flags.DEFINE_string("vae", None, "encode: folder with vae/ and configs/vae.json (fourdnex train-tiny-vae); "
                           "assemble: take the VAE from this run instead of the stage (only a decoder-only fine-tune "
                           "of the staged VAE is accepted).")
_CLIPS = flags.DEFINE_string("clips", None, "encode: clips6d dataset folder.")
_STAGE = flags.DEFINE_string("stage", None, "Stage folder: written by encode (a bundle with a placeholder DiT), "
                             "read by assemble.", required=True)
_DATA_OUT = flags.DEFINE_string("data-out", None, "encode: TFDS data dir for the encoded6d dataset.")
_SPLITS = flags.DEFINE_list("splits", ["train", "heldout"], "encode: splits of --clips to encode.")
_SEED = flags.DEFINE_integer("seed", 0, "encode: seed of the random UMT5 / CLIP towers.")
_RUN = flags.DEFINE_string("run", None, "assemble: the training run folder (fourdnex train --out).")
_OUT = flags.DEFINE_string("out", None, "assemble: the bundle folder to write.")
_VAE_REPORT = flags.DEFINE_list("vae-report", [], "assemble: vae_report.json of each train-tiny-vae phase, in "
                                "order, comma-separated (stored in bundle.json).")


def _tokenizer_dir(captions, out: Path) -> Path:
    """A lower-case word-level tokenizer over the captions' words, saved as ``out/tokenizer.json``."""
    from fourdnex_jax.data.synthetic_dataset import word_tokenizer

    tok, _ = word_tokenizer(captions, lowercase=True)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return out


def cmd_encode() -> int:
    from flax import nnx

    from fourdnex_jax.config import model_config
    from fourdnex_jax.data import encode, synthetic, tfds_builders
    from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, CLIPVisionConfig, CLIPVisionTower
    from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder, UMT5Tokenizer
    from fourdnex_jax.models.towers import Towers
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.pipelines.bundle import save_bundle
    from fourdnex_jax.recipe import SAMPLING_PRESETS
    from fourdnex_jax.weights.restore import restore_model

    config = CONFIG.value
    cfg = model_config(config)
    # vocabulary: every caption the generator can write is drawn from this grammar; take many scenes' captions
    caps = [synthetic.make_scene(synthetic.split_seed(s, i)).caption() for s in ("train", "heldout")
            for i in range(2000)]
    stage = Path(_STAGE.value)
    tok_dir = _tokenizer_dir(caps, stage.parent / (stage.name + "_tokenizer"))
    tokenizer = UMT5Tokenizer.from_dir(tok_dir)
    rngs = nnx.Rngs(_SEED.value)
    text = UMT5Encoder(dataclasses.replace(UMT5Config.tiny(tokenizer.vocab_size), d_model=cfg.text_dim), rngs=rngs)
    clip_cfg = dataclasses.replace(CLIPVisionConfig.tiny(), hidden_size=cfg.image_dim)
    image = CLIPVisionTower(clip_cfg, rngs=rngs)
    vae = restore_model(_VAE.value, "vae")
    size = clip_cfg.image_size
    proc = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    dit = WanTransformer3D(cfg, rngs=nnx.Rngs(config.seed))  # placeholder, replaced by `assemble`
    save_bundle(stage, transformer=dit, vae=vae, text_encoder=text, image_encoder=image, tokenizer_dir=tok_dir,
                clip_preprocess=proc, preset=SAMPLING_PRESETS["tiny"],
                info={"stage": "towers only; DiT is a placeholder"})
    towers = Towers(vae, text, image)
    spec = encode.EncodeSpec(tokenizer, CLIPPreprocessConfig.from_hf_config(proc), config.data.text_len)
    folder = encode.encode_dataset(_CLIPS.value, _DATA_OUT.value, encode.Encoder(towers, spec), towers,
                                   splits=tuple(_SPLITS.value), batch_size=8, shard_size=64, tag="tinybundle",
                                   towers_bundle=stage)
    print(json.dumps({"stage": str(stage), "encoded": str(folder),
                      "splits": {s: len(tfds_builders.data_source(folder, s)) for s in _SPLITS.value}}))
    return 0


def cmd_assemble() -> int:
    from fourdnex_jax.pipelines.bundle import load_bundle, save_bundle
    from fourdnex_jax.weights.runs import load_trained_model, read_meta

    stage = load_bundle(_STAGE.value)
    vae = stage.vae
    if _VAE.value:  # a decoder-only fine-tune of the staged VAE: the encoded training latents must still be its own
        import numpy as np
        from flax import nnx

        from fourdnex_jax.models import params
        from fourdnex_jax.models.towers import VAE_DECODER_SIDE
        from fourdnex_jax.weights.restore import restore_model

        vae = restore_model(_VAE.value, "vae")
        old, new = (params.flat_variables(m, nnx.Param) for m in (stage.vae, vae))
        changed = [p for p in old if not p.startswith(VAE_DECODER_SIDE)
                   and not np.array_equal(np.asarray(old[p][...]), np.asarray(new[p][...]))]
        if changed or old.keys() != new.keys():
            raise InputError(f"--vae {_VAE.value}: its encoder differs from the staged VAE's ({changed[:3]}...); the "
                             "DiT was trained on latents of the staged encoder (use --train-part decoder)")
    from fourdnex_jax.pipelines.settings import SampleSettings

    # what the bundle is meant to sample with (manifest.json): the stage's preset, then the config's preset fields
    preset = SampleSettings.from_config(CONFIG.value.sample, stage.preset).preset
    step, meta = read_meta(_RUN.value)
    dit = load_trained_model(_RUN.value)
    missing = [p for p in _VAE_REPORT.value if not Path(p).is_file()]
    if missing:
        raise InputError(f"--vae-report: no such file(s) {missing}")
    info = {"name": "fourdnex_jax tiny demo model", "dit_run": str(_RUN.value), "dit_step": step,
            "dit_base": meta.get("base"), "command_log": "docs/tiny_model.md",
            "vae_reports": [json.loads(Path(p).read_text()) for p in _VAE_REPORT.value]}
    save_bundle(_OUT.value, transformer=dit, vae=vae, text_encoder=stage.text_encoder,
                image_encoder=stage.image_encoder, tokenizer_dir=Path(_STAGE.value) / "tokenizer",
                clip_preprocess={"size": dict(stage.clip_preprocess.size),
                                 "crop_size": dict(stage.clip_preprocess.crop_size)},
                preset=preset, spec=stage.spec, scheduler=stage.scheduler, info=info)
    size = sum(p.stat().st_size for p in Path(_OUT.value).rglob("*") if p.is_file())
    print(f"make-tiny-bundle: {_OUT.value} ({size / 1e6:.1f} MB), DiT step {step}")
    return 0


def main(argv) -> int:
    del argv
    need = {"encode": {"vae": _VAE, "clips": _CLIPS, "data-out": _DATA_OUT},
            "assemble": {"run": _RUN, "out": _OUT}}[_STEP.value]
    missing = [f"--{k}" for k, f in need.items() if not f.value]
    if missing:
        raise InputError(f"--step {_STEP.value} needs {', '.join(missing)}")
    return cmd_encode() if _STEP.value == "encode" else cmd_assemble()
