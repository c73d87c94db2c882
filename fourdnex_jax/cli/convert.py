"""Converts a diffusers Wan2.1-I2V folder (+ the 4DNeX LoRA) into a bundle of orbax checkpoints for ``generate``.

    fourdnex convert --src Wan2.1-I2V-14B-480P-Diffusers --adapter 4DNeX --out bundles/4dnex
        [--lora-fuse-scale 0.5] [--skip COMPONENT ...] [--param-dtype auto|float32|bfloat16]
        [--modality-layout width] [--preset wan21_i2v_14b_480p|tiny]

Every component is checked first (folders, safetensors headers, every key/shape/dtype against the tables, no lossy
casts; the 4DNeX adapter complete: domain embeddings and the expected LoRA targets; one error lists all problems
before anything is written), then streamed into ``--out``, published as a unit when complete (NaN/inf weights and a
Hugging Face download whose file differs from its published sha256 fail the conversion). See
fourdnex_jax/weights/torch_to_jax.py for the folder layout and ``manifest.json`` for what was converted (sha256 of
every source file, dtypes, the effective LoRA scale and how it was derived). ``fourdnex export`` goes back.
"""

from __future__ import annotations

import os

from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # conversion is host work; never grab an accelerator

from fourdnex_jax.recipe import SAMPLING_PRESETS
from fourdnex_jax.weights.adapter import DEFAULT_FUSE_SCALE
from fourdnex_jax.weights.registry import COPIED_COMPONENTS, SPECS

_SRC = flags.DEFINE_string("src", None, "Diffusers folder of Wan2.1-I2V (transformer/, vae/, text_encoder/, "
                           "image_encoder/, tokenizer/, ...).", required=True)
_ADAPTER = flags.DEFINE_string("adapter", None, "Folder (or .safetensors file) of the 4DNeX LoRA (3DTopia/4DNeX); "
                               "without it the bundle is plain Wan I2V.")
_FUSE = flags.DEFINE_float("lora-fuse-scale", DEFAULT_FUSE_SCALE, "The fuse_lora(lora_scale=...) the adapter is "
                           "meant for (4DNeX inference: 0.5).")
_OUT = flags.DEFINE_string("out", None, "Bundle folder to write (must not exist or be empty).", required=True)
_SKIP = flags.DEFINE_multi_enum("skip", [], list(SPECS) + list(COPIED_COMPONENTS), "Component to leave out "
                                "(repeatable).")
_DTYPE = flags.DEFINE_enum("param-dtype", "auto", ["auto", "float32", "bfloat16"], "Stored parameter dtype (auto: "
                           "the source's).")
_LAYOUT = flags.DEFINE_string("modality-layout", "width", "Transformer layout with an adapter (4DNeX: width).")
_PRESET = flags.DEFINE_enum("preset", "wan21_i2v_14b_480p", sorted(SAMPLING_PRESETS), "Sampling preset recorded "
                            "in manifest.json (fourdnex_jax.recipe.SAMPLING_PRESETS).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress line per model.")
_NO_DOMAIN = flags.DEFINE_bool("allow-no-domain-embeddings", False, "Convert an --adapter without "
                               "learnable_domain_embeddings.pt (the 4DNeX adapter has one; without this flag its "
                               "absence is an error).")
_TARGETS = flags.DEFINE_list("lora-targets", ["to_k", "to_out.0", "to_q", "to_v"], "LoRA targets the --adapter "
                             "must have (4DNeX: q/k/v/out of both attentions); another set is an error. 'any' "
                             "accepts whatever the adapter targets.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a bundle already in --out (default: kept, and the run "
                               "refused). The bundle is published as a unit: a killed conversion leaves none.")


def main(argv) -> int:
    del argv
    from fourdnex_jax.weights.torch_to_jax import convert

    convert(_SRC.value, _OUT.value, adapter=_ADAPTER.value, fuse_scale=_FUSE.value, skip=_SKIP.value,
            param_dtype=_DTYPE.value, modality_layout=_LAYOUT.value, preset=_PRESET.value,
            progress=_PROGRESS.value, allow_no_domain_embeddings=_NO_DOMAIN.value,
            lora_targets=None if _TARGETS.value == ["any"] else _TARGETS.value, overwrite=_OVERWRITE.value)
    print(f"convert: {_SRC.value}" + (f" + {_ADAPTER.value}" if _ADAPTER.value else "") + f" -> {_OUT.value} "
          f"(use it with: fourdnex generate --checkpoint {_OUT.value} --image IMG --out OUT)")
    return 0
