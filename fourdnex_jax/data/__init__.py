"""The 6D data layer: annotation readers -> 6D clips (RGB + normalised first-camera XYZ) -> TFDS array_record
datasets -> grain pipelines, plus the synthetic 4D scene generator and the encode step (VAE/UMT5/CLIP latents).

Modules (one job each): ``geometry`` (cameras, back-projection), ``normalize`` (XYZ normalisation contract),
``temporal`` (frame selection), ``resize`` (cover + crop), ``clip6d`` (data contracts), ``convert`` (annotation ->
clip), ``captions``, ``media`` (file decoding), ``errors`` (bad-data accounting), ``readers/`` (layouts),
``synthetic`` (procedural scenes + ray caster), ``tfds_builders`` (storage), ``prepare`` (resumable preparation),
``pipeline`` (grain loading), ``encode`` (latent encoding step).
"""
