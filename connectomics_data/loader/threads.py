"""A thread-pool loader: batches made by threads of the training process, no transfer at all.

``SYSTEM.LOADER_MODE = 'thread'``. Each task reads, augments and collates one batch (and, when
training on the CPU, finishes it: :func:`~.finish.finish_batch`) on a pool thread; the batches
come out in sampler order. What makes a sample (crop copies, warps, target maps, the float
finish) runs in numpy / torch kernels that release the GIL, so threads use the cores in
parallel while nothing is pickled, copied between processes or mapped per batch, and the
process tree holds one Python + torch runtime instead of one per worker.

Same index semantics as the DataLoader path: the sampler hands out global sample indices, a
sample is a pure function of ``(seed, rank, index)``, so the batches are bit-identical to the
process loader's for any number of threads.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .batch import Batch, collate_samples


class ThreadLoader:
    """Iterable of batches over ``dataset`` drawn by ``sampler``, made on ``num_threads`` threads.

    Args:
        dataset: a map-style dataset (``dataset[i]`` -> sample dict).
        batch_size: samples per batch (the last batch of a pass may be smaller unless
            ``drop_last``).
        sampler: iterable of indices; iterated once per pass (epoch), in the calling thread.
        num_threads: pool threads; 0 makes every batch in the calling thread.
        in_flight: batches being made or waiting (default ``num_threads``); each waiting
            batch holds memory, each missing one can idle a thread.
        collate_fn: list of samples -> batch.
        finish: applied to each collated batch on the pool thread (e.g. ``finish_batch``).
    """

    batch_sampler = None
    """Batches are cut from ``sampler`` here (as a DataLoader built with ``batch_size``); tools
    that inspect DataLoaders (Lightning) read ``sampler`` when this is None."""

    def __init__(self, dataset: Any, batch_size: int, sampler: Iterable[int], num_threads: int = 2,
                 in_flight: int | None = None, collate_fn: Callable[[list], Any] = collate_samples,
                 finish: Callable[[Batch], Batch] | None = None, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.num_threads = max(0, int(num_threads))
        self.in_flight = max(1, int(self.num_threads if in_flight is None else in_flight))
        self.collate_fn = collate_fn
        self.finish = finish
        self.drop_last = bool(drop_last)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def make_batch(self, indices: Sequence[int]) -> Any:
        """One batch: the samples of ``indices``, collated (and finished)."""
        batch = self.collate_fn([self.dataset[i] for i in indices])
        return batch if self.finish is None else self.finish(batch)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.num_threads, thread_name_prefix="loader")
            return self._executor

    def _index_batches(self) -> Iterator[list[int]]:
        chunk: list[int] = []
        for i in self.sampler:
            chunk.append(int(i))
            if len(chunk) == self.batch_size:
                yield chunk
                chunk = []
        if chunk and not self.drop_last:
            yield chunk

    def __iter__(self) -> Iterator[Any]:
        batches = self._index_batches()
        if self.num_threads == 0:
            for indices in batches:
                yield self.make_batch(indices)
            return
        pool = self._pool()
        pending: deque[Future] = deque()

        def submit() -> bool:
            indices = next(batches, None)
            if indices is None:
                return False
            pending.append(pool.submit(self.make_batch, indices))
            return True

        try:
            for _ in range(self.in_flight):
                if not submit():
                    break
            while pending:
                batch = pending.popleft().result()  # re-raises a sample's error with its traceback
                submit()
                yield batch
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        """Stop the pool threads (after the batches they are making)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:
        executor = self.__dict__.get("_executor")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
