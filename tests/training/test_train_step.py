"""Sharded train step on 8 fake CPU devices: shardings follow the logical rules (params and optimizer state),
output shardings equal the inputs, the NaN/inf policy, a tiny overfit, and a small-config AOT compile."""

import jax
import numpy as np
import pytest

from fourdnex_jax import sharding as mesh_lib
from fourdnex_jax.config import load_config_file
from fourdnex_jax.sharding import partition_spec
from fourdnex_jax.testing.training import ROOT, TINY, random_dataset
from fourdnex_jax.training.trainer import NonFiniteError, Trainer
from fourdnex_jax.utils.tree import flatten


def tiny(**train):
    c = load_config_file(TINY)
    for k, v in train.items():
        section, key = k.split("__")
        setattr(getattr(c, section), key, v)
    return c


def test_state_shardings_follow_rules_and_step_keeps_them(tmp_path):
    data = random_dataset(tmp_path / "data", n=4)
    c = tiny(data__dir=str(data), train__global_batch_size=4, train__num_steps=2, train__log_every=1)
    c.sharding.mesh_shape = (2, 2, 1, 2)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    mesh, rules = tr.mesh, tr.rules
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
    want = {p: partition_spec(v.get_metadata()["out_sharding"], v.shape, mesh, rules)
            for p, v in tr.parts.trainable_vars.items()}
    got = {p: a.sharding.spec for p, a in flatten(tr.state["trainable"]).items()}
    assert got == want
    assert want["blocks/attn1/to_q/lora_a"] == jax.sharding.PartitionSpec(None, "fsdp", None)
    assert want["blocks/attn1/to_q/lora_b"] == jax.sharding.PartitionSpec(None, None, "tensor")
    frozen = {p: a.sharding.spec for p, a in flatten(tr.frozen).items()}
    assert frozen["blocks/attn1/to_q/kernel"] == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    mu = flatten(tr.state["opt_state"][1][0].mu)  # chain(clip, adamw): adamw's ScaleByAdamState
    assert {p: a.sharding.spec for p, a in mu.items()} == want
    assert tr.state["opt_state"][1][0].count.sharding.is_fully_replicated
    before = jax.tree.map(lambda a: a.sharding, tr.state)
    tr.run()
    same = lambda arrays, shardings: jax.tree.map(
        lambda a, sh: None if a.sharding.is_equivalent_to(sh, a.ndim) else pytest.fail(f"{a.sharding} != {sh}"),
        arrays, shardings)
    same(tr.state, before)  # the donated state comes back with the same shardings
    compiled = tr.step_fn.lower(tr.state, tr.frozen, {k: jax.ShapeDtypeStruct(s, np.float32, sharding=tr.batch_sh[k])
                                                      for k, s in tr.batch_shapes.items()}).compile()
    same(tr.state, compiled.output_shardings[0])
    same(tr.state, compiled.input_shardings[0][0])
    tr.close()


def test_nan_policy_skip_then_stop(tmp_path):
    data = random_dataset(tmp_path / "data", n=2, nan_example=0)  # every batch holds the NaN example
    c = tiny(data__dir=str(data), train__global_batch_size=2, train__num_steps=2, train__checkpoint_every=1,
             train__max_nan_skips=5)
    c.sharding.mesh_shape = (1, 2, 1, 4)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    init = jax.tree.map(np.asarray, tr.state["trainable"])
    tr.run()
    assert int(tr.state["skipped"]) == 2 and int(tr.state["step"]) == 2
    jax.tree.map(np.testing.assert_array_equal, init, jax.tree.map(np.asarray, tr.state["trainable"]))
    assert tr.checkpointer.latest_step() == 2  # skip: training (and saving) goes on
    tr.config.train.nan_policy = "stop"
    with pytest.raises(NonFiniteError):
        tr.run(num_steps=4)
    tr.checkpointer.wait()
    assert tr.checkpointer.latest_step() == 2  # stop: the offending step is never saved
    tr.close()


def test_metrics_are_read_on_log_steps_only(tmp_path, monkeypatch):
    """The host reads the device metrics in one transfer per log step (big_vision), not after every step; every
    step's loss still reaches the history, in order."""
    data = random_dataset(tmp_path / "data", n=2)
    c = tiny(data__dir=str(data), train__global_batch_size=2, train__num_steps=6, train__log_every=3,
             train__checkpoint_every=100)
    c.sharding.mesh_shape = (1, 2, 1, 4)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    reads, real = [], Trainer._read
    monkeypatch.setattr(Trainer, "_read", lambda self, pending, history: (
        reads.append([s for s, _ in pending]) if pending else None, real(self, pending, history))[1])
    out = tr.run()
    tr.close()
    assert reads == [[1, 2, 3], [4, 5, 6]]
    assert [h["step"] for h in out["history"]] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(h["loss"]) for h in out["history"])


def test_loss_falls_on_tiny_overfit(tmp_path):
    data = random_dataset(tmp_path / "data", n=2)
    c = tiny(data__dir=str(data), train__global_batch_size=4, train__num_steps=40, train__log_every=40,
             train__checkpoint_every=1000, data__sample_posterior=False, optim__warmup_steps=5)
    c.sharding.mesh_shape = (1, 4, 1, 2)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    losses = [h["loss"] for h in tr.run()["history"]]
    tr.close()
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    print(f"overfit: loss {first:.4f} -> {last:.4f}")
    assert last < 0.8 * first


def test_full_mode_trains_every_weight_and_exports_them(tmp_path):
    """train.trainable='full' (the reference's sft): every DiT parameter is in the train state (nothing frozen),
    every one moves, and the run's export carries the trained values; LoRA together with it is refused."""
    from flax import nnx

    from fourdnex_jax.config import validate
    from fourdnex_jax.models import params
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.training.checkpoint import load_trained_model
    from fourdnex_jax.utils.errors import InputError

    data = random_dataset(tmp_path / "data", n=4)
    c = tiny(data__dir=str(data), train__global_batch_size=4, train__num_steps=3, train__log_every=1,
             train__checkpoint_every=3, train__trainable="full", model__lora_rank=0, optim__warmup_steps=1)
    c.sharding.mesh_shape = (1, 4, 1, 2)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    everything = params.flat_variables(nnx.eval_shape(lambda: WanTransformer3D(tr.cfg, rngs=nnx.Rngs(0))),
                                       nnx.Param)
    assert set(tr.parts.trainable_vars) == set(everything) and tr.frozen == {}
    assert flatten(tr.state["trainable"])["blocks/attn1/to_q/kernel"].sharding.spec == \
        jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    init = {p: np.asarray(v) for p, v in flatten(tr.state["trainable"]).items()}
    tr.run()
    tr.checkpointer.wait()
    final = {p: np.asarray(v) for p, v in flatten(tr.state["trainable"]).items()}
    tr.close()
    still = sorted(p for p in init if np.array_equal(init[p], final[p]))
    assert not still, f"not updated: {still}"
    exported = params.flat_variables(load_trained_model(tmp_path / "run"), nnx.Param)
    for p, value in final.items():
        np.testing.assert_array_equal(np.asarray(exported[p][...]), value, err_msg=p)
    _check_sharded_export(tmp_path / "run", exported)
    bad = tiny(train__trainable="full")  # lora_rank 4 in the tiny config
    with pytest.raises(InputError, match=r"config.model.lora_rank=0 \(it is 4\)"):
        validate(bad)


def _check_sharded_export(run, single):
    """load_trained_model onto a (1, 4, 1, 2) mesh: the one-device values, each in the rules' sharding."""
    from flax import nnx

    from fourdnex_jax.models import params
    from fourdnex_jax.training.checkpoint import load_trained_model

    mesh = jax.make_mesh((1, 4, 1, 2), ("data", "fsdp", "context", "tensor"))
    sharded = params.flat_variables(load_trained_model(run, mesh=mesh), nnx.Param)
    assert sharded.keys() == single.keys()
    for p, var in sharded.items():
        want = partition_spec(var.get_metadata()["out_sharding"], var.shape, mesh, mesh_lib.DEFAULT_LOGICAL_AXIS_RULES)
        assert var[...].sharding.spec == want, p
        np.testing.assert_array_equal(np.asarray(var[...]), np.asarray(single[p][...]), err_msg=p)
    assert sharded["blocks/attn1/to_q/kernel"][...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")


def test_trained_adapter_run_loads_sharded(tmp_path):
    """A run on a random base, restored for inference on a mesh (fourdnex generate --checkpoint RUN): the random
    base initialised and the adapter read straight into their shards, equal to the one-device model."""
    from flax import nnx

    from fourdnex_jax.models import params
    from fourdnex_jax.training.checkpoint import load_trained_model

    data = random_dataset(tmp_path / "data", n=2)
    c = tiny(data__dir=str(data), train__global_batch_size=2, train__num_steps=2, train__checkpoint_every=2,
             optim__warmup_steps=1)
    c.sharding.mesh_shape = (1, 2, 1, 4)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    tr.run()
    tr.close()
    single = params.flat_variables(load_trained_model(tmp_path / "run"), nnx.Param)
    assert np.any(np.asarray(single["blocks/attn1/to_q/lora_b"][...]))  # trained (LoRA-B starts at 0)
    _check_sharded_export(tmp_path / "run", single)


def test_small_config_aot_compile_has_memory_analysis():
    from fourdnex_jax.training.plan import compile_train_step

    c = load_config_file(ROOT / "configs" / "small.py")
    c.train.global_batch_size = 4
    r = compile_train_step(c, jax.devices(), mesh_shape=(1, 2, 2, 2), latent_thw=(3, 8, 12), text_len=16)
    assert r["mesh"] == {"data": 1, "fsdp": 2, "context": 2, "tensor": 2}
    assert r["temp_bytes"] > 0 and r["arguments_bytes"] > 0 and r["peak_bytes"] > r["temp_bytes"]
    assert 0 < r["optimizer_bytes"] < r["params_bytes"]


def test_ring_attention_matches_xla_forward_and_grad():
    import jax.numpy as jnp

    from fourdnex_jax.ops.attention import dot_product_attention

    mesh = mesh_lib.make_mesh(load_config_file(TINY).sharding, shape=(1, 2, 4, 1))
    ks = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(ks[i], (2, 64, 2, 16)) for i in range(3))
    txt = jax.random.normal(ks[3], (2, 10, 2, 16))
    loss = lambda impl: (lambda q, k, v: jnp.sum(jnp.sin(dot_product_attention(q, k, v, implementation=impl,
                                                                                chunk_size=8))))
    with jax.set_mesh(mesh):
        ring = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="ring", chunk_size=8))
        np.testing.assert_allclose(ring(q, k, v), dot_product_attention(q, k, v), atol=2e-6)
        np.testing.assert_allclose(ring(q, txt, txt), dot_product_attention(q, txt, txt), atol=2e-6)
        g = jax.jit(jax.grad(loss("ring"), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, atol=3e-6)


def test_lora_on_a_converted_base_trains_resumes_and_loads(tmp_path):
    """4DNeX's case: LoRA + domain embeddings + the width layout trained over a converted plain Wan base (no
    adapter, layout 'none' in its config). The base is read, frozen, referenced by the checkpoint; the trained
    model loads on one device and on a mesh with the converted base values; an architecture change is refused."""
    from flax import nnx

    from fourdnex_jax.models import params
    from fourdnex_jax.models.transformer import FROZEN
    from fourdnex_jax.training.checkpoint import load_trained_model, read_meta
    from fourdnex_jax.weights.restore import read_config, restore_model
    from tests.weights.test_convert import SKIP_ENCODERS, convert, numpy_transformer

    numpy_transformer(tmp_path / "src" / "transformer")
    base = tmp_path / "base"
    convert(tmp_path / "src", base, skip=SKIP_ENCODERS + ("tokenizer", "scheduler", "image_processor"),
            progress=False)
    stored, _ = read_config(base, "transformer")
    assert (stored.lora_rank, stored.domain_embeddings, stored.modality_layout) == (0, False, "none")
    data = random_dataset(tmp_path / "data", n=2)
    c = tiny(data__dir=str(data), train__global_batch_size=2, train__num_steps=2, train__checkpoint_every=2,
             train__base_checkpoint=str(base), optim__warmup_steps=1)
    c.sharding.mesh_shape = (1, 2, 1, 4)
    tr = Trainer(c, tmp_path / "run", verbose=False)
    want = {p: np.asarray(v[...]) for p, v in params.flat_variables(restore_model(base, "transformer"),
                                                                      nnx.Param).items()}
    frozen = {p: np.asarray(v) for p, v in flatten(tr.frozen).items()}
    assert frozen.keys() == want.keys() and all(np.array_equal(frozen[p], want[p]) for p in want)
    tr.run()
    tr.close()
    assert read_meta(tmp_path / "run")[1]["base"] == {"kind": "checkpoint", "path": str(base.absolute())}
    single = params.flat_variables(load_trained_model(tmp_path / "run"), nnx.Param)
    for p in want:
        np.testing.assert_array_equal(np.asarray(single[p][...]), want[p], err_msg=p)
    assert np.any(np.asarray(single["blocks/attn1/to_q/lora_b"][...]))
    _check_sharded_export(tmp_path / "run", single)
    assert set(params.flat_variables(load_trained_model(tmp_path / "run"), FROZEN)) == set(want)
    wider = tiny(data__dir=str(data), train__base_checkpoint=str(base), model__ffn_dim=96)
    with pytest.raises(ValueError, match=r"differs from the config in \['ffn_dim'\]"):
        Trainer(wider, tmp_path / "run2", verbose=False)


def test_resumed_metrics_purge_the_steps_trained_again(tmp_path):
    """A run resumed at step 3 after logging up to 5: metrics.jsonl keeps steps <= 3 and the new TensorBoard event
    file opens with the purge marker at step 4 (SessionLog.START), so TensorBoard drops the old 4 and 5."""
    import json
    import struct

    from tensorboardX.proto import event_pb2

    from fourdnex_jax.training.metrics import MetricsWriter

    row = {"loss": 1.0}
    w = MetricsWriter(tmp_path, keep_until_step=0)
    for step in range(1, 6):
        w.write(step, row)
    w.close()
    w = MetricsWriter(tmp_path, keep_until_step=3)
    w.write(4, {"loss": 0.5})
    w.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]

    def events(path):
        data, out, i = path.read_bytes(), [], 0
        while i < len(data):  # TFRecord: length (8), crc (4), payload, crc (4)
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[i + 12:i + 12 + n])
            out.append(ev)
            i += 16 + n
        return out

    files = sorted((tmp_path / "tb").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == 2
    first, second = events(files[0]), events(files[1])
    starts = [e.step for e in second if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [4]
    assert [e.step for e in second if e.HasField("summary")] == [4]
    assert [e.step for e in first if e.HasField("summary")] == [1, 2, 3, 4, 5]
