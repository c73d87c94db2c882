"""The trainer's host loop: ``Trainer.run`` (metrics read on log steps only) against the loop it replaced (every
step's metrics read right after its dispatch), on one trainer, in one process, interleaved.

    python -m benchmarks.trainer_loop [--config tiny] [--steps 20] [--log-every 10] [--repeats 3] [--out FILE]

Both loops run the same jitted train step on the same state, iterator and frozen base (the tiny config on one CPU
device with a random ``encoded6d`` dataset); a round times ``--steps`` steps of each (order alternating per round,
:func:`benchmarks.common.timed_interleaved`). Reported: wall seconds per step of each (median over rounds), process
CPU seconds per step, and the paired ratio ``run / per-step-read`` (< 1: the new loop is faster). No checkpoint is
written inside the timed steps. On a loaded machine the ratio is the figure to read (both loops see the same load);
``host.loadavg`` records the load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, host_info, paired_ratio, print_table, timed_interleaved, versions, write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="tiny", help="configs/NAME.py")
    p.add_argument("--steps", type=int, default=20, help="train steps per timed call")
    p.add_argument("--log-every", type=int, default=10, help="train.log_every of the new loop")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON report path (written atomically)")
    args = p.parse_args(argv)

    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.data import loader
    from fourdnex_jax.testing.random_models import write_random_dataset
    from fourdnex_jax.training.trainer import Trainer

    tmp = Path(tempfile.mkdtemp(prefix="trainer_loop_"))
    config = load_config_file(ROOT / "configs" / f"{args.config}.py")
    data = write_random_dataset(tmp / "data", model_config(config), num_examples=8)
    with config.unlocked():
        config.data.dir = str(data)
        config.train.global_batch_size = 2
        config.train.num_steps = 10 ** 9
        config.train.log_every = args.log_every
        config.train.checkpoint_every = 10 ** 9
        config.sharding.mesh_shape = (1, 1, 1, 1)
    tr = Trainer(config, tmp / "run", verbose=False)
    t = tr.config.train

    def per_step_read():  # the loop before: the host waits for each step's metrics before the next dispatch
        for _ in range(args.steps):
            batch = loader.to_global(next(tr.iterator), tr.batch_sh, t.global_batch_size, t.grad_accum_steps)
            tr.state, metrics = tr.step_fn(tr.state, tr.frozen, batch)
            jax.device_get(metrics)
        jax.block_until_ready(tr.state)

    def run():  # Trainer.run: metrics read on log steps, at most MAX_IN_FLIGHT steps ahead
        tr.run(stop_after=args.steps)
        jax.block_until_ready(tr.state)

    res = timed_interleaved({"run": run, "per_step_read": per_step_read}, warmup=1, repeats=args.repeats)
    tr.close()
    ratio = paired_ratio(res["run"], res["per_step_read"])
    rows = [[name, f"{r['median_s'] / args.steps * 1e3:.1f}", f"{r['cpu_median_s'] / args.steps * 1e3:.1f}"]
            for name, r in res.items()]
    print_table(["loop", "wall ms/step", "cpu ms/step"], rows)
    host = host_info()
    print(f"summary: Trainer.run / per-step read = {ratio:.3f} (paired median over {args.repeats} rounds of "
          f"{args.steps} steps, {args.config} config, log every {args.log_every}); load {host['loadavg']}")
    write_json(args.out, {"kind": "trainer_loop", "config": args.config, "steps": args.steps,
                          "log_every": args.log_every, "results": res, "ratio_run_over_per_step_read": ratio,
                          "host": host, "versions": versions()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
