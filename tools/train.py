"""Sharded LoRA training of the 4DNeX DiT.

    python tools/train.py --config configs/tiny.py --workdir runs/tiny --config.data.dir=DATASET
        [--config.train.num_steps=300] [--stop_after N]
    python tools/train.py --config configs/tiny.py --workdir runs/tiny --synthetic

Trains on ``config.data.dir`` (an encoded6d dataset from the encode step). ``--synthetic`` instead trains on the
synthetic dataset under ``data.synthetic_dir``, building it first if missing (synthetic clips -> clips6d -> encode
with random tiny encoders, ``fourdnex_jax.testing.random_models.ensure_synthetic_dataset``; ~1-2 min for the tiny
config). Resumes from the latest checkpoint in
``WORKDIR/checkpoints`` (train state, data iterator, RNG). Writes ``WORKDIR/metrics.jsonl``, TensorBoard events
under ``WORKDIR/tb`` and prints one progress line every ``train.log_every`` steps. Multi-host:
``--config.train.distributed=True`` (coordinator/process count/id from the config or the environment).
Load the result with ``fourdnex_jax.training.checkpoint.load_trained_model(WORKDIR)``.
"""

from __future__ import annotations

import json
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/tiny", "Run directory (checkpoints, metrics).")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None, "Return after this many steps of this invocation.")
_SYNTHETIC = flags.DEFINE_bool("synthetic", False, "Train on the synthetic dataset of config.data.synthetic_* "
                               "(built under config.data.synthetic_dir if missing) instead of config.data.dir.")


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    config = _CONFIG.value
    from fourdnex_jax import sharding as mesh_lib

    mesh_lib.maybe_initialize_distributed(config.train)  # before any other JAX call
    import jax

    from fourdnex_jax.training.trainer import Trainer

    t0 = time.perf_counter()
    if _SYNTHETIC.value:
        if config.data.dir:
            raise app.UsageError("--synthetic and --config.data.dir are exclusive")
        from fourdnex_jax.testing.random_models import ensure_synthetic_dataset

        config.data.dir = str(ensure_synthetic_dataset(config, progress=jax.process_index() == 0))
    trainer = Trainer(config, _WORKDIR.value)
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
                                        "checkpoints": str(trainer.checkpointer.directory)}), flush=True)


if __name__ == "__main__":
    app.run(main)
