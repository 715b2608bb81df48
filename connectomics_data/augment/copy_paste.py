"""Copy-paste: paste a flipped / rotated copy of the labelled objects where they do not overlap.

PyTC's ``CopyPasteAugmentor`` returned an array instead of the sample, so enabling it broke
``Compose``; here it is an ordinary step of the chain that returns the sample and updates the
label too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .base import ChainContext, Transform

ANGLES_DEG = tuple(range(0, 360, 30))


@dataclass(frozen=True)
class CopyPasteParams:
    """Copy-paste has no random parameters (the placement is chosen from the label)."""


def _rotation_gather(shape: tuple[int, int], angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat source index ``(Y, X)`` and validity mask of an in-plane nearest rotation about the
    centre (pixels that come from outside the crop are invalid)."""
    Y, X = shape
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    py = np.arange(Y, dtype=np.float64)[:, None] - (Y - 1) / 2
    px = np.arange(X, dtype=np.float64)[None, :] - (X - 1) / 2
    qy = np.floor(c * py - s * px + (Y - 1) / 2 + 0.5).astype(np.int64)
    qx = np.floor(s * py + c * px + (X - 1) / 2 + 0.5).astype(np.int64)
    valid = (qy >= 0) & (qy < Y) & (qx >= 0) & (qx < X)
    idx = np.clip(qy, 0, Y - 1) * X + np.clip(qx, 0, X - 1)
    return idx, valid


def _gather(volume: np.ndarray, idx: np.ndarray, valid: np.ndarray, zflip: bool) -> np.ndarray:
    """Rotate every section of ``(..., Z, Y, X)`` with a precomputed gather; invalid -> 0."""
    v = volume[..., ::-1, :, :] if zflip else volume
    flat = v.reshape(v.shape[:-2] + (-1,))
    out = np.take(flat, idx, axis=-1)
    out[..., ~valid] = 0
    return out


class CopyPaste(Transform):
    """Paste the image content under the label's foreground, z-flipped or not and rotated by a
    multiple of 30 degrees, where it overlaps the existing foreground least (ties among
    non-overlapping placements: the one whose centroid is closest to the original's).

    Acts when the foreground fraction is at most ``aug_thres`` (and non-zero). Pasted voxels are
    those of the moved object outside a 3-voxel dilation of the existing foreground. The image
    and 'img' targets receive the moved content; the label key receives the moved label values
    (binary labels stay binary; an instance label's pasted copy keeps its source ids), other
    'mask' targets are unchanged. Nearest-neighbour rotation for all arrays. Deterministic given
    the label (as PyTC); cost about 24 gathers of the crop.
    """

    name = "COPYPASTE"

    def __init__(
        self,
        aug_thres: float = 0.7,
        p: float = 0.8,
        skip: Iterable[str] = (),
        label_key: str = "label",
        dilation: int = 3,
    ):
        super().__init__(p, skip)
        if not 0 <= aug_thres <= 1:
            raise ConfigError(f"COPYPASTE.AUG_THRES must be in [0, 1], got {aug_thres}")
        self.aug_thres = float(aug_thres)
        self.label_key = label_key
        self.dilation = int(dilation)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> CopyPasteParams:
        return CopyPasteParams()

    def choose(self, fg: np.ndarray) -> tuple[bool, float]:
        """The ``(zflip, angle_deg)`` placement for foreground ``fg`` ``(Z, Y, X)`` bool."""
        shape = fg.shape[-2:]
        orig_c = np.argwhere(fg).mean(axis=0) / np.array(fg.shape)
        best = None  # (overlap, distance, zflip, angle)
        for zflip in (False, True):
            for angle in ANGLES_DEG:
                if not zflip and angle == 0:
                    continue
                idx, valid = _rotation_gather(shape, angle)
                moved = _gather(fg, idx, valid, zflip)
                if not moved.any():
                    continue
                overlap = int(np.count_nonzero(moved & fg))
                dist = 0.0
                if overlap == 0:
                    c = np.argwhere(moved).mean(axis=0) / np.array(fg.shape)
                    dist = float(((c - orig_c) ** 2).mean())
                key = (overlap, dist)
                if best is None or key < best[:2]:
                    best = (overlap, dist, zflip, angle)
        if best is None:
            return False, 0.0
        return best[2], float(best[3])

    def apply_sample(
        self, outputs: dict[str, np.ndarray], kinds: Mapping[str, str], params: CopyPasteParams
    ) -> None:
        """Modify ``outputs`` (the warped crop of every key) in place."""
        label = outputs.get(self.label_key)
        if label is None or not self.applies_to(self.label_key):
            return
        lab3 = label if label.ndim == 3 else label[0]
        fg = lab3 != 0
        frac = fg.mean()
        if frac == 0 or frac > self.aug_thres:
            return
        zflip, angle = self.choose(fg)
        idx, valid = _rotation_gather(fg.shape[-2:], angle)
        moved = _gather(fg, idx, valid, zflip)
        if self.dilation > 0:
            grown = ndimage.binary_dilation(
                fg, structure=np.ones((3, 3, 3), bool), iterations=self.dilation
            )
        else:
            grown = fg
        paste = moved & ~grown
        if not paste.any():
            return
        for key, arr in outputs.items():
            if not self.applies_to(key):
                continue
            if kinds.get(key) == "img" or key == self.label_key:
                moved_arr = _gather(arr, idx, valid, zflip)
                np.copyto(arr, moved_arr, where=np.broadcast_to(paste, arr.shape))
