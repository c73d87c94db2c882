"""CLIP ViT-H/14 image encoder of Wan2.1-I2V (frozen): config, vision tower, preprocessing, mapping and loader."""

from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.image_encoder.mapping import clip_vision_mapping, load_clip_vision_from_hf
from fourdnex_jax.models.image_encoder.model import CLIPVisionTower
from fourdnex_jax.models.image_encoder.preprocess import CLIPPreprocessConfig, preprocess_images

__all__ = ["CLIPPreprocessConfig", "CLIPVisionConfig", "CLIPVisionTower", "clip_vision_mapping",
           "load_clip_vision_from_hf", "preprocess_images"]
