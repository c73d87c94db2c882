"""Builds the bundled tiny model (``checkpoints/tiny``) in two steps around ``tools/train.py``.

    # 1. frozen towers (trained tiny VAE + seeded random tiny UMT5/CLIP + a word tokenizer) and the encoded dataset
    python tools/make_tiny_bundle.py encode --config configs/tiny.py --vae VAE_DIR --clips CLIPS6D_DIR \
        --stage STAGE_DIR --data-out DATA_DIR
    # 2. after `tools/train.py --config.data.dir=<printed encoded6d folder> --workdir RUN`:
    python tools/make_tiny_bundle.py assemble --stage STAGE_DIR --run RUN --out checkpoints/tiny [--vae VAE_DIR]

The UMT5 and CLIP towers are random (seed ``--seed``) frozen feature extractors: the DiT learns to read them during
training, so they only need to be fixed, not pretrained. The tokenizer is word-level over the synthetic captions'
vocabulary (+ ``POINTMAP_STYLE.``), unknown words map to ``<unk>``. See docs/tiny_model.md for the exact run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _tokenizer_dir(captions, out: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from fourdnex_jax.data.captions import training_prompt

    pre = pre_tokenizers.Whitespace()
    words = sorted({w.lower() for c in captions for w, _ in pre.pre_tokenize_str(training_prompt(c))})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return out


def cmd_encode(args) -> int:
    from flax import nnx

    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.convert.restore import restore_model
    from fourdnex_jax.data import encode, synthetic, tfds_builders
    from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, CLIPVisionConfig, CLIPVisionTower
    from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder, UMT5Tokenizer
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.pipelines.bundle import save_bundle

    config = load_config_file(args.config)
    cfg = model_config(config)
    # vocabulary: every caption the generator can write is drawn from this grammar; take many scenes' captions
    caps = [synthetic.make_scene(synthetic.split_seed(s, i)).caption() for s in ("train", "heldout")
            for i in range(2000)]
    stage = Path(args.stage)
    tok_dir = _tokenizer_dir(caps, stage.parent / (stage.name + "_tokenizer"))
    tokenizer = UMT5Tokenizer.from_dir(tok_dir)
    rngs = nnx.Rngs(args.seed)
    text = UMT5Encoder(dataclasses.replace(UMT5Config.tiny(tokenizer.vocab_size), d_model=cfg.text_dim), rngs=rngs)
    clip_cfg = dataclasses.replace(CLIPVisionConfig.tiny(), hidden_size=cfg.image_dim)
    image = CLIPVisionTower(clip_cfg, rngs=rngs)
    vae = restore_model(args.vae, "vae")
    size = clip_cfg.image_size
    proc = {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}
    dit = WanTransformer3D(cfg, rngs=nnx.Rngs(config.seed))  # placeholder, replaced by `assemble`
    save_bundle(stage, transformer=dit, vae=vae, text_encoder=text, image_encoder=image, tokenizer_dir=tok_dir,
                clip_preprocess=proc, info={"stage": "towers only; DiT is a placeholder"})
    towers = encode.Towers(vae, text, image)
    spec = encode.EncodeSpec(tokenizer, CLIPPreprocessConfig.from_hf_config(proc), config.data.text_len)
    folder = encode.encode_dataset(args.clips, args.data_out, encode.Encoder(towers, spec), towers,
                                   splits=tuple(args.splits), batch_size=8, shard_size=64, tag="tinybundle")
    print(json.dumps({"stage": str(stage), "encoded": str(folder),
                      "splits": {s: len(tfds_builders.data_source(folder, s)) for s in args.splits}}))
    return 0


def cmd_assemble(args) -> int:
    from fourdnex_jax.pipelines.bundle import load_bundle, save_bundle
    from fourdnex_jax.training.checkpoint import load_trained_model, read_meta

    stage = load_bundle(args.stage)
    vae = stage.vae
    if args.vae:  # a decoder-only fine-tune of the staged VAE: the encoded training latents must still be its own
        import numpy as np
        from flax import nnx

        from fourdnex_jax.convert.restore import restore_model
        from fourdnex_jax.models import params

        vae = restore_model(args.vae, "vae")
        old, new = (params.flat_variables(m, nnx.Param) for m in (stage.vae, vae))
        changed = [p for p in old if not p.startswith(("decoder", "post_quant_conv"))
                   and not np.array_equal(np.asarray(old[p][...]), np.asarray(new[p][...]))]
        if changed or old.keys() != new.keys():
            raise SystemExit(f"--vae {args.vae}: its encoder differs from the staged VAE's ({changed[:3]}...); the "
                             "DiT was trained on latents of the staged encoder (use --train-part decoder)")
    step, meta = read_meta(args.run)
    dit = load_trained_model(args.run)
    missing = [p for p in args.vae_report if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"--vae-report: no such file(s) {missing}")
    info = {"name": "fourdnex_jax tiny demo model", "dit_run": str(args.run), "dit_step": step,
            "dit_base": meta.get("base"), "command_log": "docs/tiny_model.md",
            "vae_reports": [json.loads(Path(p).read_text()) for p in args.vae_report]}
    save_bundle(args.out, transformer=dit, vae=vae, text_encoder=stage.text_encoder,
                image_encoder=stage.image_encoder, tokenizer_dir=Path(args.stage) / "tokenizer",
                clip_preprocess={"size": dict(stage.clip_preprocess.size),
                                 "crop_size": dict(stage.clip_preprocess.crop_size)},
                scheduler=stage.scheduler, info=info)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"make_tiny_bundle: {args.out} ({size / 1e6:.1f} MB), DiT step {step}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--config", default="configs/tiny.py")
    e.add_argument("--vae", required=True, help="folder with vae/ and configs/vae.json (tools/train_tiny_vae.py)")
    e.add_argument("--clips", required=True, help="clips6d dataset folder")
    e.add_argument("--stage", required=True)
    e.add_argument("--data-out", required=True)
    e.add_argument("--splits", nargs="+", default=["train", "heldout"])
    e.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("assemble")
    a.add_argument("--stage", required=True)
    a.add_argument("--run", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--vae", default=None, help="take the VAE from this tools/train_tiny_vae.py run instead of the "
                   "stage (only a decoder-only fine-tune of the staged VAE is accepted)")
    a.add_argument("--vae-report", nargs="*", default=[],
                   help="vae_report.json of each tools/train_tiny_vae.py phase, in order (stored in bundle.json)")
    args = ap.parse_args(argv)
    return cmd_encode(args) if args.cmd == "encode" else cmd_assemble(args)


if __name__ == "__main__":
    sys.exit(main())
