"""Weight tables between diffusers/peft/4DNeX PyTorch checkpoints and :class:`WanTransformer3D`.

Three tables, all built from the config so they cover exactly the parameters the model has:
  * :func:`base_mapping`: diffusers ``WanTransformer3DModel`` state dict <-> the frozen base (``FROZEN`` params).
    Ignore list (documented): ``blocks.N.attn2.norm_added_q.weight`` — present in checkpoints converted from the
    original Wan release, unused by the architecture (diffusers lists it in ``_keys_to_ignore_on_load_unexpected``).
  * :func:`lora_mapping`: peft/diffusers LoRA keys (``blocks.N.attn1.to_q.lora_A.weight`` (r, in),
    ``...lora_B.weight`` (out, r)) <-> ``lora_a`` (in, r) / ``lora_b`` (r, out). Files saved by
    ``save_lora_weights`` prefix keys with ``transformer.``: see :func:`strip_prefix`.
  * :func:`domain_mapping`: 4DNeX's ``learnable_domain_embeddings`` (2, dim) <-> ``domain_embeddings``.
"""

from __future__ import annotations

from fourdnex_jax.models.mapping import Rule, WeightMapping
from fourdnex_jax.models.transformer.block import BLOCK_LINEARS, lora_targeted
from fourdnex_jax.models.transformer.config import WanTransformerConfig

LINEAR = "o i -> i o"
CONV3D = "o i t h w -> t h w i o"
TABLE = "1 s d -> s d"  # scale_shift_table: torch (1, n, D) -> (n, D)

# diffusers module name inside a block -> our module path (the two differ only for to_out.0 and the FFN).
_BLOCK_MODULE_PATHS = {name: name.replace("to_out.0", "to_out").replace("ffn.net.0.proj", "ffn.proj_in")
                       .replace("ffn.net.2", "ffn.proj_out").replace(".", "/") for name in BLOCK_LINEARS}

BASE_IGNORE = (r"^blocks\.\d+\.attn2\.norm_added_q\.weight$",)


def _linear(torch_name: str, jax_path: str, stacked: bool = False) -> list[Rule]:
    prefix = "blocks.{i}." if stacked else ""
    jprefix = "blocks/" if stacked else ""
    return [Rule(f"{prefix}{torch_name}.weight", f"{jprefix}{jax_path}/kernel", LINEAR),
            Rule(f"{prefix}{torch_name}.bias", f"{jprefix}{jax_path}/bias")]


def _norm(torch_name: str, jax_path: str, stacked: bool = False, bias: bool = False) -> list[Rule]:
    prefix = "blocks.{i}." if stacked else ""
    jprefix = "blocks/" if stacked else ""
    rules = [Rule(f"{prefix}{torch_name}.weight", f"{jprefix}{jax_path}/scale")]
    if bias:
        rules.append(Rule(f"{prefix}{torch_name}.bias", f"{jprefix}{jax_path}/bias"))
    return rules


def base_mapping(cfg: WanTransformerConfig) -> WeightMapping:
    rules = [Rule("patch_embedding.weight", "patch_embedding/kernel", CONV3D),
             Rule("patch_embedding.bias", "patch_embedding/bias")]
    ce = "condition_embedder"
    for name in ("time_embedder.linear_1", "time_embedder.linear_2", "time_proj", "text_embedder.linear_1",
                 "text_embedder.linear_2"):
        rules += _linear(f"{ce}.{name}", f"{ce}/{name.replace('.', '/')}")
    if cfg.image_dim is not None:
        ie = f"{ce}.image_embedder"
        rules += _norm(f"{ie}.norm1", f"{ce}/image_embedder/norm1", bias=True)
        rules += _linear(f"{ie}.ff.net.0.proj", f"{ce}/image_embedder/ff/proj_in")
        rules += _linear(f"{ie}.ff.net.2", f"{ce}/image_embedder/ff/proj_out")
        rules += _norm(f"{ie}.norm2", f"{ce}/image_embedder/norm2", bias=True)
    for name, path in _BLOCK_MODULE_PATHS.items():
        if name.startswith("attn2.add_") and cfg.added_kv_proj_dim is None:
            continue
        rules += _linear(name, path, stacked=True)
    for attn in ("attn1", "attn2"):
        rules += _norm(f"{attn}.norm_q", f"{attn}/norm_q", stacked=True)
        rules += _norm(f"{attn}.norm_k", f"{attn}/norm_k", stacked=True)
    if cfg.added_kv_proj_dim is not None:
        rules += _norm("attn2.norm_added_k", "attn2/norm_added_k", stacked=True)
    if cfg.cross_attn_norm:
        rules += _norm("norm2", "norm2", stacked=True, bias=True)
    rules.append(Rule("blocks.{i}.scale_shift_table", "blocks/scale_shift_table", TABLE))
    rules += _linear("proj_out", "proj_out")
    rules.append(Rule("scale_shift_table", "scale_shift_table", TABLE))
    return WeightMapping(rules, num_layers=cfg.num_layers, ignore=BASE_IGNORE)


def lora_mapping(cfg: WanTransformerConfig) -> WeightMapping:
    """peft LoRA keys (no ``transformer.`` prefix) of the modules ``cfg.lora_targets`` selects."""
    rules = []
    for name, path in _BLOCK_MODULE_PATHS.items():
        if not lora_targeted(cfg, name) or (name.startswith("attn2.add_") and cfg.added_kv_proj_dim is None):
            continue
        rules.append(Rule(f"blocks.{{i}}.{name}.lora_A.weight", f"blocks/{path}/lora_a", "r i -> i r"))
        rules.append(Rule(f"blocks.{{i}}.{name}.lora_B.weight", f"blocks/{path}/lora_b", "o r -> r o"))
    return WeightMapping(rules, num_layers=cfg.num_layers)


def domain_mapping() -> WeightMapping:
    return WeightMapping([Rule("learnable_domain_embeddings", "domain_embeddings")])


def strip_prefix(keys_to_arrays: dict, prefix: str = "transformer.") -> dict:
    """Removes diffusers' component prefix from LoRA keys when every key has it (files may have it or not)."""
    if keys_to_arrays and all(k.startswith(prefix) for k in keys_to_arrays):
        return {k[len(prefix):]: v for k, v in keys_to_arrays.items()}
    return dict(keys_to_arrays)
