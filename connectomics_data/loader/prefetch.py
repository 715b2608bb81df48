"""Overlap the host-to-device copy of batch k+1 with the training step on batch k.

On CUDA, each batch is copied with ``non_blocking=True`` on a side stream while the current
batch trains; the consumer's stream waits on an event before using it. Without CUDA (or for a
CPU device) the prefetcher is a plain iterator that moves and normalises batches in order; the
same code path is tested on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch

from .batch import Batch


class DevicePrefetcher:
    """Iterate ``loader`` yielding ready batches on ``device`` (what ``batch.to(device)`` gives).

    ``for batch in DevicePrefetcher(loader, "cuda"): ...`` replaces
    ``for batch in loader: batch = batch.to("cuda")`` and overlaps each copy with the previous
    step. The loader may be any iterable of :class:`Batch` (a re-iterable DataLoader gives a new
    pass per ``iter``).

    Attributes:
        wait_seconds: total time the consumer spent waiting for the loader (data starvation).
    """

    def __init__(self, loader: Iterable[Batch], device: torch.device | str):
        self.loader = loader
        self.device = torch.device(device)
        self.use_cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.stream = torch.cuda.Stream(device=self.device) if self.use_cuda else None
        self.wait_seconds = 0.0

    def _fetch(self, it: Iterator[Batch]) -> Batch | None:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return None
        finally:
            self.wait_seconds += time.perf_counter() - t0
        if self.stream is not None:
            with torch.cuda.stream(self.stream):
                return batch.to(self.device, non_blocking=True)
        return batch.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        it = iter(self.loader)
        nxt = self._fetch(it)
        while nxt is not None:
            current = nxt
            if self.stream is not None:
                torch.cuda.current_stream(self.device).wait_stream(self.stream)
                _record(current, torch.cuda.current_stream(self.device))
            nxt = self._fetch(it)
            yield current


def _record(batch: Batch, stream) -> None:
    """Tell the caching allocator the tensors are used on ``stream`` (no early reuse)."""
    for t in batch.tensors():
        t.record_stream(stream)
