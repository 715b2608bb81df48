"""Collation into a :class:`Batch`, pinned memory, and the move to the device.

Samples cross the worker -> trainer boundary in their compact form (uint8 images when the
intensities are untouched); :meth:`Batch.to` finishes the normalisation on the target device,
so the float32 image is made where it is used (on the GPU when there is one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..targets import DeferredWeight


def _stack(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays))


@dataclass
class DeferredWeightBatch:
    """A batch of :class:`DeferredWeight` recipes: ``factors`` ``(B, 2)`` = (w_fg, w_bg)."""

    kind: str
    target_index: int
    factors: torch.Tensor
    masked: bool

    def map(self, fn) -> DeferredWeightBatch:
        return DeferredWeightBatch(self.kind, self.target_index, fn(self.factors), self.masked)


@dataclass
class Batch:
    """A training / validation batch.

    Attributes:
        image: ``(B, C, z, y, x)`` (``(B, C, y, x)`` in 2D); uint8 or float32 until :meth:`to`
            has been called, float32 network input afterwards.
        image_affine: ``(B, 2)`` float32 ``(offset, scale)`` per sample.
        targets: one ``(B, C_t, z, y, x)`` tensor per target.
        weights: per target, per weight option: a tensor ``(B, 1 or C_t, ...)`` or None.
        extra: extra 'img' targets, ``(B, ...)`` float32.
        valid: ``(B, z, y, x)`` uint8 valid mask when a deferred weight needs it, else None.
        pos: ``(B, 4)`` int64 ``[volume, z, y, x]``.
        trials, screened: per sample rejection-sampling counts.
        normalized: True once ``image`` is the network input.
    """

    image: torch.Tensor
    image_affine: torch.Tensor
    targets: list[torch.Tensor] = field(default_factory=list)
    weights: list[list[Any]] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    valid: torch.Tensor | None = None
    pos: torch.Tensor | None = None
    trials: torch.Tensor | None = None
    screened: torch.Tensor | None = None
    normalized: bool = False

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def _map(self, fn) -> Batch:
        def map_weight(w):
            if w is None:
                return None
            return w.map(fn) if isinstance(w, DeferredWeightBatch) else fn(w)

        return Batch(
            image=fn(self.image),
            image_affine=fn(self.image_affine),
            targets=[fn(t) for t in self.targets],
            weights=[[map_weight(w) for w in ws] for ws in self.weights],
            extra={k: fn(v) for k, v in self.extra.items()},
            valid=None if self.valid is None else fn(self.valid),
            pos=self.pos,
            trials=self.trials,
            screened=self.screened,
            normalized=self.normalized,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies (called by the DataLoader's pin-memory thread)."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False, normalize: bool = True) -> Batch:
        """Move to ``device`` and (by default) turn the image into float32 network input there."""
        moved = self._map(lambda t: t.to(device, non_blocking=non_blocking))
        if normalize and not moved.normalized:
            moved.image = normalize_image(moved.image, moved.image_affine)
            moved.targets = [t.float() if t.dtype == torch.uint8 else t for t in moved.targets]
            moved.weights = [[expand_weight(w, moved) for w in ws] for ws in moved.weights]
            moved.normalized = True
        return moved


def expand_weight(w, batch: Batch) -> torch.Tensor | None:
    """A float32 weight map from a :class:`DeferredWeightBatch` (on the batch's device)."""
    if not isinstance(w, DeferredWeightBatch):
        return w
    valid = None if batch.valid is None else batch.valid.unsqueeze(1).to(torch.float32)
    if w.kind == "mask":
        return valid
    target = batch.targets[w.target_index]
    shape = (target.shape[0],) + (1,) * (target.dim() - 1)
    w_fg = w.factors[:, 0].reshape(shape).to(torch.float32)
    w_bg = w.factors[:, 1].reshape(shape).to(torch.float32)
    out = torch.where(target != 0, w_fg, w_bg)
    if w.masked and valid is not None:
        out = out * valid
    return out


def normalize_image(image: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """``image * scale + offset`` per sample, in float32 (any device)."""
    shape = (image.shape[0],) + (1,) * (image.dim() - 1)
    offset = affine[:, 0].reshape(shape).to(torch.float32)
    scale = affine[:, 1].reshape(shape).to(torch.float32)
    return torch.addcmul(offset, image.to(torch.float32), scale)


def _collate_weight(ws: list[Any]) -> Any:
    """Stack one weight slot over a batch. Deferred recipes stay recipes; a sample without a
    valid mask (None next to masked samples) counts as all-valid."""
    deferred = [w for w in ws if isinstance(w, DeferredWeight)]
    if deferred:
        kind, index = deferred[0].kind, deferred[0].target_index
        factors = [(w.w_fg, w.w_bg) if isinstance(w, DeferredWeight) else (1.0, 1.0) for w in ws]
        masked = any(w.masked or w.kind == "mask" for w in deferred)
        if kind == "mask":
            return DeferredWeightBatch("mask", index, torch.ones(len(ws), 2), True)
        return DeferredWeightBatch("ratio", index, torch.tensor(factors, dtype=torch.float32), masked)
    if all(w is None for w in ws):
        return None
    if any(w is None for w in ws):
        shape = next(w.shape for w in ws if w is not None)
        ws = [np.ones(shape, np.float32) if w is None else w for w in ws]
    return _stack(ws)


def collate_samples(samples: Sequence[dict[str, Any]]) -> Batch:
    """Stack sample dicts from :class:`~connectomics_data.datasets.VolumeDataset` into a Batch."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    images = [s["image"] for s in samples]
    if len({img.dtype for img in images}) > 1:
        # e.g. a uint8 and a uint16 volume: each sample keeps its own affine, so a common
        # float32 stack normalises exactly as the separate dtypes would
        images = [img.astype(np.float32) for img in images]
    affines = [s["image_affine"] for s in samples]
    n_targets = len(samples[0]["targets"])
    targets = [_stack([s["targets"][i] for s in samples]) for i in range(n_targets)]
    weights: list[list[Any]] = []
    for i in range(len(samples[0]["weights"])):
        per: list[Any] = []
        for j in range(len(samples[0]["weights"][i])):
            per.append(_collate_weight([s["weights"][i][j] for s in samples]))
        weights.append(per)
    valids = [s.get("valid") for s in samples]
    valid = None
    if any(v is not None for v in valids):
        shape = next(v.shape for v in valids if v is not None)
        valid = _stack([np.ones(shape, np.uint8) if v is None else v for v in valids])
    return Batch(
        image=_stack(images),
        image_affine=_stack(affines),
        targets=targets,
        weights=weights,
        extra={k: _stack([s["extra"][k] for s in samples]) for k in samples[0].get("extra", {})},
        valid=valid,
        pos=_stack([s["pos"] for s in samples]),
        trials=torch.tensor([int(s.get("trials", 1)) for s in samples]),
        screened=torch.tensor([int(s.get("screened", 0)) for s in samples]),
    )
