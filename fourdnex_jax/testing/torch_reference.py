"""The PyTorch oracle of the DiT: diffusers' ``WanTransformer3DModel``, a peft LoRA, and the 4DNeX changes.

4DNeX changes one thing in the architecture (``core/finetune/models/wan_i2v/demb_samerope_trainer.py`` of the
4DNeX code): for the width-fused RGB | XYZ latent, RoPE is computed for the left (RGB) half of the width and
repeated on the right (XYZ) half, and two learnable domain embeddings (2, D) are added right after the patch
embedding (row 0 on the left half of the width, row 1 on the right half). :func:`add_fourdnex` applies both to any
diffusers Wan DiT in place; :class:`WanTransformer3DModelDembSameRope` is the same as a class (its state dict then
holds ``learnable_domain_embeddings``, as 4DNeX's does).

Arrays cross the boundary as numpy NTHWC (the JAX convention); the torch side is NCTHW. Tensor token inputs are
(B, L, D). Needs torch and diffusers (peft for :func:`from_jax` with a LoRA): tests importing this module are
oracle tests.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

#: diffusers kwargs of a tiny / small 4DNeX-shaped I2V DiT (36 input channels: 16 noisy + 4 mask + 16 condition).
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=36, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=24, added_kv_proj_dim=64, rope_max_seq_len=1024)
SMALL = dict(TINY, num_attention_heads=4, attention_head_dim=128, text_dim=256, ffn_dim=1536, num_layers=4,
             image_dim=128, added_kv_proj_dim=512)


class SameRope(WanRotaryPosEmbed):
    """RoPE of one modality's (t, h, w) grid, duplicated along width (4DNeX "samerope").

    ``forward`` takes the (B, C, F, H, W) DiT input whose width is the two modalities side by side and returns cos,
    sin tables (1, L, 1, head_dim) with L = f * h * w post-patchify tokens, token (f, h, w') using the width
    position w' mod (w / 2).
    """

    def forward(self, hidden_states: torch.Tensor):
        b, c, f, h, w = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        ppf, pph, ppw = f // p_t, h // p_h, (w // 2) // p_w
        split = [self.t_dim, self.h_dim, self.w_dim]
        outs = []
        for table in (self.freqs_cos, self.freqs_sin):
            tf, th, tw = table.split(split, dim=1)
            tf = tf[:ppf].view(ppf, 1, 1, -1).expand(ppf, pph, ppw, -1)
            th = th[:pph].view(1, pph, 1, -1).expand(ppf, pph, ppw, -1)
            tw = tw[:ppw].view(1, 1, ppw, -1).expand(ppf, pph, ppw, -1)
            tf, th, tw = (torch.cat([t, t], dim=2) for t in (tf, th, tw))  # width-duplicated
            outs.append(torch.cat([tf, th, tw], dim=-1).reshape(1, ppf * pph * 2 * ppw, 1, -1))
        return tuple(outs)


def add_fourdnex(model: WanTransformer3DModel, *, layout: str = "width", domain: np.ndarray | None = None,
                 domain_embeddings: bool = True) -> WanTransformer3DModel:
    """Applies the 4DNeX changes to a diffusers Wan DiT in place and returns it.

    ``layout`` 'width': :class:`SameRope`; 'none': diffusers' RoPE (one modality). With ``domain_embeddings`` the
    model gets a ``learnable_domain_embeddings`` (2, D) parameter (``domain`` values, or zeros) added after the
    patch embedding: row 0 on the left half of the width, row 1 on the right half.
    """
    if layout not in ("none", "width"):
        raise ValueError(f"the PyTorch reference supports the 'none' and 'width' layouts, not {layout!r}")
    c = model.config
    if layout == "width":
        model.rope = SameRope(c.attention_head_dim, c.patch_size, c.rope_max_seq_len)
    if domain_embeddings:
        inner = c.num_attention_heads * c.attention_head_dim
        init = torch.zeros(2, inner) if domain is None else torch.from_numpy(np.array(domain, np.float32))
        model.learnable_domain_embeddings = torch.nn.Parameter(init)

        def add_domain(module, inputs, out):  # out: (B, D, f, h, w)
            half = out.shape[-1] // 2
            emb = model.learnable_domain_embeddings.to(out.dtype)
            left = emb[0].view(1, -1, 1, 1, 1).expand(*out.shape[:-1], half)
            right = emb[1].view(1, -1, 1, 1, 1).expand(*out.shape[:-1], out.shape[-1] - half)
            return out + torch.cat([left, right], dim=-1)

        model.patch_embedding.register_forward_hook(add_domain)
    return model


class WanTransformer3DModelDembSameRope(WanTransformer3DModel):
    """diffusers Wan DiT + learnable domain embeddings + shared RoPE, as 4DNeX trains it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        add_fourdnex(self)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturbs every constant-initialised parameter (norm weights = 1, biases/LoRA-B/domain embeddings = 0) so no
    parameter can match by accident; random-initialised ones are left as torch made them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and torch.all(p == p.flatten()[0]):
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def build(config: dict, *, seed: int = 0, fourdnex: bool = False) -> WanTransformer3DModel:
    """A seeded, :func:`randomize_`'d diffusers DiT of ``config`` (diffusers kwargs, e.g. :data:`TINY`), eval mode."""
    torch.manual_seed(seed)
    cls = WanTransformer3DModelDembSameRope if fourdnex else WanTransformer3DModel
    return randomize_(cls(**config).eval(), seed)


def from_jax(cfg, frozen: Mapping[str, np.ndarray], trainable: Mapping[str, np.ndarray], *,
             device: str = "cpu") -> WanTransformer3DModel:
    """A diffusers DiT (+ peft LoRA + 4DNeX changes) holding exactly the given JAX weights, fp32, eval mode.

    ``cfg``: the :class:`~fourdnex_jax.models.transformer.config.WanTransformerConfig`; ``frozen`` / ``trainable``:
    flat ``{path: array}`` dicts of the JAX base and adapter (LoRA + domain embeddings), copied through the two-way
    weight tables. Only the adapter requires grad. Raises ValueError when a table leaves a tensor uncopied.
    """
    from fourdnex_jax.models.transformer import mapping

    base = mapping.base_mapping(cfg).to_torch(dict(frozen))
    lora = mapping.lora_mapping(cfg).to_torch(dict(trainable)) if cfg.lora_rank else {}
    domain = (mapping.domain_mapping().to_torch(dict(trainable))["learnable_domain_embeddings"]
              if cfg.domain_embeddings else None)
    kwargs = {k: v for k, v in cfg.to_diffusers_config().items() if not k.startswith("_")}
    model = WanTransformer3DModel(**kwargs)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in
                                                 base.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"weight copy incomplete: missing {missing[:8]}, unexpected {unexpected[:8]}")
    add_fourdnex(model, layout=cfg.modality_layout, domain=domain, domain_embeddings=domain is not None)
    if cfg.lora_rank:
        from peft import LoraConfig, set_peft_model_state_dict

        model.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights=True,
                                     target_modules=list(cfg.lora_targets)))
        res = set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in lora.items()})
        n_lora = sum(1 for n, _ in model.named_parameters() if ".lora_" in n)
        if getattr(res, "unexpected_keys", None) or n_lora != len(lora):
            raise ValueError(f"LoRA copy incomplete: {n_lora} LoRA tensors in the model, {len(lora)} copied, "
                             f"unexpected {getattr(res, 'unexpected_keys', [])[:8]}")
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name == "learnable_domain_embeddings")
    return model.to(device).eval()


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict as fp32 numpy copies (torch layout and key names)."""
    return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}


def inputs(config: dict, *, batch: int = 2, frames: int = 3, height: int = 4, width: int = 8, seed: int = 0,
           text_len: int = 512) -> dict[str, np.ndarray]:
    """Random DiT inputs in NTHWC / (B, L, D) numpy fp32 (diffusers needs exactly 512 text tokens for I2V)."""
    rng = np.random.default_rng(seed)
    out = {
        "latents": rng.standard_normal((batch, frames, height, width, config["in_channels"]), np.float32),
        "timestep": np.array([999.0, 17.25, 500.5, 3.0][:batch], np.float32),
        "text_embeds": rng.standard_normal((batch, text_len, config["text_dim"]), np.float32),
    }
    if config.get("image_dim"):
        out["image_embeds"] = rng.standard_normal((batch, 257, config["image_dim"]), np.float32)
    return out


def to_ncthw(x: np.ndarray) -> torch.Tensor:
    """NTHWC numpy -> NCTHW torch (a contiguous copy)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def from_ncthw(x: torch.Tensor) -> np.ndarray:
    """NCTHW torch (any device, dtype) -> NTHWC fp32 numpy."""
    return np.moveaxis(x.detach().float().cpu().numpy(), 1, -1)


def call(model: WanTransformer3DModel, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
         image: torch.Tensor | None = None) -> torch.Tensor:
    """One DiT call on torch tensors: latents (B, C, T, H, W), timestep (B,), text (B, Lt, text_dim), image
    (B, Li, image_dim) or None; returns the velocity (B, C_out, T, H, W)."""
    kwargs = {} if image is None else {"encoder_hidden_states_image": image}
    return model(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False,
                 **kwargs)[0]


@torch.no_grad()
def forward(model: WanTransformer3DModel, batch: dict[str, np.ndarray], dtype=torch.float32) -> np.ndarray:
    """Runs the torch model on NTHWC numpy inputs (keys of :func:`inputs`); returns the NTHWC fp32 output."""
    image = torch.from_numpy(batch["image_embeds"]).to(dtype) if "image_embeds" in batch else None
    out = call(model, to_ncthw(batch["latents"]).to(dtype), torch.from_numpy(batch["timestep"]),
               torch.from_numpy(batch["text_embeds"]).to(dtype), image)
    return from_ncthw(out)
