"""Two local processes (jax.distributed over loopback, gloo CPU collectives, 2 fake devices each) train 3 steps and
end with the same parameters as 1 process with 4 devices and the same global batch."""

import socket
import subprocess

import numpy as np
import pytest

from fourdnex_jax.testing.training import ROOT, random_dataset, run_train, train_cmd
from fourdnex_jax.training import checkpoint

pytestmark = pytest.mark.integration  # two `fourdnex train` processes

COMMON = ("--config.train.num_steps=3", "--config.train.checkpoint_every=3", "--config.train.global_batch_size=4",
          "--config.sharding.mesh_shape=(1,-1,1,1)")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    import os

    data = random_dataset(tmp_path / "data", n=8)
    run_train(tmp_path / "one", data, *COMMON, devices=4)
    port = _port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen(train_cmd(tmp_path / "two", data, *COMMON, "--config.train.distributed=True",
                                        f"--config.train.coordinator_address=127.0.0.1:{port}",
                                        "--config.train.num_processes=2", f"--config.train.process_id={i}"),
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("2-process training timed out")
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, so[-2000:] + se[-4000:]
    assert "2 process(es)" in outs[0][0]
    _, one = checkpoint.load_trainable(tmp_path / "one")
    _, two = checkpoint.load_trainable(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-6, atol=1e-7, err_msg=k)
    exact = all(np.array_equal(one[k], two[k]) for k in one)
    print(f"2 processes vs 1: bit-identical={exact}")
