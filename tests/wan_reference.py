"""The PyTorch reference for the DiT parity tests: tiny diffusers models and the 4DNeX subclass.

``WanTransformer3DModelDembSameRope`` reproduces the one architectural change of the 4DNeX code
(`core/finetune/models/wan_i2v/demb_samerope_trainer.py`, see ../shared/reference/4dnex-reference.md §2.7, §5):
RoPE computed for half the latent width and concatenated with itself along width, and two learnable domain
embeddings added right after the patch embedding (row 0 on the left half of the width, row 1 on the right half).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=36, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=24, added_kv_proj_dim=64, rope_max_seq_len=1024)
SMALL = dict(TINY, num_attention_heads=4, attention_head_dim=128, text_dim=256, ffn_dim=1536, num_layers=4,
             image_dim=128, added_kv_proj_dim=512)


class SameRope(WanRotaryPosEmbed):
    """RoPE of one modality's (t, h, w) grid, duplicated along width (4DNeX "samerope")."""

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


class WanTransformer3DModelDembSameRope(WanTransformer3DModel):
    """diffusers Wan DiT + learnable domain embeddings + shared RoPE, as 4DNeX trains it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        inner = self.config.num_attention_heads * self.config.attention_head_dim
        self.learnable_domain_embeddings = torch.nn.Parameter(torch.zeros(2, inner))
        self.rope = SameRope(self.config.attention_head_dim, self.config.patch_size, self.config.rope_max_seq_len)
        self.patch_embedding.register_forward_hook(self._add_domain_embeddings)

    def _add_domain_embeddings(self, module, inputs, out):  # out: (B, D, f, h, w)
        half = out.shape[-1] // 2
        emb = self.learnable_domain_embeddings.to(out.dtype)
        left = emb[0].view(1, -1, 1, 1, 1).expand(*out.shape[:-1], half)
        right = emb[1].view(1, -1, 1, 1, 1).expand(*out.shape[:-1], out.shape[-1] - half)
        return out + torch.cat([left, right], dim=-1)


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
    torch.manual_seed(seed)
    cls = WanTransformer3DModelDembSameRope if fourdnex else WanTransformer3DModel
    return randomize_(cls(**config).eval(), seed)


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
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
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))


def from_ncthw(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().numpy().transpose(0, 2, 3, 4, 1)


@torch.no_grad()
def forward(model: WanTransformer3DModel, batch: dict[str, np.ndarray], dtype=torch.float32) -> np.ndarray:
    """Runs the torch model on NTHWC numpy inputs; returns the NTHWC fp32 output."""
    kwargs = {}
    if "image_embeds" in batch:
        kwargs["encoder_hidden_states_image"] = torch.from_numpy(batch["image_embeds"]).to(dtype)
    out = model(hidden_states=to_ncthw(batch["latents"]).to(dtype), timestep=torch.from_numpy(batch["timestep"]),
                encoder_hidden_states=torch.from_numpy(batch["text_embeds"]).to(dtype), return_dict=False,
                **kwargs)[0]
    return from_ncthw(out)
