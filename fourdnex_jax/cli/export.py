"""Exports a bundle (or a converted / trained folder) back to the PyTorch layouts: diffusers folders + the 4DNeX
adapter.

    fourdnex export --src BUNDLE --out EXPORT_DIR [--models transformer vae ...] [--max-shard-gb 5] [--noadapter]

See fourdnex_jax/weights/jax_to_torch.py for the layouts (diffusers ``save_pretrained`` folders with sharded
safetensors + index; the adapter in the 4DNeX release format).
"""

from __future__ import annotations

import os

from absl import flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # conversion is host work; never grab an accelerator

from fourdnex_jax.weights.registry import SPECS

_SRC = flags.DEFINE_string("src", None, "Bundle / converted folder (fourdnex convert or fourdnex bundle).",
                           required=True)
_OUT = flags.DEFINE_string("out", None, "Folder to write (must not exist or be empty).", required=True)
_MODELS = flags.DEFINE_multi_enum("models", [], list(SPECS), "Model to export (repeatable; default: every model "
                                  "in --src).")
_SHARD = flags.DEFINE_float("max-shard-gb", 5.0, "Largest safetensors shard, GiB.")
_ADAPTER = flags.DEFINE_bool("adapter", True, "Also export the LoRA + domain embeddings (4DNeX release format).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress line per model.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an export already in --out (default: kept, and the run "
                               "refused). The export is published as a unit: a killed run leaves none.")


def main(argv) -> int:
    del argv
    from fourdnex_jax.weights.jax_to_torch import export

    export(_SRC.value, _OUT.value, models=_MODELS.value or None, adapter=_ADAPTER.value,
           max_shard_bytes=int(_SHARD.value * 2**30), progress=_PROGRESS.value, overwrite=_OVERWRITE.value)
    print(f"export: {_SRC.value} -> {_OUT.value}")
    return 0
