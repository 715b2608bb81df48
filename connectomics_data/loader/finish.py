"""Finish an in-transit batch where it is cheapest: in the loader's worker or thread on CPU.

A batch leaves :func:`~.batch.collate_samples` in its compact form (uint8 image + per-sample
affine, uint8 binary targets, weight recipes). When training runs on the CPU, the float32
network input has to be made somewhere on the CPU anyway; making it inside the loader (worker
process or thread) instead of in the training process takes it off the training process's
critical path. With CUDA the compact form is kept: it crosses PCIe (4x fewer bytes) and the GPU
finishes it in :meth:`Batch.to`.

:func:`finish_batch` computes exactly what ``Batch.to('cpu')`` computes, with the same torch
kernels (so every value is bit-identical), but writes into buffers that ``alloc`` provides:
fresh tensors by default, or views of a preallocated shared-memory ring
(:mod:`.ring`). Torch kernels release the GIL, so loader threads finish batches in parallel.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .batch import Batch, DeferredWeightBatch

Alloc = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]
"""``alloc(shape, dtype)`` -> an uninitialised CPU tensor of that shape and dtype."""


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype)


class BufferPool:
    """Reusable CPU buffers for finished batches: ``pool.alloc(shape, dtype)`` returns a tensor
    over a pooled buffer, and the buffer comes back to the pool when the last tensor (or view)
    over it is garbage-collected, never earlier.

    A training loop that drops each batch after its step reuses the same few buffers for the
    whole run: no page faults on fresh memory and no allocator fragmentation (a float32 batch of
    4 x 17 x 257 x 257 is 18 MB per field). A consumer that keeps batches just makes the pool
    allocate more, as plain allocation would. Thread-safe.
    """

    def __init__(self) -> None:
        self._free: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self.allocated = 0

    def alloc(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        nbytes = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        with self._lock:
            free = self._free.get(nbytes)
            buf = free.pop() if free else None
        if buf is None:
            buf = np.empty(nbytes, np.uint8)
            self.allocated += nbytes
        view = buf.view(np_dtype).reshape(shape)  # a new array per lease; tensors keep it alive
        weakref.finalize(view, self._release, buf)
        return torch.from_numpy(view)

    def _release(self, buf: np.ndarray) -> None:
        with self._lock:
            self._free.setdefault(buf.nbytes, []).append(buf)

    __call__ = alloc


def compact_fields(batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor], list[list[Any]]]:
    """``(image, targets, weights)`` of ``batch`` as they travel, without finishing it."""
    fields = vars(batch)
    if "_image" in fields:  # a Batch whose finished fields are properties
        return fields["_image"], list(fields["_targets"]), [list(ws) for ws in fields["_weights"]]
    return fields["image"], list(fields["targets"]), [list(ws) for ws in fields["weights"]]


def is_ready(batch: Batch) -> bool:
    """True when ``batch`` already holds the finished (network-input) form."""
    return bool(batch.normalized)


def finish_image(image: torch.Tensor, affine: torch.Tensor, alloc: Alloc = _empty) -> torch.Tensor:
    """``image * scale + offset`` per sample in float32, into ``alloc``'s buffer.

    Same kernel and operands as :func:`~.batch.normalize_image` (``torch.addcmul(offset,
    image.float(), scale)``), so bit-identical; the cast is written into the output buffer
    first, which then serves as the multiplicand (no temporary).
    """
    shape = (image.shape[0],) + (1,) * (image.dim() - 1)
    offset = affine[:, 0].reshape(shape).to(torch.float32)
    scale = affine[:, 1].reshape(shape).to(torch.float32)
    out = alloc(tuple(image.shape), torch.float32)
    out.copy_(image)
    return torch.addcmul(offset, out, scale, out=out)


def _ratio_map(target: torch.Tensor, ready: torch.Tensor, w_fg: torch.Tensor, w_bg: torch.Tensor,
               alloc: Alloc) -> torch.Tensor:
    """``where(target != 0, w_fg, w_bg)`` per sample, float32 ``target.shape``.

    When the target is uint8 with values in {0, 1} (the compact binary targets) and both factors
    are finite and positive, computed as ``t * w_fg + (1 - t) * w_bg`` from the finished float
    target ``ready``: every product is ``w`` or 0 exactly and every sum adds an exact 0, so the
    values are those of ``where``, bit for bit, in 30 % less time (no boolean temporary, and
    the broadcast ``where`` does not vectorise). Otherwise ``torch.where`` itself.
    """
    out = alloc(tuple(target.shape), torch.float32)
    factors = torch.cat([w_fg.reshape(-1), w_bg.reshape(-1)])
    if (target.dtype == torch.uint8 and ready.dtype == torch.float32 and bool(torch.isfinite(factors).all())
            and bool((factors > 0).all()) and int(target.max()) <= 1):
        torch.mul(ready, w_fg, out=out)
        rest = alloc(tuple(target.shape), torch.float32)
        torch.neg(ready, out=rest).add_(1.0)
        return torch.addcmul(out, rest, w_bg, out=out)
    return torch.where(target != 0, w_fg, w_bg, out=out)


def _finish_weight(w: Any, targets: list[torch.Tensor], ready_targets: list[torch.Tensor],
                   valid: torch.Tensor | None, alloc: Alloc) -> torch.Tensor | None:
    """:func:`~.batch.expand_weight` into ``alloc``'s buffers (the same values, bit for bit)."""
    if not isinstance(w, DeferredWeightBatch):
        return w
    valid_f = None
    if valid is not None:
        v = valid.unsqueeze(1)
        valid_f = alloc(tuple(v.shape), torch.float32)
        valid_f.copy_(v)
    if w.kind == "mask":
        return valid_f
    target = targets[w.target_index]
    shape = (target.shape[0],) + (1,) * (target.dim() - 1)
    w_fg = w.factors[:, 0].reshape(shape).to(torch.float32)
    w_bg = w.factors[:, 1].reshape(shape).to(torch.float32)
    out = _ratio_map(target, ready_targets[w.target_index], w_fg, w_bg, alloc)
    if w.masked and valid_f is not None:
        torch.mul(out, valid_f, out=out)
    return out


def finish_batch(batch: Batch, alloc: Alloc = _empty) -> Batch:
    """The ready form of a CPU batch (what ``batch.to('cpu')`` returns), built in ``alloc``'s
    buffers; a ready batch is returned unchanged.

    Shapes and dtypes: image float32 ``(B, C, z, y, x)``; uint8 targets become float32 (others
    keep their dtype and are not copied); deferred weights become float32 maps ``(B, 1 or C_t,
    z, y, x)``. ``image_affine``, ``extra``, ``valid``, ``pos``, ``trials``, ``screened`` are
    shared with ``batch``.
    """
    if is_ready(batch):
        return batch
    image, targets, weights = compact_fields(batch)
    ready_image = finish_image(image, batch.image_affine, alloc)
    ready_targets = []
    for t in targets:
        if t.dtype == torch.uint8:
            out = alloc(tuple(t.shape), torch.float32)
            out.copy_(t)
            t = out
        ready_targets.append(t)
    ready_weights = [[_finish_weight(w, targets, ready_targets, batch.valid, alloc) for w in ws] for ws in weights]
    return Batch(
        image=ready_image,
        image_affine=batch.image_affine,
        targets=ready_targets,
        weights=ready_weights,
        extra=dict(batch.extra),
        valid=batch.valid,
        pos=batch.pos,
        trials=batch.trials,
        screened=batch.screened,
        normalized=True,
    )
