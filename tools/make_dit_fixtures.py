"""Records the DiT parity fixtures used by the torch-free tests (tests/test_dit_fixtures.py).

    python tools/make_dit_fixtures.py --out tests/fixtures/wan_tiny

Needs the test requirements (torch, diffusers, peft). Writes, from a seeded tiny 4DNeX model built with the test
suite's reference (tests/wan_reference.py):
  transformer/                 diffusers ``save_pretrained`` folder of the base WanTransformer3DModel (safetensors)
  cases.npz                    domain embeddings, a LoRA state dict (peft keys, prefixed ``lora/``), inputs, and the
                               reference outputs: plain Wan forward, 4DNeX width forward, 4DNeX + LoRA forward;
                               RoPE tables of the width layout at head_dim 128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "wan_tiny"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    import wan_reference as ref
    from fourdnex_jax.io_utils import atomic_save_npz

    out = Path(args.out)
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


if __name__ == "__main__":
    main()
