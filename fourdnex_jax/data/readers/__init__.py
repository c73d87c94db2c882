"""Annotation readers: one module per on-disk layout, each returning :class:`fourdnex_jax.data.clip6d.RawClip`.

:data:`LAYOUTS` maps a layout name to ``(list_clips(root) -> [path], read(path, captions=..., **opts) -> RawClip)``
for the preparation tool. Every reader raises :class:`fourdnex_jax.data.errors.BadExample` on unusable input.
"""

from fourdnex_jax.data.readers import dust3r, megasam, monst3r, synthetic
from fourdnex_jax.data.readers.dust3r import read_dust3r
from fourdnex_jax.data.readers.megasam import read_megasam
from fourdnex_jax.data.readers.monst3r import read_monst3r
from fourdnex_jax.data.readers.synthetic import read_synthetic

LAYOUTS = {
    "synthetic": (synthetic.list_clips, read_synthetic),
    "monst3r": (monst3r.list_clips, read_monst3r),
    "megasam": (megasam.list_clips, read_megasam),
    "dust3r": (dust3r.list_clips, read_dust3r),
}

__all__ = ["LAYOUTS", "read_dust3r", "read_megasam", "read_monst3r", "read_synthetic"]
