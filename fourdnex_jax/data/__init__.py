"""The 6D data layer: annotation readers -> 6D clips (RGB + normalised first-camera XYZ) -> TFDS array_record
datasets -> the encode step (VAE/UMT5/CLIP latents) -> grain loading, plus the synthetic 4D scene generator.

Modules (one job each): ``readers/`` (on-disk annotation layouts), ``annotations`` (annotation -> clip),
``temporal`` (frame selection), ``clip6d`` (the clip contracts), ``captions``, ``errors`` (bad-data accounting),
``staging`` + ``prepare`` (resumable preparation), ``tfds_builders`` (storage), ``synthetic`` (procedural scenes +
ray caster), ``encode`` (latent encoding step), ``schema`` (the encoded6d keys and shapes), ``loader`` (grain).
The recipe values used here (prompt suffix, XYZ latent normalisation, condition video) are
:mod:`fourdnex_jax.recipe`'s.
"""
