"""Turns a training run into a bundle that ``fourdnex generate --checkpoint`` (and
``ImageTo4DPipeline.from_pretrained``) loads: the run's trained DiT (its base + the latest adapter) with the VAE,
encoders, tokenizer, scheduler and sampling preset of a base bundle.

    fourdnex bundle --run RUN --out BUNDLE [--base BASE_BUNDLE]

``--base``: the bundle the run's data was encoded with; default: the run's own base folder when it trained on a
converted checkpoint (``config.train.base_checkpoint``). A run on a random base (the tiny demo) needs it (e.g.
``--base checkpoints/tiny``). ``fourdnex generate --checkpoint RUN [--base BASE]`` does the same in memory.
"""

from __future__ import annotations

from absl import flags

_RUN = flags.DEFINE_string("run", None, "Training run folder (fourdnex train --out).", required=True)
_OUT = flags.DEFINE_string("out", None, "Bundle folder to write (must not exist or be empty).", required=True)
_BASE = flags.DEFINE_string("base", None, "Bundle whose VAE / encoders / tokenizer / preset go with the run "
                            "(default: the run's base folder, when it is a bundle).")


def main(argv) -> int:
    del argv
    from fourdnex_jax.cli.runs import load_run_bundle
    from fourdnex_jax.media.publish import check_output_dir
    from fourdnex_jax.pipelines.bundle import save_bundle

    check_output_dir(_OUT.value, inputs=[p for p in (_RUN.value, _BASE.value) if p])  # before any weights load
    b = load_run_bundle(_RUN.value, _BASE.value)
    save_bundle(_OUT.value, transformer=b.transformer, vae=b.vae, text_encoder=b.text_encoder,
                image_encoder=b.image_encoder, tokenizer_dir=b.directory / "tokenizer",
                clip_preprocess={"size": dict(b.clip_preprocess.size), "crop_size": dict(b.clip_preprocess.crop_size)},
                preset=b.preset, spec=b.spec, scheduler=b.scheduler, info=b.info)
    print(f"bundle: {_RUN.value} (step {b.info['training_step']}) + towers of {b.info['towers_from']} -> "
          f"{_OUT.value} (use it with: fourdnex generate --checkpoint {_OUT.value} --image IMG --out OUT)")
    return 0
