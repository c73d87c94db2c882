"""The DiT benchmarks (benchmarks/) and fourdnex_jax.models.transformer.flops at the tiny size, one timed repeat; no
timing is asserted.

* FLOP count: the analytic forward and adapter train-step counts equal the matmul FLOPs of the traced program
  exactly (forward jaxpr; ``value_and_grad`` jaxpr with respect to LoRA + domain embeddings), and the hand count of
  one tiny block; XLA's ``cost_analysis`` of the compiled (unrolled) forward lies within [1, 1.10] x the analytic
  count (XLA also counts elementwise ops: norms, softmax, RoPE, activations); the 14B figures; the peak table.
* The benchmarks: the ``dit_vs_diffusers`` row structure (oracle: diffusers + peft), that the agreement check raises
  when the PyTorch weights differ from the JAX ones, and ``compile_time``. The GPU check (``gpu_check`` /
  ``dit_gpu``) is tested in test_gpu_check.py.
"""

import json
import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from benchmarks import common, compile_time
from benchmarks import dit_vs_diffusers as bench
from fourdnex_jax.config import load_config_file, model_config
from fourdnex_jax.models.transformer import TRAINABLE, WanTransformer3D, flops
from fourdnex_jax.testing.training import ROOT
from tests.helpers import tiny_dit_config

XLA_COST_TOL = 0.10


def abstract_args(cfg, batch=2, thw=(3, 8, 24), text_len=16):
    f32 = jnp.float32
    return (jax.ShapeDtypeStruct((batch, *thw, cfg.in_channels), f32), jax.ShapeDtypeStruct((batch,), f32),
            jax.ShapeDtypeStruct((batch, text_len, cfg.text_dim), f32),
            jax.ShapeDtypeStruct((batch, 257, cfg.image_dim), f32))


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": False}, {"domain_embeddings": False},
                                       {"domain_embeddings": False, "scan_layers": False},
                                       {"lora_targets": ("to_q", "add_k_proj", "ffn.net.2")}])
def test_analytic_flops_equal_traced_program(overrides):
    cfg = tiny_dit_config(**overrides)
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
    cfg = tiny_dit_config()  # D 64, F 128, LoRA r 4 on to_q/k/v/out of both attentions, I2V (Dkv 64)
    L, lt, li, d, f, r = 144, 16, 257, 64, 128, 4
    per_block = (2 * L * d * d * 4 + 2 * L * L * d * 2  # self-attention projections, QK^T, PV
                 + 2 * L * d * d * 2 + 2 * lt * d * d * 2 + 2 * li * d * d * 2 + 2 * L * (lt + li) * d * 2  # cross
                 + 2 * L * d * f * 2  # FFN
                 + 2 * r * (d + d) * (4 * L + 2 * L + 2 * lt))  # LoRA: attn1 x4 on L, attn2 q/out on L, k/v on lt
    terms = flops.matmuls(cfg, flops.token_grid(cfg, (3, 8, 24)), batch=1, text_len=lt, image_tokens=li)
    blocks = sum(t.flops for t in terms if t.name.startswith("blocks/"))
    assert blocks == cfg.num_layers * per_block


def test_14b_count_at_the_4dnex_shape():
    """At the 4DNeX shape (fused latent 13 x 60 x 180: 35,100 tokens) the forward is 1.88e15 FLOPs and the adapter
    train step (what the trainer's MFU counts: frozen base, LoRA + domain embeddings) about 2.55x it."""
    cfg = model_config(load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
    s = flops.summary(cfg, flops.token_grid(cfg, (13, 60, 180)))
    assert s["tokens"] == 35100 and 1.88e15 < s["forward"] < 1.89e15
    assert 2.5 < s["train_adapter"] / s["forward"] < 2.6


def test_peak_tflops_table():
    from fourdnex_jax.utils.devices import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("TPU v5 lite") == 197.0 and peak_tflops("cpu") is None and peak_tflops("cpu", 2.0) == 2.0


def test_xla_cost_analysis_close_to_analytic():
    cfg = tiny_dit_config(scan_layers=False)  # XLA's cost analysis prices a while-loop body once: unroll
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    args = abstract_args(cfg, batch=1, text_len=512)
    compiled = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)).lower(state, *args).compile()
    xla = compiled.cost_analysis()["flops"]
    ours = flops.forward_flops(cfg, flops.token_grid(cfg, (3, 8, 24)), batch=1, text_len=512)
    print(f"XLA cost analysis / analytic = {xla / ours:.4f}")
    assert 1.0 <= xla / ours <= 1.0 + XLA_COST_TOL


def test_check_agreement_rejects_mismatch_and_nan():
    assert common.check_agreement("x", 1e-7, 1e-4) == 1e-7
    for bad in (2e-4, math.nan):
        with pytest.raises(common.AgreementError):
            common.check_agreement("x", bad, 1e-4)


# -- dit_vs_diffusers and the diffusers child, with the PyTorch oracle
# ------------------------------------------------------------------------------
@pytest.mark.oracle
def test_cpu_row_structure_at_tiny(torch_oracle):
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    row = bench.bench_size(common.SIZES["tiny"], repeats=1, warmup=0, torch_compile=False, train=True,
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
    size = common.SIZES["tiny"]
    side = common.build_jax(common.load_size_config(size))
    inputs = common.make_inputs(side.cfg, size.latent, 1)
    ti = bench.torch_inputs(inputs)
    model = bench.build_torch(side)
    result = bench.agreement(side, model, inputs, ti)  # identical weights: passes
    assert result["forward_rel_l2"] <= bench.FORWARD_TOL
    with torch.no_grad():
        model.blocks[1].ffn.net[2].weight.mul_(1.01)  # one base weight off by 1%
    with pytest.raises(common.AgreementError, match="forward output"):
        bench.agreement(side, model, inputs, ti)
    # A different adapter (LoRA-B and domain embeddings 1.5x those of the JAX model) is caught too.
    other = bench.build_torch(common.build_jax(common.load_size_config(size), adapter_scale=1.5))
    with pytest.raises(common.AgreementError):
        bench.agreement(side, other, inputs, ti)


# -- compile_time (JAX only) ------------------------------------------------------------------------
def test_compile_time_structure(tmp_path):
    out = tmp_path / "compile.json"
    assert compile_time.main(["--size", "tiny", "--layers", "1", "3", "--repeats", "1", "--what", "forward",
                             "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["layers"]) == {"1", "3"} and r["persistent_cache"] is False
    for n in ("1", "3"):
        assert r["layers"][n]["forward"]["compile_s"] > 0 and r["layers"][n]["forward"]["lower_s"] > 0
    assert set(r["ratio_total"]) == {"forward"} and r["ratio_total"]["forward"] > 0
    t = compile_time.compile_train(common.load_size_config(common.SIZES["tiny"], layers=1), (3, 8, 12))
    assert t["compile_s"] > 0 and t["total_s"] >= t["compile_s"]
    assert jax.config.jax_enable_compilation_cache  # restored for the rest of the session
