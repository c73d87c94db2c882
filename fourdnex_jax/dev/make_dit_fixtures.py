"""Records the DiT parity fixtures used by the torch-free tests (tests/models/test_dit_fixtures.py).

    python -m fourdnex_jax.dev make-dit-fixtures --out tests/fixtures/wan_tiny

Needs the test extra (torch, diffusers, peft: ``pip install -r requirements-test.txt``). Writes, from a seeded tiny
4DNeX model built with the test suite's reference (fourdnex_jax/testing/torch_reference.py):
  transformer/                 diffusers ``save_pretrained`` folder of the base WanTransformer3DModel (safetensors)
  cases.npz                    domain embeddings, a LoRA state dict (peft keys, prefixed ``lora/``), inputs, and the
                               reference outputs: plain Wan forward, 4DNeX width forward, 4DNeX + LoRA forward;
                               RoPE tables of the width layout at head_dim 128
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import flags

_OUT = flags.DEFINE_string("out", None, "Fixture folder to write (tests/fixtures/wan_tiny in the repository).",
                           required=True)


def main(argv) -> int:
    del argv
    try:
        import torch
        from diffusers import WanTransformer3DModel
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict
    except ImportError as e:
        raise FileNotFoundError(f"{e}: make-dit-fixtures needs the test extra (pip install -r "
                                "requirements-test.txt -c constraints.txt)") from None

    from fourdnex_jax.media.io import atomic_save_npz
    from fourdnex_jax.testing import torch_reference as ref

    out = Path(_OUT.value)
    model = ref.build(ref.TINY, seed=21, fourdnex=True)
    sd = model.state_dict()
    demb = sd.pop("learnable_domain_embeddings").numpy().copy()
    base = WanTransformer3DModel(**ref.TINY).eval()
    base.load_state_dict(sd)
    base.save_pretrained(out / "transformer", safe_serialization=True)

    batch = ref.inputs(ref.TINY, width=8, seed=21)
    cases = {f"input/{k}": v for k, v in batch.items()}
    cases["domain_embeddings"] = demb
    cases["output/plain"] = ref.forward(base, batch)
    cases["output/fourdnex"] = ref.forward(model, batch)
    model.add_adapter(LoraConfig(r=4, lora_alpha=2, init_lora_weights=True,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    for k, v in get_peft_model_state_dict(model).items():
        cases[f"lora/{k}"] = v.numpy().copy()
    cases["output/fourdnex_lora"] = ref.forward(model, batch)
    cos, sin = ref.SameRope(128, (1, 2, 2), 1024)(torch.zeros(1, 1, 5, 6, 28))
    cases["rope/grid"] = np.array([5, 3, 14])
    cases["rope/cos"] = cos[0, :, 0, 0::2].numpy()
    cases["rope/sin"] = sin[0, :, 0, 0::2].numpy()
    atomic_save_npz(out / "cases.npz", **cases)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"summary: wrote {len(cases)} arrays + transformer/ to {out} ({size / 1e6:.2f} MB)")
    return 0
