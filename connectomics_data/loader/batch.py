"""Collation into a :class:`Batch`, pinned memory, and the move to the device.

The Batch contract
==================

A :class:`Batch` is ``B`` samples stacked along a new first axis; ``build_dataloader`` yields
them. Call ``batch = batch.to(device)`` (or iterate a :class:`~.prefetch.DevicePrefetcher`,
or let Lightning's ``transfer_batch_to_device`` do it); afterwards every field is, on
``device``:

| field | value after ``.to(device)`` |
|---|---|
| image | float32 ``(B, C, z, y, x)`` (``(B, C, y, x)`` with DATASET.DO_2D): the network input, already normalised per sample (``raw * scale + offset``) |
| image_affine | float32 ``(B, 2)``: the ``(offset, scale)`` each sample was normalised with |
| targets | list, one tensor per MODEL.TARGET_OPT code, ``(B, C_t, z, y, x)``: float32 (binary, affinity, contour, distance, ...: the dtype the losses take); int64 ``(B, 1, ...)`` for class-index targets ('9' semantic classes, polarity classes) |
| weights | list per target of a list per MODEL.WEIGHT_OPT entry: a float32 tensor broadcastable to that target (``(B, 1 or C_t, z, y, x)``), or None (unweighted: WEIGHT_OPT '0' without a valid mask) |
| extra | dict name -> float32 ``(B, ...)``: additional 'img' targets, normalised to [0, 1] |
| valid | uint8 ``(B, z, y, x)`` (1 = annotated voxel) or None; present when a valid mask is configured and a weight uses it (it is already folded into those weights) |
| pos | int64 ``(B, 4)`` ``[volume index, z, y, x]``: each crop's start in the volume's voxels (negative inside the padding); stays on the CPU |
| trials | int64 ``(B,)`` rejection-sampling draws per sample (1 = first draw accepted); CPU |
| screened | int64 ``(B,)`` draws rejected by the cheap screen before reading; CPU |

``.to(device, non_blocking=False)`` returns a new, *ready* Batch (the original is unchanged);
on a ready batch it only moves the tensors. ``pin_memory()`` returns page-locked copies.
``len(batch)`` is ``B``; ``repr(batch)`` shows each field's dtype and shape, never its values.

In transit
----------
Between the workers and ``.to`` a batch travels in a compact form: the image as stored (uint8
for most EM) plus the per-sample affine, binary-valued targets as uint8, and weight maps that
two numbers per sample determine (WEIGHT_OPT '1', the valid-mask weight '0') as recipes that are
expanded on the device. That form is an internal detail of the transfer: it moves 4x fewer bytes
and lets the GPU do the float work. With CUDA a batch fresh from the loader has ``in_transit``
True; on a CPU-only machine the loader finishes each batch where it is made (loader threads,
or the training process with SYSTEM.LOADER_MODE 'process') into reused buffers, so it arrives
ready (``build_dataloader(..., finish=False)`` keeps the compact form).

Reading ``image``, ``targets`` or ``weights`` of an in-transit batch *works*: the batch first
finishes itself in place, on the device where its tensors lie (the CPU), exactly as ``.to`` would
there. That is correct but costs CPU time and moves 4x more bytes if the batch goes to a GPU
afterwards; ``batch.to(device)`` before reading anything is the fast path.

For the loader's own code (not users): ``Batch(..., normalized=False)`` builds an in-transit
batch from the compact tensors, ``batch._image`` / ``._targets`` / ``._weights`` read them
without finishing, and ``batch._map(fn)`` applies ``fn`` to every tensor that travels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..targets import DeferredWeight


def _stack(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays))


@dataclass
class DeferredWeightBatch:
    """A batch of :class:`DeferredWeight` recipes: ``factors`` ``(B, 2)`` = (w_fg, w_bg).

    Internal to the transfer: a ready :class:`Batch` never holds one."""

    kind: str
    target_index: int
    factors: torch.Tensor
    masked: bool

    def map(self, fn) -> DeferredWeightBatch:
        return DeferredWeightBatch(self.kind, self.target_index, fn(self.factors), self.masked)


class Batch:
    """A training / validation batch; see the module docstring for the full contract.

    After ``batch.to(device)`` (or on any read of ``image`` / ``targets`` / ``weights``):

    Attributes:
        image: float32 ``(B, C, z, y, x)`` (``(B, C, y, x)`` in 2D), the normalised network input.
        image_affine: float32 ``(B, 2)``, the ``(offset, scale)`` applied per sample.
        targets: one tensor per target code, ``(B, C_t, z, y, x)``; float32, int64 for
            class-index targets.
        weights: per target, per weight option: a float32 tensor broadcastable to the target,
            or None (unweighted).
        extra: extra 'img' targets, name -> float32 ``(B, ...)``.
        valid: uint8 ``(B, z, y, x)`` valid mask (1 = annotated) or None.
        pos: int64 ``(B, 4)`` ``[volume, z, y, x]`` crop starts (CPU).
        trials, screened: int64 ``(B,)`` rejection-sampling counts (CPU).
        in_transit: True while the compact transfer form is held (fresh from the loader).
        normalized: ``not in_transit`` (kept for older code).

    Args:
        image, targets, weights: the compact tensors (``normalized=False``, what
            :func:`collate_samples` builds) or finished ones (``normalized=True``); ``weights``
            may hold :class:`DeferredWeightBatch` recipes only in the compact form.
    """

    def __init__(
        self,
        image: torch.Tensor,
        image_affine: torch.Tensor,
        targets: Sequence[torch.Tensor] | None = None,
        weights: Sequence[Sequence[Any]] | None = None,
        extra: dict[str, torch.Tensor] | None = None,
        valid: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        trials: torch.Tensor | None = None,
        screened: torch.Tensor | None = None,
        normalized: bool = False,
    ):
        self._image = image
        self._targets = list(targets or [])
        self._weights = [list(ws) for ws in (weights or [])]
        self.image_affine = image_affine
        self.extra = dict(extra or {})
        self.valid = valid
        self.pos = pos
        self.trials = trials
        self.screened = screened
        self._ready = bool(normalized)
        if self._ready and any(isinstance(w, DeferredWeightBatch) for ws in self._weights for w in ws):
            raise ValueError("a ready Batch (normalized=True) cannot hold DeferredWeightBatch recipes")

    # ---------------------------------------------------------------- the finished fields
    @property
    def image(self) -> torch.Tensor:
        """float32 network input ``(B, C, z, y, x)`` (finishes an in-transit batch in place)."""
        self._finish()
        return self._image

    @image.setter
    def image(self, value: torch.Tensor) -> None:
        self._finish()
        self._image = value

    @property
    def targets(self) -> list[torch.Tensor]:
        """One tensor per target code: float32 (int64 for class-index targets)."""
        self._finish()
        return self._targets

    @targets.setter
    def targets(self, value: Sequence[torch.Tensor]) -> None:
        self._finish()
        self._targets = list(value)

    @property
    def weights(self) -> list[list[torch.Tensor | None]]:
        """Per target, per weight option: float32 tensor broadcastable to the target, or None."""
        self._finish()
        return self._weights

    @weights.setter
    def weights(self, value: Sequence[Sequence[torch.Tensor | None]]) -> None:
        self._finish()
        self._weights = [list(ws) for ws in value]

    @property
    def in_transit(self) -> bool:
        """True while the batch holds the compact transfer form (before ``.to``)."""
        return not self._ready

    @property
    def normalized(self) -> bool:
        """True once the fields are finished (after ``.to`` or a read); ``not in_transit``."""
        return self._ready

    @property
    def device(self) -> torch.device:
        """Where the image (and every other travelling tensor) lies."""
        return self._image.device

    def _finish(self) -> None:
        """Turn the compact form into the finished fields, in place, on the current device."""
        if self._ready:
            return
        self._image = normalize_image(self._image, self.image_affine)
        self._targets = [t.float() if t.dtype == torch.uint8 else t for t in self._targets]
        self._weights = [[expand_weight(w, self) for w in ws] for ws in self._weights]
        self._ready = True

    # ---------------------------------------------------------------- transfer
    def __len__(self) -> int:
        return int(self._image.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A new Batch in the same state with ``fn`` applied to every travelling tensor
        (``pos``, ``trials`` and ``screened`` are shared, not mapped)."""

        def map_weight(w):
            if w is None:
                return None
            return w.map(fn) if isinstance(w, DeferredWeightBatch) else fn(w)

        return Batch(
            image=fn(self._image),
            image_affine=fn(self.image_affine),
            targets=[fn(t) for t in self._targets],
            weights=[[map_weight(w) for w in ws] for ws in self._weights],
            extra={k: fn(v) for k, v in self.extra.items()},
            valid=None if self.valid is None else fn(self.valid),
            pos=self.pos,
            trials=self.trials,
            screened=self.screened,
            normalized=self._ready,
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies (called by the DataLoader's pin-memory thread); the state is kept."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False, normalize: bool = True) -> Batch:
        """A ready copy on ``device``: the compact form is moved, then finished there.

        ``normalize=False`` (transfer code only) moves the compact form and keeps the batch in
        transit. ``self`` is never modified.
        """
        moved = self._map(lambda t: t.to(device, non_blocking=non_blocking))
        if normalize:
            moved._finish()
        return moved

    def tensors(self) -> list[torch.Tensor]:
        """Every travelling tensor of the batch in its current form (e.g. for
        ``Tensor.record_stream``); recipes contribute their factor tensors."""
        out = [self._image, self.image_affine, *self._targets, *self.extra.values()]
        for ws in self._weights:
            for w in ws:
                if isinstance(w, DeferredWeightBatch):
                    out.append(w.factors)
                elif w is not None:
                    out.append(w)
        if self.valid is not None:
            out.append(self.valid)
        return out

    def __repr__(self) -> str:
        def desc(t: Any) -> str:
            if t is None:
                return "None"
            if isinstance(t, DeferredWeightBatch):
                target = self._targets[t.target_index]
                shape = (target.shape[0], 1) + tuple(target.shape[2:]) if t.kind == "mask" else tuple(target.shape)
                return f"{t.kind}-weight recipe -> float32{list(shape)}"
            dtype = str(t.dtype).replace("torch.", "")
            return f"{dtype}{list(t.shape)}"

        def finished(t: torch.Tensor, to: str) -> str:
            return desc(t) + (f" -> {to}" if not self._ready and str(t.dtype) != f"torch.{to}" else "")

        state = "ready" if self._ready else "in transit (call .to(device))"
        lines = [f"Batch({len(self)} samples on {self.device}, {state}:"]
        image = desc(self._image) + ("" if self._ready else " -> normalised float32")
        lines.append(f"  image={image},")
        lines.append(f"  image_affine={desc(self.image_affine)},")
        targets = ", ".join(finished(t, "float32") if t.dtype == torch.uint8 else desc(t) for t in self._targets)
        lines.append(f"  targets=[{targets}],")
        weights = ", ".join("[" + ", ".join(desc(w) for w in ws) + "]" for ws in self._weights)
        lines.append(f"  weights=[{weights}],")
        if self.extra:
            lines.append("  extra={" + ", ".join(f"{k!r}: {desc(v)}" for k, v in self.extra.items()) + "},")
        lines.append(f"  valid={desc(self.valid)}, pos={desc(self.pos)}, trials={desc(self.trials)}, "
                     f"screened={desc(self.screened)})")
        return "\n".join(lines)


def expand_weight(w, batch: Batch) -> torch.Tensor | None:
    """A float32 weight map from a :class:`DeferredWeightBatch` (on the batch's device);
    tensors and None pass through. Reads the batch's compact targets (no finishing)."""
    if not isinstance(w, DeferredWeightBatch):
        return w
    valid = None if batch.valid is None else batch.valid.unsqueeze(1).to(torch.float32)
    if w.kind == "mask":
        return valid
    target = batch._targets[w.target_index]
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
