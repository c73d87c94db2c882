"""Turns a training run into a bundle that ``fourdnex generate --checkpoint`` (and
``ImageTo4DPipeline.from_pretrained``) loads: the run's trained DiT (its base + the latest adapter) with the VAE,
encoders, tokenizer, scheduler and sampling preset of a base bundle.

    fourdnex bundle --run RUN --out BUNDLE [--base BASE_BUNDLE]

``--base``: the bundle whose towers (VAE, text and image encoders) encoded the run's data; ``tiny`` names the shipped
one. Default: the bundle the run's data records (``fourdnex train --synthetic`` keeps its random towers as one), else
the run's own base folder when it trained on a converted checkpoint. A base whose towers are not the ones that
encoded the run's data is refused (fourdnex_jax/pipelines/runs.py). ``fourdnex generate --checkpoint RUN [--base
BASE]`` does the same in memory.
"""

from __future__ import annotations

from absl import flags

_RUN = flags.DEFINE_string("run", None, "Training run folder (fourdnex train --out).", required=True)
_OUT = flags.DEFINE_string("out", None, "Bundle folder to write (must not exist or be empty).", required=True)
_BASE = flags.DEFINE_string("base", None, "Bundle whose VAE / encoders / tokenizer / preset go with the run ('tiny': "
                            "the shipped one; default: the bundle its data records, else its base folder).")


def main(argv) -> int:
    del argv
    from fourdnex_jax.media.publish import check_output_dir
    from fourdnex_jax.pipelines.runs import write_run_bundle

    check_output_dir(_OUT.value, inputs=[p for p in (_RUN.value, _BASE.value) if p])  # before any weights load
    b = write_run_bundle(_RUN.value, _OUT.value, _BASE.value)
    check = b.info["towers_check"]
    print(f"bundle: {_RUN.value} (step {b.info['training_step']}) + towers of {b.info['towers_from']} "
          f"({'towers match the run' if check == 'matched' else check}) -> {_OUT.value} "
          f"(use it with: fourdnex generate --checkpoint {_OUT.value} --image IMG --out OUT)")
    return 0
