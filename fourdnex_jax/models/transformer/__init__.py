"""The Wan2.1 video DiT with the 4DNeX 6D adaptations."""

from fourdnex_jax.models.transformer.config import MODALITY_LAYOUTS, WanTransformerConfig
from fourdnex_jax.models.transformer.model import (
                                                   FROZEN,
                                                   TRAINABLE,
                                                   TRAINABLE_MODES,
                                                   DiTTokens,
                                                   DomainEmbedding,
                                                   WanTransformer3D,
)

__all__ = ["MODALITY_LAYOUTS", "WanTransformerConfig", "WanTransformer3D", "DiTTokens", "DomainEmbedding", "TRAINABLE",
           "FROZEN", "TRAINABLE_MODES"]
