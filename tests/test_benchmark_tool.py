"""tools/benchmark.py and fourdnex_jax.utils.flops at the tiny size, one timed repeat; no timing is asserted.

* FLOP count: the analytic forward and adapter train-step counts equal the matmul FLOPs of the traced program
  exactly (forward jaxpr; ``value_and_grad`` jaxpr with respect to LoRA + domain embeddings), and the hand count of
  one tiny block; XLA's ``cost_analysis`` of the compiled (unrolled) forward lies within [1, 1.10] x the analytic
  count (XLA also counts elementwise ops: norms, softmax, RoPE, activations); the 14B count agrees with the
  trainer's MFU count.
* The tool: the ``cpu`` row structure (oracle: diffusers + peft), that the agreement check raises when the PyTorch
  weights differ from the JAX ones, the ``compile`` subcommand and the ``gpu`` code path on CPU (``--allow-cpu``).
"""

import argparse
import importlib.util
import json
import math
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from fourdnex_jax.config import load_config_file, model_config
from fourdnex_jax.models.transformer import TRAINABLE, WanTransformer3D
from fourdnex_jax.utils import flops
from train_support import ROOT, TINY

XLA_COST_TOL = 0.10


def _load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


bench = _load_tool()


def tiny_cfg(**overrides):
    return model_config(load_config_file(TINY)).replace(**overrides)


def abstract_args(cfg, batch=2, thw=(3, 8, 24), text_len=16):
    f32 = jnp.float32
    return (jax.ShapeDtypeStruct((batch, *thw, cfg.in_channels), f32), jax.ShapeDtypeStruct((batch,), f32),
            jax.ShapeDtypeStruct((batch, text_len, cfg.text_dim), f32),
            jax.ShapeDtypeStruct((batch, 257, cfg.image_dim), f32))


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": False}, {"domain_embeddings": False},
                                       {"domain_embeddings": False, "scan_layers": False},
                                       {"lora_targets": ("to_q", "add_k_proj", "ffn.net.2")}])
def test_analytic_flops_equal_traced_program(overrides):
    cfg = tiny_cfg(**overrides)
    graphdef, trainable, rest = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))),
                                          TRAINABLE, ...)
    args = abstract_args(cfg)
    grid = flops.token_grid(cfg, (3, 8, 24))

    def forward(trainable, rest, *a):
        return nnx.merge(graphdef, trainable, rest)(*a)

    def loss(trainable, rest, *a):
        return jnp.mean(jnp.square(forward(trainable, rest, *a)))

    kw = dict(batch=2, text_len=16, image_tokens=257)
    assert flops.traced_matmul_flops(forward, trainable, rest, *args) == flops.forward_flops(cfg, grid, **kw)
    assert (flops.traced_matmul_flops(jax.value_and_grad(loss), trainable, rest, *args)
            == flops.train_flops(cfg, grid, trainable="adapter", **kw))
    s = flops.summary(cfg, grid, **kw)
    assert s["forward"] < s["train_adapter"] < s["train_full"] < s["train_full_3x"]


def test_hand_count_of_one_block():
    cfg = tiny_cfg()  # D 64, F 128, LoRA r 4 on to_q/k/v/out of both attentions, I2V (Dkv 64)
    L, lt, li, d, f, r = 144, 16, 257, 64, 128, 4
    per_block = (2 * L * d * d * 4 + 2 * L * L * d * 2  # self-attention projections, QK^T, PV
                 + 2 * L * d * d * 2 + 2 * lt * d * d * 2 + 2 * li * d * d * 2 + 2 * L * (lt + li) * d * 2  # cross
                 + 2 * L * d * f * 2  # FFN
                 + 2 * r * (d + d) * (4 * L + 2 * L + 2 * lt))  # LoRA: attn1 x4 on L, attn2 q/out on L, k/v on lt
    terms = flops.matmuls(cfg, flops.token_grid(cfg, (3, 8, 24)), batch=1, text_len=lt, image_tokens=li)
    blocks = sum(t.flops for t in terms if t.name.startswith("blocks/"))
    assert blocks == cfg.num_layers * per_block


def test_14b_count_matches_the_trainer_mfu_count():
    """At the 4DNeX shape (fused latent 13 x 60 x 180: 35,100 tokens) the count agrees with the trainer's MFU count
    (:mod:`fourdnex_jax.training.metrics`, which leaves out the condition embedder and prices the text/CLIP k/v
    projections' input gradients that autodiff never computes)."""
    from fourdnex_jax.training import metrics

    cfg = model_config(load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
    s = flops.summary(cfg, flops.token_grid(cfg, (13, 60, 180)))
    m = metrics.dit_flops(cfg, (13, 60, 180, 36), 512)
    assert s["tokens"] == 35100 and 1.88e15 < s["forward"] < 1.89e15
    assert abs(s["forward"] / (m["linear"] + m["attention"] + m["lora"]) - 1) < 1e-3
    assert abs(s["train_adapter"] / metrics.train_flops_per_sample(cfg, (13, 60, 180, 36), 512) - 1) < 1e-2


def test_xla_cost_analysis_close_to_analytic():
    cfg = tiny_cfg(scan_layers=False)  # XLA's cost analysis prices a while-loop body once: unroll
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    args = abstract_args(cfg, batch=1, text_len=512)
    compiled = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)).lower(state, *args).compile()
    xla = compiled.cost_analysis()["flops"]
    ours = flops.forward_flops(cfg, flops.token_grid(cfg, (3, 8, 24)), batch=1, text_len=512)
    print(f"XLA cost analysis / analytic = {xla / ours:.4f}")
    assert 1.0 <= xla / ours <= 1.0 + XLA_COST_TOL


def test_check_agreement_rejects_mismatch_and_nan():
    assert bench.check_agreement("x", 1e-7, 1e-4) == 1e-7
    for bad in (2e-4, math.nan):
        with pytest.raises(bench.AgreementError):
            bench.check_agreement("x", bad, 1e-4)


# -- the tool with the PyTorch oracle ------------------------------------------------------------------------------
@pytest.mark.oracle
def test_cpu_row_structure_at_tiny(torch_oracle):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    row = bench.bench_size(bench.SIZES["tiny"], repeats=1, warmup=0, torch_compile=False, train=True,
                           log=lambda m: None)
    for key in ("jax_forward", "torch_forward", "jax_train_step", "torch_train_step"):
        assert row[key]["median_s"] > 0 and len(row[key]["times_s"]) == 1 and row[key]["cpu_median_s"] >= 0
    assert row["torch_compile_forward"].startswith("skipped")
    assert row["agreement"]["forward_rel_l2"] <= bench.FORWARD_TOL
    assert row["agreement"]["grad_rel_l2"] <= bench.GRAD_TOL
    assert row["tokens"] == 3 * 4 * 12 and row["flops"]["forward"] > 0
    for key in ("ratio_forward_vs_eager", "ratio_forward_vs_best_torch", "ratio_train_step"):
        assert row[key] > 0
    json.dumps(row)  # the report row is plain JSON
    bench.cpu_table([row])


@pytest.mark.oracle
def test_agreement_check_fails_when_weights_differ(torch_oracle):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    torch = torch_oracle
    size = bench.SIZES["tiny"]
    side = bench.build_jax(bench.load_size_config(size))
    inputs = bench.make_inputs(side.cfg, size.latent, 1)
    ti = bench.torch_inputs(inputs)
    model = bench.build_torch(side)
    result = bench.agreement(side, model, inputs, ti)  # identical weights: passes
    assert result["forward_rel_l2"] <= bench.FORWARD_TOL
    with torch.no_grad():
        model.blocks[1].ffn.net[2].weight.mul_(1.01)  # one base weight off by 1%
    with pytest.raises(bench.AgreementError, match="forward output"):
        bench.agreement(side, model, inputs, ti)
    # A different adapter (LoRA-B and domain embeddings 1.5x those of the JAX model) is caught too.
    other = bench.build_torch(bench.build_jax(bench.load_size_config(size), adapter_scale=1.5))
    with pytest.raises(bench.AgreementError):
        bench.agreement(side, other, inputs, ti)


@pytest.mark.oracle
def test_diffusers_gpu_child_runs_on_cpu(torch_oracle):
    """The diffusers part of ``gpu`` (a child process: ``gpu-diffusers``) with ``--torch-device cpu``."""
    pytest.importorskip("diffusers")
    cfg = bench.gpu_model_config(load_config_file(TINY), None, None)
    assert cfg.lora_rank == 0 and cfg.remat_policy == "none"  # inference form: LoRA fused, no remat
    args = argparse.Namespace(repeats=1, warmup=0, torch_device="cpu", diffusers_timeout=600)
    out = bench.diffusers_subprocess(args, ["--config", TINY, "--latent", "3", "8", "12"])
    assert out["status"] == "ok", out
    assert out["tokens"] == 144 and out["forward"]["median_s"] > 0 and out["peak_bytes"] is None
    missing_cuda = bench.diffusers_subprocess(argparse.Namespace(repeats=1, warmup=0, torch_device="cuda",
                                                                 diffusers_timeout=600),
                                              ["--config", TINY, "--latent", "3", "8", "12"])
    if not torch_oracle.cuda.is_available():
        assert missing_cuda["status"].startswith("unavailable: torch.cuda.is_available() is False")


# -- compile and gpu subcommands (JAX only) ------------------------------------------------------------------------
def test_compile_subcommand_structure(tmp_path):
    out = tmp_path / "compile.json"
    assert bench.main(["compile", "--size", "tiny", "--layers", "1", "3", "--repeats", "1", "--what", "forward",
                       "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["layers"]) == {"1", "3"} and r["persistent_cache"] is False
    for n in ("1", "3"):
        assert r["layers"][n]["forward"]["compile_s"] > 0 and r["layers"][n]["forward"]["lower_s"] > 0
    assert set(r["ratio_total"]) == {"forward"} and r["ratio_total"]["forward"] > 0
    t = bench.compile_train(bench.load_size_config(bench.SIZES["tiny"], layers=1), (3, 8, 12))
    assert t["compile_s"] > 0 and t["total_s"] >= t["compile_s"]
    assert jax.config.jax_enable_compilation_cache  # restored for the rest of the session


def test_gpu_code_path_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    assert bench.main(["gpu", "--config", TINY, "--latent", "3", "8", "12", "--allow-cpu", "--repeats", "1",
                       "--warmup", "0", "--steps", "2", "--measure-steps", "--no-diffusers", "--peak-tflops", "1.0",
                       "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["tokens"] == 144 and r["jax"]["params"] > 0 and r["jax"]["forward"]["median_s"] > 0
    assert r["jax"]["sampling_measured_s"] > 0 and r["jax"]["sampling_extrapolated_s"] > 0
    assert 0 < r["mfu"] and r["peak_tflops"] == 1.0
    assert "diffusers" not in r


def test_gpu_refuses_cpu_without_flag():
    with pytest.raises(SystemExit, match="--allow-cpu"):
        bench.main(["gpu", "--config", TINY, "--latent", "3", "8", "12", "--no-diffusers"])
