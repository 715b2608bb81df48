"""Read window batches from a volume lazily, with a background thread one batch ahead.

Each window is read with ``Volume.read(box, pad_mode)`` (out-of-bounds parts padded on read, the
padded volume is never built), normalised to float32 and packed into a batch
``(B, C_in, z, y, x)`` (or ``(B, C_in, y, x)`` for 2D models, windows ``[1, y, x]`` squeezed).
While the caller runs the model on batch ``k``, the thread reads batch ``k + 1``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import Box

Normalizer = Callable[[np.ndarray], np.ndarray]


@dataclass
class Batch:
    """``indices``: window ids of the plan; ``data``: float32 tensor (B, C_in, *window)."""

    indices: list[int]
    data: torch.Tensor


def _affine_of(normalizer) -> tuple[float, float] | None:
    affine = getattr(normalizer, "affine", None)
    return affine() if callable(affine) else None


class WindowBatchReader:
    """Iterate over batches of windows read from ``volume``.

    Args:
        volume: a :class:`~connectomics_data.io.Volume` ((z, y, x) or (c, z, y, x)).
        indices: window ids to read, in processing order.
        box_of: window id -> box in volume coordinates.
        batch_size: windows per batch (``INFERENCE.SAMPLES_PER_BATCH``).
        normalizer: raw crop -> float32 network input (an ``ImageNormalizer``; its affine map is
            fused into the batch buffer). ``None`` casts to float32.
        pad_mode, cval: ``Volume.read`` padding.
        squeeze_z: 2D model: drop the window's z axis (windows must be one slice thick).
        pin_memory: pin batches (CUDA targets) so host-to-device copies can be asynchronous.
        prefetch: read the next batch in a background thread.

    ``read_seconds`` accumulates the time spent reading and normalising (in the thread).
    """

    def __init__(
        self,
        volume,
        indices: Sequence[int] | Iterator[int],
        box_of: Callable[[int], Box],
        batch_size: int,
        normalizer: Normalizer | None = None,
        pad_mode: str = "reflect",
        cval: float = 0,
        squeeze_z: bool = False,
        pin_memory: bool = False,
        prefetch: bool = True,
    ):
        if batch_size <= 0:
            raise ValueError(f"INFERENCE.SAMPLES_PER_BATCH must be positive, got {batch_size}")
        self.volume = volume
        self.indices = indices
        self.box_of = box_of
        self.batch_size = int(batch_size)
        self.normalizer = normalizer
        self.pad_mode = pad_mode
        self.cval = cval
        self.squeeze_z = squeeze_z
        self.pin_memory = pin_memory
        self.prefetch = prefetch
        self.read_seconds = 0.0

    # ------------------------------------------------------------------ reading
    def _read_batch(self, ids: list[int]) -> Batch:
        t0 = time.perf_counter()
        boxes = [self.box_of(i) for i in ids]
        window = boxes[0].shape
        nch = int(np.prod(self.volume.channel_shape, dtype=np.int64)) if self.volume.channel_shape else 1
        spatial = window[1:] if self.squeeze_z else window
        if self.squeeze_z and window[0] != 1:
            raise ValueError(f"a 2D model needs windows one slice thick, got {list(window)}")
        buf = torch.empty((len(ids), nch, *spatial), dtype=torch.float32, pin_memory=self.pin_memory)
        out = buf.numpy()
        affine = _affine_of(self.normalizer)
        for k, box in enumerate(boxes):
            raw = self.volume.read(box, pad_mode=self.pad_mode, cval=self.cval)
            raw = raw.reshape((nch, *spatial))
            if affine is not None or self.normalizer is None:
                out[k] = raw  # cast into the batch buffer, then one fused multiply-add
                if affine is not None:
                    off, scale = affine
                    out[k] *= np.float32(scale)
                    out[k] += np.float32(off)
            else:
                out[k] = self.normalizer(raw)
        self.read_seconds += time.perf_counter() - t0
        return Batch(list(ids), buf)

    def _chunks(self) -> Iterator[list[int]]:
        ids: list[int] = []
        for i in self.indices:
            ids.append(int(i))
            if len(ids) == self.batch_size:
                yield ids
                ids = []
        if ids:
            yield ids

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Batch]:
        if not self.prefetch:
            for ids in self._chunks():
                yield self._read_batch(ids)
            return
        q: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        done = object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for ids in self._chunks():
                    if stop.is_set() or not put(self._read_batch(ids)):
                        return
                put(done)
            except BaseException as err:  # handed to the consumer, re-raised there
                put(err)

        thread = threading.Thread(target=work, name="inference-reader", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()
