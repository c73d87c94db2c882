"""CLIP ViT-H/14 image encoder of Wan2.1-I2V (frozen): config, vision tower, preprocessing and weight mapping."""

from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.image_encoder.mapping import clip_vision_mapping
from fourdnex_jax.models.image_encoder.model import CLIPVisionTower
from fourdnex_jax.models.image_encoder.preprocess import CLIPPreprocessConfig, preprocess_images

__all__ = ["CLIPPreprocessConfig", "CLIPVisionConfig", "CLIPVisionTower", "clip_vision_mapping",
           "preprocess_images"]
