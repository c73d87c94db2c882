"""Configuration of the Wan2.1 video VAE (diffusers ``AutoencoderKLWan``) and the block plan derived from it.

:class:`WanVAEConfig` mirrors the keyword arguments of ``AutoencoderKLWan.__init__`` one to one, so a diffusers
``config.json`` converts without renaming. The block plan (:func:`encoder_plan`, :func:`decoder_plan`) is the single
description of the layer sequence; both the NNX model and the weight-mapping table are built from it.

Only the Wan2.1 architecture is ported: ``is_residual=False`` and ``patch_size=None``. The Wan2.2 VAE
(``is_residual=True``, patchified input, ``AvgDown3D``/``DupUp3D`` shortcuts) is rejected with a clear error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

# Keys diffusers writes into config.json / ``model.config`` that carry no architecture information.
DIFFUSERS_BOOKKEEPING_KEYS = frozenset({"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"})

_WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
_WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
    """Architecture of ``AutoencoderKLWan`` (field names and defaults are diffusers' constructor arguments).

    ``dropout`` is recorded for fidelity only: the port is inference-only (torch ``eval()`` semantics), so dropout is
    the identity. ``temperal_downsample`` keeps diffusers' spelling. Sequences are stored as tuples (hashable).
    """

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = _WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = _WAN21_LATENTS_STD
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int | None = 4
    scale_factor_spatial: int | None = 8

    def __post_init__(self):
        # Normalise lists from JSON to tuples so the config stays hashable (usable as a static jit argument).
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.is_residual or self.patch_size is not None:
            raise ValueError("only the Wan2.1 VAE is ported (is_residual=False, patch_size=None); got "
                             f"is_residual={self.is_residual}, patch_size={self.patch_size}")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"temperal_downsample needs {len(self.dim_mult) - 1} entries (one per downsampling "
                             f"stage), got {self.temperal_downsample}")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(f"latents_mean/latents_std need z_dim={self.z_dim} values, got "
                             f"{len(self.latents_mean)}/{len(self.latents_std)}")

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any]) -> WanVAEConfig:
        """Builds the config from a diffusers ``config.json`` dict. Unknown keys raise ``ValueError``; only the
        bookkeeping keys in :data:`DIFFUSERS_BOOKKEEPING_KEYS` are skipped."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if k not in fields and k not in DIFFUSERS_BOOKKEEPING_KEYS)
        if unknown:
            raise ValueError(f"unknown AutoencoderKLWan config key(s): {unknown}")
        return cls(**{k: v for k, v in config.items() if k in fields})

    def to_diffusers_config(self) -> dict[str, Any]:
        """The constructor kwargs of ``AutoencoderKLWan`` (lists, as diffusers stores them)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def wan21(cls) -> WanVAEConfig:
        """The real Wan2.1 VAE (diffusers defaults; ~127M parameters)."""
        return cls()

    @classmethod
    def tiny(cls, **overrides) -> WanVAEConfig:
        """CPU-test sized Wan2.1-shaped VAE (same block structure, base_dim 16, one residual block per stage)."""
        return dataclasses.replace(cls(base_dim=16, num_res_blocks=1), **overrides)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def dec_base_dim(self) -> int:
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def temperal_upsample(self) -> tuple[bool, ...]:
        return self.temperal_downsample[::-1]

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first (4 for Wan2.1)."""
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)


class LayerSpec(NamedTuple):
    """One entry of the encoder's ``down_blocks`` list: kind in {'residual', 'attention', 'downsample2d',
    'downsample3d'}."""

    kind: str
    in_dim: int
    out_dim: int


class UpBlockSpec(NamedTuple):
    """One decoder up block: ``num_resnets`` residual blocks then an optional resampler
    (``upsample`` in {None, 'upsample2d', 'upsample3d'}) that halves the channels."""

    in_dim: int
    out_dim: int
    num_resnets: int
    upsample: str | None


def encoder_plan(cfg: WanVAEConfig) -> tuple[list[LayerSpec], int]:
    """The encoder's ``down_blocks`` in diffusers order, and the channel width of its mid block."""
    dims = [cfg.base_dim * u for u in (1, *cfg.dim_mult)]
    layers: list[LayerSpec] = []
    scale = 1.0
    last = len(cfg.dim_mult) - 1
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(cfg.num_res_blocks):
            layers.append(LayerSpec("residual", in_dim, out_dim))
            if scale in cfg.attn_scales:
                layers.append(LayerSpec("attention", out_dim, out_dim))
            in_dim = out_dim
        if i != last:
            kind = "downsample3d" if cfg.temperal_downsample[i] else "downsample2d"
            layers.append(LayerSpec(kind, out_dim, out_dim))
            scale /= 2.0
    return layers, dims[-1]


def decoder_plan(cfg: WanVAEConfig) -> tuple[int, list[UpBlockSpec]]:
    """The decoder's mid-block width and its up blocks in diffusers order (Wan2.1: every block after the first
    receives half the previous width, because each resampler halves the channels)."""
    base = cfg.dec_base_dim
    dims = [base * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
    blocks: list[UpBlockSpec] = []
    last = len(cfg.dim_mult) - 1
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            in_dim //= 2
        mode = None
        if i != last:
            mode = "upsample3d" if cfg.temperal_upsample[i] else "upsample2d"
        blocks.append(UpBlockSpec(in_dim, out_dim, cfg.num_res_blocks + 1, mode))
    return dims[0], blocks


def decoder_halo(cfg: WanVAEConfig) -> int:
    """Latent pixels on each side that the decoder's pixel stage (up blocks + ``conv_out``, after the mid block) sees
    around an output pixel: the sum of its 3x3 convolutions' radii, each in latent pixels at its resolution (two
    per residual block, one per resampler after its nearest x2, one for ``conv_out``), rounded up. Wan2.1: 6 + 1/2
    + 3 + 1/4 + 3/2 + 1/8 + 3/4 + 1/8 = 12.25 -> 13. A spatial tile whose window reaches this far past its core
    (or to the map's edge) decodes its core exactly as the whole map does."""
    _, plan = decoder_plan(cfg)
    radius, scale = 0.0, 1
    for spec in plan:
        radius += 2 * spec.num_resnets / scale
        if spec.upsample:
            scale *= 2
            radius += 1 / scale
    return math.ceil(radius + 1 / scale)
