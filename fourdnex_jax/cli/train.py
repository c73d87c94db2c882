"""Sharded LoRA training of the 4DNeX DiT.

    fourdnex train --config tiny --out runs/tiny --config.data.dir=DATASET [--config.train.num_steps=300]
        [--stop-after N]
    fourdnex train --config tiny --out runs/tiny --synthetic

Trains on ``config.data.dir`` (an encoded6d dataset from the encode step). ``--synthetic`` instead trains on the
synthetic dataset of ``config.data.synthetic_*``, building it first if missing (synthetic clips -> clips6d -> encode
with random tiny encoders, ``fourdnex_jax.data.synthetic_dataset.ensure_synthetic_dataset``; ~1-2 min for the tiny
config; the encoders are kept as a bundle in ``towers/`` beside the data, which ``fourdnex bundle`` takes as the
run's base: random towers, so that bundle samples noise, a check of the pipeline, not a model) under
``config.data.synthetic_dir``: an absolute folder, or one relative to the cache folder
(``$FOURDNEX_CACHE``, default ``~/.cache/fourdnex_jax``), never to the working directory. Resumes from the latest
checkpoint in ``OUT/checkpoints`` (train state, data iterator, RNG). Writes ``OUT/metrics.jsonl``, TensorBoard
events under ``OUT/tb`` and prints one progress line every ``train.log_every`` steps. Multi-host:
``--config.train.distributed=True`` (coordinator/process count/id from the config or the environment).
The run records which towers encoded its data (the dataset's ``towers.json``); it goes to inference directly
(``fourdnex generate --checkpoint OUT``) or as a bundle (``fourdnex bundle --run OUT --out BUNDLE``, the command the
last line prints), paired only with those towers; in Python ``fourdnex_jax.weights.runs.load_trained_model(OUT)``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from fourdnex_jax.cli.common import UsageError
from fourdnex_jax.utils.resources import config_path

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("tiny")), "Experiment config.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Run folder (checkpoints, metrics, TensorBoard events).", required=True)
_STOP_AFTER = flags.DEFINE_integer("stop-after", None, "Return after this many steps of this invocation.")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "Train on the synthetic dataset of config.data.synthetic_* "
                               "(built under config.data.synthetic_dir if missing) instead of config.data.dir.")


def cache_dir() -> Path:
    """Where derived data is kept between runs: ``$FOURDNEX_CACHE``, default ``~/.cache/fourdnex_jax``."""
    return Path(os.environ.get("FOURDNEX_CACHE") or Path.home() / ".cache" / "fourdnex_jax")


def synthetic_root(config) -> Path:
    """``config.data.synthetic_dir``: absolute as given, relative under :func:`cache_dir`, empty: ``synthetic/<name>``
    there."""
    d = Path(config.data.synthetic_dir or Path("synthetic") / config.name)
    return d if d.is_absolute() else cache_dir() / d


def interrupted_note() -> str:
    """What Ctrl-C leaves (common.interrupted): the checkpoints saved so far."""
    return (f"{_OUT.value} keeps its checkpoints; the same command resumes from the newest" if _OUT.value else "")


def main(argv) -> int:
    del argv
    config = CONFIG.value
    from fourdnex_jax import sharding as mesh_lib

    mesh_lib.maybe_initialize_distributed(config.train)  # before any other JAX call
    import jax

    from fourdnex_jax.pipelines.runs import next_command
    from fourdnex_jax.training.trainer import Trainer

    t0 = time.perf_counter()
    if _SYNTHETIC.value:
        if config.data.dir:
            raise UsageError("--synthetic and --config.data.dir are exclusive")
        from fourdnex_jax.data.synthetic_dataset import ensure_synthetic_dataset
        from fourdnex_jax.pipelines.runs import save_towers_bundle

        config.data.dir = str(ensure_synthetic_dataset(config, synthetic_root(config),
                                                        progress=jax.process_index() == 0,
                                                        save_towers=save_towers_bundle))
    trainer = Trainer(config, _OUT.value)
    if jax.process_index() == 0:
        print(f"train: {config.name}, mesh {dict(trainer.mesh.shape)} on {jax.device_count()} "
              f"{jax.devices()[0].platform} devices, {jax.process_count()} process(es); data {trainer.dataset_dir}; "
              f"start step {trainer.start_step}/{config.train.num_steps}", flush=True)
    summary = trainer.run(stop_after=_STOP_AFTER.value)
    trainer.close()
    hist = summary["history"]
    if jax.process_index() == 0 and hist:
        k = max(1, min(10, len(hist) // 4))
        first = sum(h["loss"] for h in hist[:k]) / k
        last = sum(h["loss"] for h in hist[-k:]) / k
        print("summary: " + json.dumps({"config": config.name, "steps": [summary["start_step"], summary["end_step"]],
                                        f"loss_first{k}": round(first, 6), f"loss_last{k}": round(last, 6),
                                        "first_step_s": summary["first_step_s"],
                                        "total_s": round(time.perf_counter() - t0, 1),
                                        "checkpoints": str(trainer.checkpointer.directory),
                                        "next": next_command(_OUT.value)}), flush=True)
    return 0
