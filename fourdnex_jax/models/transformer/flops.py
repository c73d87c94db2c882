"""FLOPs of the Wan DiT: an analytic count (forward and train step) and an independent count from a traced jaxpr.

Conventions
  * 2 FLOPs per multiply-accumulate. Only matrix products are counted: linear layers, the patch embedding, the
    attention products QK^T and PV, LoRA. Norms, RoPE, softmax, activations, modulation and residual adds are
    O(L*D) elementwise work (about 1% at the 14B shape) and are left out, the usual MFU convention.
  * Shapes: ``grid`` = the post-patchify token grid (f, g, k) of one DiT sample (after the modality layout, e.g.
    the width-fused RGB|XYZ latent); L = f*g*k tokens, ``batch`` DiT samples (the doubled batch for the 'batch'
    layout or classifier-free guidance), Lt text tokens, Li CLIP tokens (I2V), D = ``cfg.dim``, F = ``cfg.ffn_dim``,
    Dkv = ``cfg.added_kv_proj_dim``, P = pt*ph*pw.
  * Per layer and sample: self-attention q, k, v, out 4 x 2*L*D^2, QK^T 2*L^2*D, PV 2*L^2*D; cross-attention
    q, out 2 x 2*L*D^2, text k, v 2 x 2*Lt*D^2, image k, v 2 x 2*Li*Dkv*D, QK^T + PV 2 x 2*L*(Lt + Li)*D; FFN
    2 x 2*L*D*F; LoRA on a targeted Linear of n tokens 2*n*r*(in + out). Once per sample: patch embedding
    2*L*(P*C_in)*D; timestep MLP and modulation 2*(freq*D + D*D + D*6D); text MLP 2*Lt*(text_dim*D + D*D);
    image MLP 2*Li*(image_dim^2 + image_dim*D); output projection 2*L*D*(P*C_out).

Train step. A product ``C = A @ B`` costs ``f`` forward and, backward, ``f`` more for each operand whose gradient is
needed (dA = dC B^T, dB = A^T dC); an operand needs its gradient iff it depends on a trainable parameter.

  * ``trainable='adapter'`` (4DNeX: LoRA + domain embeddings, frozen base): frozen kernels get no dW; the text and
    CLIP context never depends on a trainable tensor, so their k/v projections get no dX (LoRA on them still gets
    dA/dB); the tokens depend on the domain embeddings from the patch embedding on (without domain embeddings,
    from the first LoRA'd block on). This is exactly what ``jax.grad`` with respect to the adapter computes
    (tested against :func:`traced_matmul_flops`): frozen linears 2x their forward, attention products 3x, so
    2.55x the forward at the 14B 4DNeX shape, where attention is over half the forward. (With scanned layers and no
    domain embeddings, layer 0 also gets dX, as scan's autodiff does.)
  * ``trainable='all'`` (full fine-tune): the same rule with every parameter trainable, just under 3x the forward
    (``3 * forward`` is the usual round figure, reported as ``train_full_3x`` by :func:`summary`).

Recomputation under remat is not included (model FLOPs, as used for MFU). :func:`traced_matmul_flops` of a
gradient function counts what the program really executes, recomputation included (hardware FLOPs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
from jax.extend import core as jex_core

from fourdnex_jax.models.transformer.block import BLOCK_LINEARS, lora_targeted
from fourdnex_jax.models.transformer.config import WanTransformerConfig

TRAINABLE_MODES = ("adapter", "all")
GROUPS = ("patch_embed", "condition", "self_attn_proj", "self_attn_core", "cross_attn_proj", "cross_attn_core", "ffn",
          "lora", "proj_out")


@dataclasses.dataclass(frozen=True)
class Matmul:
    """One product (summed over layers and samples): ``flops`` forward; ``lhs_grad``/``rhs_grad``: whether the
    backward pass computes the gradient of the activation (lhs) / weight or second activation (rhs) operand."""

    name: str
    group: str
    flops: float
    lhs_grad: bool
    rhs_grad: bool

    @property
    def backward(self) -> float:
        return self.flops * (int(self.lhs_grad) + int(self.rhs_grad))


def token_grid(cfg: WanTransformerConfig, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
    """Post-patchify grid (f, g, k) of a DiT input latent (T, H, W) (the fused latent for the 4DNeX layouts)."""
    t, h, w = (int(v) for v in latent_thw)
    pt, ph, pw = cfg.patch_size
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent (T, H, W) = {(t, h, w)} is not divisible by the patch size {cfg.patch_size}")
    return t // pt, h // ph, w // pw


def matmuls(cfg: WanTransformerConfig, grid: tuple[int, int, int], *, batch: int = 1, text_len: int = 512,
            image_tokens: int = 257, trainable: str = "adapter") -> list[Matmul]:
    """Every matrix product of one DiT forward of ``batch`` samples on ``grid`` (see the module docstring), with
    the gradient flags of ``trainable`` ('adapter' | 'all'). Products of identical layers are summed into one
    entry named ``blocks/<diffusers module name>[.lora_A|.lora_B|.qk|.pv...]``."""
    if trainable not in TRAINABLE_MODES:
        raise ValueError(f"trainable={trainable!r}; choose one of {TRAINABLE_MODES}")
    full = trainable == "all"
    tokens = math.prod(grid)
    b, d, f = int(batch), cfg.dim, cfg.ffn_dim
    n, nt = b * tokens, b * text_len
    i2v = cfg.image_dim is not None
    ni = b * image_tokens if i2v else 0
    patch = math.prod(cfg.patch_size)
    terms: list[Matmul] = []

    def add(name, group, rows, inner, cols, lhs, rhs, times=1):
        terms.append(Matmul(name, group, 2.0 * rows * inner * cols * times, bool(lhs), bool(rhs)))

    def linear(name, group, rows, din, dout, x_dep, times=1, lora_name=None) -> bool:
        """Base product (+ LoRA); returns whether the output depends on a trainable parameter."""
        add(name, group, rows, din, dout, x_dep, full, times)
        if lora_name is not None and lora_targeted(cfg, lora_name):
            add(name + ".lora_A", "lora", rows, din, cfg.lora_rank, x_dep, True, times)
            add(name + ".lora_B", "lora", rows, cfg.lora_rank, dout, True, True, times)
            return True
        return x_dep or full

    def block(x_dep: bool, times: int) -> bool:
        def lin(module, group, rows, din, dout, dep):
            return linear(f"blocks/{module}", group, rows, din, dout, dep, times, module)

        q = lin("attn1.to_q", "self_attn_proj", n, d, d, x_dep)
        k = lin("attn1.to_k", "self_attn_proj", n, d, d, x_dep)
        v = lin("attn1.to_v", "self_attn_proj", n, d, d, x_dep)
        add("blocks/attn1.qk", "self_attn_core", n, d, tokens, q, k, times)
        add("blocks/attn1.pv", "self_attn_core", n, tokens, d, q or k, v, times)
        x_dep = lin("attn1.to_out.0", "self_attn_proj", n, d, d, q or k or v) or x_dep

        q = lin("attn2.to_q", "cross_attn_proj", n, d, d, x_dep)
        k = lin("attn2.to_k", "cross_attn_proj", nt, d, d, full)  # text context: frozen embedder (adapter mode)
        v = lin("attn2.to_v", "cross_attn_proj", nt, d, d, full)
        add("blocks/attn2.qk_text", "cross_attn_core", n, d, text_len, q, k, times)
        add("blocks/attn2.pv_text", "cross_attn_core", n, text_len, d, q or k, v, times)
        o = q or k or v
        if i2v:
            ki = lin("attn2.add_k_proj", "cross_attn_proj", ni, cfg.added_kv_proj_dim, d, full)
            vi = lin("attn2.add_v_proj", "cross_attn_proj", ni, cfg.added_kv_proj_dim, d, full)
            add("blocks/attn2.qk_image", "cross_attn_core", n, d, image_tokens, q, ki, times)
            add("blocks/attn2.pv_image", "cross_attn_core", n, image_tokens, d, q or ki, vi, times)
            o = o or ki or vi
        x_dep = lin("attn2.to_out.0", "cross_attn_proj", n, d, d, o) or x_dep

        h = lin("ffn.net.0.proj", "ffn", n, d, f, x_dep)
        return lin("ffn.net.2", "ffn", n, f, d, h) or x_dep

    add("patch_embedding", "patch_embed", n, patch * cfg.in_channels, d, False, full)
    x_dep = full or cfg.domain_embeddings
    ce = "condition_embedder"
    linear(f"{ce}/time_embedder.linear_1", "condition", b, cfg.freq_dim, d, False)
    linear(f"{ce}/time_embedder.linear_2", "condition", b, d, d, full)
    linear(f"{ce}/time_proj", "condition", b, d, 6 * d, full)
    linear(f"{ce}/text_embedder.linear_1", "condition", nt, cfg.text_dim, d, False)
    linear(f"{ce}/text_embedder.linear_2", "condition", nt, d, d, full)
    if i2v:
        linear(f"{ce}/image_embedder.ff.net.0.proj", "condition", ni, cfg.image_dim, cfg.image_dim, False)
        linear(f"{ce}/image_embedder.ff.net.2", "condition", ni, cfg.image_dim, d, full)

    # Without domain embeddings the tokens depend on a trainable tensor only after the first LoRA'd block, so
    # layer 0 needs no dX. Under ``lax.scan`` (``scan_layers``) autodiff treats the carry as depending on the
    # trainables in every iteration (one body for all layers), so layer 0 does compute it: count what runs.
    block_has_lora = any(lora_targeted(cfg, m) for m in BLOCK_LINEARS if i2v or not m.startswith("attn2.add_"))
    if x_dep or (cfg.scan_layers and block_has_lora):
        x_dep = block(True, cfg.num_layers) if cfg.num_layers else x_dep
    elif cfg.num_layers:
        x_dep = block(False, 1)
        if cfg.num_layers > 1:
            x_dep = block(x_dep, cfg.num_layers - 1)
    add("proj_out", "proj_out", n, d, cfg.out_channels * patch, x_dep, full)
    return _merge(terms)


def _merge(terms: Iterable[Matmul]) -> list[Matmul]:
    merged: dict[tuple, Matmul] = {}
    for t in terms:
        key = (t.name, t.group, t.lhs_grad, t.rhs_grad)
        merged[key] = dataclasses.replace(t, flops=merged[key].flops + t.flops) if key in merged else t
    return list(merged.values())


def forward_flops(cfg: WanTransformerConfig, grid: tuple[int, int, int], **kwargs: Any) -> float:
    """Matmul FLOPs of one forward (``kwargs``: batch, text_len, image_tokens of :func:`matmuls`)."""
    return sum(t.flops for t in matmuls(cfg, grid, **kwargs))


def train_flops(cfg: WanTransformerConfig, grid: tuple[int, int, int], *, trainable: str = "adapter",
                **kwargs: Any) -> float:
    """Matmul FLOPs of forward + backward with respect to ``trainable`` ('adapter' | 'all'); no remat
    recomputation, no optimizer (elementwise)."""
    return sum(t.flops + t.backward for t in matmuls(cfg, grid, trainable=trainable, **kwargs))


def summary(cfg: WanTransformerConfig, grid: tuple[int, int, int], **kwargs: Any) -> dict[str, Any]:
    """Token count, forward FLOPs by group (:data:`GROUPS`), forward total and the three train-step figures."""
    terms = matmuls(cfg, grid, **kwargs)
    groups = {g: 0.0 for g in GROUPS}
    for t in terms:
        groups[t.group] += t.flops
    forward = sum(groups.values())
    return {"tokens": math.prod(grid), "grid": list(grid), "forward": forward, "forward_groups": groups,
            "train_adapter": train_flops(cfg, grid, trainable="adapter", **kwargs),
            "train_full": train_flops(cfg, grid, trainable="all", **kwargs), "train_full_3x": 3.0 * forward}


# -- independent count: the dot products of a traced program -------------------------------------------------------
def _sub_jaxprs(params: dict) -> list[jex_core.Jaxpr]:
    out = []
    for value in params.values():
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, jex_core.ClosedJaxpr):
                out.append(v.jaxpr)
            elif isinstance(v, jex_core.Jaxpr):
                out.append(v)
    return out


def _dot_flops(eqn) -> float:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = (tuple(v.aval.shape) for v in eqn.invars[:2])
    batch = math.prod(lhs[i] for i in lb)
    inner = math.prod(lhs[i] for i in lc)
    lfree = math.prod(s for i, s in enumerate(lhs) if i not in lc and i not in lb)
    rfree = math.prod(s for i, s in enumerate(rhs) if i not in rc and i not in rb)
    return 2.0 * batch * inner * lfree * rfree


def jaxpr_matmul_flops(jaxpr: jex_core.Jaxpr) -> float:
    """FLOPs of every ``dot_general`` in ``jaxpr``, sub-jaxprs included: scan bodies x length, the largest
    ``cond`` branch. Raises ValueError for a convolution or a ``while`` loop containing products (unknown trip
    count), which this counter cannot price."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
            continue
        if name == "conv_general_dilated":
            raise ValueError("convolutions are not counted by jaxpr_matmul_flops")
        subs = [jaxpr_matmul_flops(s) for s in _sub_jaxprs(eqn.params)]
        if name == "cond":
            total += max(subs, default=0.0)
        elif name == "while":
            if any(subs):
                raise ValueError("a while loop with matrix products has no static trip count to count")
        elif name == "scan":
            total += eqn.params["length"] * sum(subs)
        else:
            total += sum(subs)
    return total


def traced_matmul_flops(fn: Callable, *args: Any, **kwargs: Any) -> float:
    """Matmul FLOPs of ``fn(*args, **kwargs)`` from its jaxpr (abstract tracing: ``jax.ShapeDtypeStruct``
    arguments are fine, nothing is computed). For a gradient function this includes remat recomputation."""
    return jaxpr_matmul_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
