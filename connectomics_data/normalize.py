"""Image intensity normalisation, PyTC v1 semantics, computed once per volume.

PyTC feeds ``(x / 255 - MEAN) / STD`` to the network for uint8 images (``MATCH_ACT`` 'sigmoid'
keeps ``x / 255`` in [0, 1], 'tanh' maps it to ``2 x / 255 - 1`` and both ignore MEAN/STD).
Non-uint8 images are first mapped to [0, 1] by a ``(low, high)`` range computed **once per
volume** (not per sample, so a sample's brightness does not depend on its neighbours), by
streaming over the volume in z-slabs: peak memory is one slab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Box

MATCH_ACTS = ("none", "sigmoid", "tanh")


def volume_range(volume, slab: int = 16) -> tuple[float, float]:
    """``(min, max)`` of a :class:`~connectomics_data.io.Volume`, read in z-slabs of ``slab``."""
    shape = volume.spatial_shape
    lo, hi = np.inf, -np.inf
    for z0 in range(0, shape[0], slab):
        box = Box([z0, *([0] * (len(shape) - 1))], [min(z0 + slab, shape[0]), *shape[1:]])
        block = volume.read(box)
        if block.size:
            lo = min(lo, float(block.min()))
            hi = max(hi, float(block.max()))
    if not np.isfinite(lo):
        raise ValueError(f"{volume.path}: cannot compute the intensity range of an empty volume")
    return lo, hi


@dataclass(frozen=True)
class ImageNormalizer:
    """Map raw image crops (any dtype) to float32 network input.

    Args:
        mean, std: ``DATASET.MEAN`` / ``DATASET.STD``.
        match_act: ``DATASET.MATCH_ACT``: 'none' | 'sigmoid' | 'tanh'.
        value_range: ``(low, high)`` of the raw values mapped to [0, 1]; ``None`` means the
            uint8 range ``(0, 255)``.
    """

    mean: float = 0.5
    std: float = 0.5
    match_act: str = "none"
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.match_act not in MATCH_ACTS:
            raise ValueError(f"DATASET.MATCH_ACT must be one of {MATCH_ACTS}, got {self.match_act!r}")
        if self.match_act == "none" and self.std == 0:
            raise ValueError("DATASET.STD must not be 0")

    def unit_scale(self) -> tuple[float, float]:
        """``(offset, scale)`` so that ``x * scale + offset`` lies in [0, 1]."""
        lo, hi = self.value_range if self.value_range is not None else (0.0, 255.0)
        span = hi - lo if hi > lo else 1.0
        return -lo / span, 1.0 / span

    def affine(self) -> tuple[float, float]:
        """``(offset, scale)`` of the whole map ``raw -> network input`` (one fused multiply-add)."""
        off, scale = self.unit_scale()
        if self.match_act == "sigmoid":
            return off, scale
        if self.match_act == "tanh":
            return 2 * off - 1, 2 * scale
        return (off - self.mean) / self.std, scale / self.std

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Raw crop of any shape and dtype -> float32 of the same shape."""
        off, scale = self.affine()
        out = np.asarray(raw, dtype=np.float32) * np.float32(scale)
        out += np.float32(off)
        return out

    def unit_affine(self) -> tuple[float, float]:
        """``(offset, scale)`` of the map from [0, 1] images to network input."""
        if self.match_act == "sigmoid":
            return 0.0, 1.0
        if self.match_act == "tanh":
            return -1.0, 2.0
        return -self.mean / self.std, 1.0 / self.std

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Network input from a float image already in [0, 1] (e.g. after augmentation)."""
        if self.match_act == "sigmoid":
            return np.asarray(unit, dtype=np.float32)
        if self.match_act == "tanh":
            return np.asarray(unit, dtype=np.float32) * 2 - 1
        return (np.asarray(unit, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """Raw values -> float32 in [0, 1] (the augmentor's working range)."""
        off, scale = self.unit_scale()
        out = np.asarray(raw, dtype=np.float32) * np.float32(scale)
        out += np.float32(off)
        return out


def normalizer_for(volume, mean: float, std: float, match_act: str, normalize_range: bool = True) -> ImageNormalizer:
    """The normaliser of one volume: uint8 uses 0..255; other dtypes their (streamed) range.

    With ``normalize_range=False`` a non-uint8 volume must already be in [0, 1] (float) and is
    used as is.
    """
    dtype = np.dtype(volume.dtype)
    if dtype == np.uint8:
        value_range = None
    elif normalize_range:
        value_range = volume_range(volume)
    else:
        value_range = (0.0, 1.0)
    return ImageNormalizer(mean=mean, std=std, match_act=match_act, value_range=value_range)
