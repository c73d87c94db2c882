"""fourdnex_jax: a JAX/Flax NNX implementation of 4DNeX (image -> 4D via a 6D-video Wan2.1-I2V DiT).

Conventions used everywhere in the package:
  * video tensors are NTHWC (batch, frames, height, width, channels);
  * token tensors are (B, L, D), tokens flattened in (t, h, w) order;
  * PyTorch layouts (NCTHW, (out, in) Linear weights) appear only at the loader boundary.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from fourdnex_jax import ImageTo4DPipeline` without making `import fourdnex_jax` (and so every `fourdnex
    # --help`) load JAX and the models
    if name == "ImageTo4DPipeline":
        from fourdnex_jax.pipelines.api import ImageTo4DPipeline

        return ImageTo4DPipeline
    if name == "example_image":  # the shipped example image's path (fourdnex_jax/utils/resources.py)
        from fourdnex_jax.utils.resources import example_image

        return example_image
    raise AttributeError(f"module 'fourdnex_jax' has no attribute {name!r}")
