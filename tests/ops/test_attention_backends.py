"""Every attention implementation that runs on CPU against the fp32 reference ``reference.attend`` (no torch needed).

Splash runs in the Pallas interpreter here (``interpret=True`` off TPU), so its cases are kept to a few 128-blocks.
Bounds are relative L2 (``fourdnex_jax.testing.numerics.rel_l2``), set at about 2-4x the errors measured on CPU (JAX
0.10.2):
  fp32: reference vs float64 numpy, chunked, ring, auto <= 1e-6 (measured <= 2e-7); splash <= 2e-6 (measured
        <= 4.2e-7: the kernel's online softmax sums in another order), splash gradients <= 1e-6 (measured 2.2e-7),
        tiny DiT forward splash vs xla <= 2e-6 (measured 2.2e-7);
  bf16 inputs vs the fp32 reference on the same (bf16) values: xla is exactly the fp32 result rounded once;
        splash <= 5e-3 (measured 2.3e-3: q is rounded to bf16 after the 1/sqrt(D) scale and the kernel rounds the
        probabilities to bf16 before P.V; the final rounding alone measures 1.7e-3).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.models.transformer import WanTransformer3D, WanTransformerConfig
from fourdnex_jax.ops.attention import IMPLEMENTATIONS, dot_product_attention, resolve_implementation
from fourdnex_jax.ops.attention.reference import attend, pad_to_blocks
from fourdnex_jax.ops.attention.splash import default_block_size
from fourdnex_jax.testing.numerics import rel_l2
from tests.helpers import tiny_dit_config

FP32, FP32_SPLASH, BF16_SPLASH, GRAD_SPLASH = 1e-6, 2e-6, 5e-3, 1e-6


def qkv(b, lq, lk, h, d, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (b, lq, h, d))
    k, v = (jax.random.normal(kk, (b, lk, h, d)) for kk in ks[1:])
    return tuple(x.astype(dtype) for x in (q, k, v))


def upcast(*xs):
    return tuple(x.astype(jnp.float32) for x in xs)


def context_mesh(shape=(2, 2, 2)):
    """A mesh with Auto axes, as the training mesh (``fourdnex_jax/sharding.py``) builds it."""
    return jax.make_mesh(shape, ("data", "context", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)


def test_reference_matches_float64_numpy():
    q, k, v = qkv(2, 24, 11, 3, 16)
    qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", qn, kn) / np.sqrt(16)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    expected = np.einsum("bhqk,bkhd->bqhd", p / p.sum(-1, keepdims=True), vn)
    assert rel_l2(attend(q, k, v), expected) < FP32


def test_xla_bf16_is_the_fp32_result_rounded_once():
    q, k, v = qkv(2, 24, 11, 2, 16, jnp.bfloat16)
    out = dot_product_attention(q, k, v, implementation="xla")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out, np.float32),
                                  np.asarray(attend(*upcast(q, k, v)).astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("lq,lk,chunk", [(37, 19, 8), (37, 37, 37), (64, 5, 16), (10, 257, 4)])
def test_chunked_non_multiple_lengths(lq, lk, chunk):
    q, k, v = qkv(2, lq, lk, 2, 16)
    out = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="chunked", chunk_size=chunk))(q, k, v)
    assert out.shape == q.shape
    assert rel_l2(out, attend(q, k, v)) < FP32


def test_pad_to_blocks_pads_with_zeros_and_marks_padded_keys():
    q, k, v = qkv(1, 17, 257, 2, 8)
    p = pad_to_blocks(q, k, v, block_q=128, block_kv=128)
    assert p.q.shape == (1, 128, 2, 8) and p.k.shape == p.v.shape == (1, 384, 2, 8)
    np.testing.assert_array_equal(p.q[:, :17], q)
    assert not np.any(np.asarray(p.q[:, 17:])) and not np.any(np.asarray(p.k[:, 257:]))
    np.testing.assert_array_equal(p.kv_valid, np.arange(384) < 257)
    assert pad_to_blocks(q, k, v, block_q=17).kv_valid is None  # block_kv=1: keys never padded
    assert pad_to_blocks(q, k[:, :256], v[:, :256], block_q=1, block_kv=128).kv_valid is None


@pytest.mark.parametrize("b,lq,lk,h,d", [
    (2, 144, 144, 2, 32),  # self-attention, both sides padded 144 -> 256
    (1, 17, 17, 2, 16),  # tiny odd length: 111 of 128 keys are padding
    (2, 144, 33, 2, 32),  # cross-attention, short keys
    (1, 40, 257, 1, 64),  # CLIP-length keys: 257 -> 384
])
def test_splash_matches_reference(b, lq, lk, h, d):
    q, k, v = qkv(b, lq, lk, h, d)
    out = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="splash"))(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_l2(out, attend(q, k, v)) < FP32_SPLASH


def test_splash_explicit_blocks_and_block_validation():
    q, k, v = qkv(1, 150, 300, 1, 32)  # q 150 -> 256 (2 blocks of 128), keys 300 -> 512 (2 blocks of 256)
    out = dot_product_attention(q, k, v, implementation="splash", block_q=128, block_kv=256)
    assert rel_l2(out, attend(q, k, v)) < FP32_SPLASH
    with pytest.raises(ValueError, match="block_kv=100 must be a positive multiple of 128"):
        dot_product_attention(q, k, v, implementation="splash", block_kv=100)


def test_default_block_sizes():
    assert [default_block_size(n) for n in (17, 144, 257, 512, 35_100)] == [128, 256, 384, 512, 512]


def test_splash_bf16_bound():
    q, k, v = qkv(2, 144, 33, 2, 32, jnp.bfloat16)
    out = dot_product_attention(q, k, v, implementation="splash")
    assert out.dtype == jnp.bfloat16
    assert rel_l2(out, attend(*upcast(q, k, v))) < BF16_SPLASH


def test_splash_gradient_matches_xla():
    q, k, v = qkv(2, 40, 24, 2, 16)  # q 40 and keys 24 -> 128: padded keys must get no weight and no gradient
    w = jax.random.normal(jax.random.key(1), q.shape)
    loss = lambda impl: lambda q, k, v: jnp.sum(w * jnp.sin(dot_product_attention(q, k, v, implementation=impl)))
    got = jax.jit(jax.grad(loss("splash"), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    for name, g, e in zip("qkv", got, want):
        assert rel_l2(g, e) < GRAD_SPLASH, name


def test_splash_under_mesh_shards_batch_heads_and_queries():
    q, k, v = qkv(2, 48, 48, 2, 16)
    txt = qkv(2, 20, 20, 2, 16, seed=1)[1]
    splash = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="splash"))
    with jax.set_mesh(context_mesh()):
        self_out, cross_out = splash(q, k, v), splash(q, txt, txt)
    assert rel_l2(self_out, attend(q, k, v)) < FP32_SPLASH
    assert rel_l2(cross_out, attend(q, txt, txt)) < FP32_SPLASH


def test_ring_with_padded_local_chunks():
    q, k, v = qkv(2, 36, 36, 2, 16)  # 9 queries per device, chunk 4: local chunks are padded
    txt = qkv(2, 10, 10, 2, 16, seed=1)[1]
    ring = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="ring", chunk_size=4))
    with jax.set_mesh(context_mesh((2, 4, 1))):
        self_out, cross_out = ring(q, k, v), ring(q, txt, txt)
    assert rel_l2(self_out, attend(q, k, v)) < FP32
    assert rel_l2(cross_out, attend(q, txt, txt)) < FP32


def test_auto_resolution_on_cpu():
    short, long_ = qkv(1, 16, 16, 2, 8), qkv(1, 48, 16, 2, 8)
    assert resolve_implementation("auto", short[0], short[1], chunk_size=32) == "xla"
    assert resolve_implementation("auto", long_[0], long_[1], chunk_size=32) == "chunked"
    bf16 = upcast(*short)[0].astype(jnp.bfloat16)
    assert resolve_implementation("auto", bf16, bf16, chunk_size=32) == "xla"  # never cudnn off GPU
    assert resolve_implementation("chunked", *short[:2]) == "chunked"
    with jax.set_mesh(context_mesh()):
        assert resolve_implementation("auto", long_[0], long_[1], chunk_size=32) == "ring"
        odd = qkv(1, 15, 15, 2, 8)[0]  # 15 queries do not split over context=2
        assert resolve_implementation("auto", odd, odd, chunk_size=32) == "xla"
    out = dot_product_attention(*long_, implementation="auto", chunk_size=32)
    assert rel_l2(out, attend(*long_)) < FP32


def test_cudnn_errors_name_the_alternatives_on_cpu():
    q, k, v = qkv(1, 16, 16, 2, 8, jnp.bfloat16)
    with pytest.raises(ValueError, match=r"needs a CUDA GPU, but the JAX backend is 'cpu'; use 'chunked'.*'xla'"):
        dot_product_attention(q, k, v, implementation="cudnn")
    with pytest.raises(ValueError, match="needs bfloat16 or float16.*float32.*compute_dtype='bfloat16'"):
        dot_product_attention(*upcast(q, k, v), implementation="cudnn")


@pytest.mark.gpu
def test_cudnn_matches_the_reference_on_a_gpu():
    """cuDNN flash attention (bf16) against the fp32 reference math, on a GPU only (skipped elsewhere)."""
    q, k, v = qkv(2, 256, 256, 4, 64, jnp.bfloat16)
    out = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="cudnn"))(q, k, v)
    assert rel_l2(np.asarray(out, np.float32), attend(*upcast(q, k, v))) < BF16_SPLASH


@pytest.mark.tpu
def test_splash_compiled_matches_xla_on_a_tpu():
    """The splash kernel compiled for the TPU (no interpreter) against the reference math (skipped elsewhere)."""
    q, k, v = qkv(2, 512, 512, 4, 128, jnp.bfloat16)
    out = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="splash"))(q, k, v)
    assert rel_l2(np.asarray(out, np.float32), attend(*upcast(q, k, v))) < BF16_SPLASH


def test_unknown_implementation_and_bad_shapes():
    q, k, v = qkv(1, 8, 8, 2, 8)
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'.*'splash'"):
        dot_product_attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match=r"attention expects q \(B, Lq, H, D\)"):
        dot_product_attention(q, k[..., :4], v[..., :4])


def test_config_accepts_every_implementation():
    for name in IMPLEMENTATIONS:
        assert WanTransformerConfig(attention=name).attention == name
    with pytest.raises(ValueError, match="attention='flash'; choose one of .*'splash', 'cudnn', 'auto'"):
        WanTransformerConfig(attention="flash")


def test_tiny_transformer_splash_equals_xla():
    cfg = tiny_dit_config(lora_rank=0, lora_alpha=0.0)
    rng = np.random.default_rng(0)
    latents = jnp.asarray(rng.standard_normal((1, 3, 4, 8, 36)), jnp.float32)  # 48 tokens
    text = jnp.asarray(rng.standard_normal((1, 16, 32)), jnp.float32)
    image = jnp.asarray(rng.standard_normal((1, 257, 24)), jnp.float32)
    t = jnp.array([500.0])

    def forward(attention):
        model = WanTransformer3D(cfg.replace(attention=attention), rngs=nnx.Rngs(0))
        return nnx.jit(lambda m: m(latents, t, text, image))(model)

    want = forward("xla")
    assert rel_l2(forward("splash"), want) < FP32_SPLASH
