"""The ``encoded6d`` training example: the single definition of its keys, shapes and dtypes.

One example per clip (T' latent frames, h x w latent pixels per modality, z latent channels), as written by the encode
step (:mod:`fourdnex_jax.data.encode`), stored by :class:`fourdnex_jax.data.tfds_builders.Encoded6D` and batched by
:mod:`fourdnex_jax.data.loader` for the train step:

================  ======================  ==========================================================================
key               shape                   meaning
================  ======================  ==========================================================================
rgb_latent        (T', h, w, z)           VAE-normalised posterior mean of the RGB clip
rgb_latent_std    (T', h, w, z)           its standard deviation (a training sample is ``latent + std * eps``)
xyz_latent        (T', h, w, z)           the same for the XYZ clip, also ``(z - mu) / sigma`` (recipe.XYZ_LATENT_*)
xyz_latent_std    (T', h, w, z)           its standard deviation (divided by sigma)
cond_latent       (T', h, 2w, z)          VAE mode of [first RGB frame | XYZ init] + zero frames (VAE norm only)
text_embeds       (L, text_dim)           UMT5 prompt embedding cut at the prompt's L tokens (stored); zero-padded
                                          to ``text_len`` when loaded (Wan's fixed 512-token embedding)
text_len          ()                      L
image_embeds      (image_tokens, dim)     CLIP ``hidden_states[-2]`` of the first frame
prompt, clip_id   text
================  ======================  ==========================================================================
"""

from __future__ import annotations

import dataclasses

#: The latent tensors of one example (all (T', h, w, z) except ``cond_latent``, (T', h, 2w, z)).
LATENT_KEYS = ("rgb_latent", "rgb_latent_std", "xyz_latent", "xyz_latent_std", "cond_latent")
#: What the train step consumes, in this order.
BATCH_KEYS = (*LATENT_KEYS, "text_embeds", "image_embeds")
#: Every key of a stored example: the arrays, then ``text_len`` and the text fields.
EXAMPLE_KEYS = (*BATCH_KEYS, "text_len", "prompt", "clip_id")
TEXT_KEYS = ("prompt", "clip_id")


@dataclasses.dataclass(frozen=True)
class EncodedSpec:
    """Sizes of an ``encoded6d`` dataset (what its TFDS config name records)."""

    latent_frames: int
    latent_height: int
    latent_width: int
    z_dim: int = 16
    text_dim: int = 4096
    image_tokens: int = 257
    image_dim: int = 1280
    latent_dtype: str = "float32"
    embed_dtype: str = "float16"

    def shapes(self, text_len: int | None = None) -> dict[str, tuple]:
        """Per-example array shapes; ``text_embeds`` is (None, text_dim) as stored, (text_len, text_dim) if given."""
        t, h, w, z = self.latent_frames, self.latent_height, self.latent_width, self.z_dim
        lat = (t, h, w, z)
        return {"rgb_latent": lat, "rgb_latent_std": lat, "xyz_latent": lat, "xyz_latent_std": lat,
                "cond_latent": (t, h, 2 * w, z), "text_embeds": (text_len, self.text_dim),
                "image_embeds": (self.image_tokens, self.image_dim), "text_len": ()}

    def dtypes(self) -> dict[str, str]:
        """Stored numpy dtype name of each array key."""
        out = {k: self.latent_dtype for k in LATENT_KEYS}
        out.update(text_embeds=self.embed_dtype, image_embeds=self.embed_dtype, text_len="int32")
        return out


def check_example(example: dict) -> None:
    """Raises ValueError unless ``example`` has exactly :data:`EXAMPLE_KEYS`."""
    if set(example) != set(EXAMPLE_KEYS):
        raise ValueError(f"encoded6d example keys differ: missing {sorted(set(EXAMPLE_KEYS) - set(example))}, "
                         f"unexpected {sorted(set(example) - set(EXAMPLE_KEYS))}")
