"""DataLoader construction from a config: workers, collate, pinned memory, prefetch."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.utils.data
from yacs.config import CfgNode

from ..io.formats.tensorstore_array import worker_start_method
from .batch import Batch, collate_samples
from .finish import BufferPool, finish_batch
from .sampler import SampleIndexSampler
from .threads import ThreadLoader

LOADER_MODES = ("process", "thread")


def collate_finished(samples: list[dict[str, Any]]) -> Batch:
    """:func:`collate_samples` + :func:`finish_batch`: the ready CPU batch, made in the worker."""
    return finish_batch(collate_samples(samples))


class FinishingDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose batches (compact form from the workers: 4x fewer bytes to transfer)
    are finished in the training process into pooled buffers (:class:`BufferPool`): the same
    values as ``Batch.to('cpu')``, without fresh float32 allocations (page faults) per batch."""

    def __iter__(self):  # type: ignore[override]
        finish = self.__dict__.setdefault("_finish", _pooled_finish())
        for batch in super().__iter__():
            yield finish(batch)


def _pooled_finish():
    pool = BufferPool()

    def finish(batch: Batch) -> Batch:
        return finish_batch(batch, pool)

    return finish


def _pin(batch: Batch) -> Batch:
    """Page-locked copy of a compact batch, made on the loader thread (for ``non_blocking``)."""
    return batch.pin_memory()


def loader_mode(cfg: CfgNode) -> str:
    """SYSTEM.LOADER_MODE, checked: 'thread' or 'process'."""
    from ..errors import ConfigError

    mode = str(cfg.SYSTEM.get("LOADER_MODE", "thread")).lower()
    if mode not in LOADER_MODES:
        raise ConfigError(f"SYSTEM.LOADER_MODE must be one of {list(LOADER_MODES)}, got {mode!r}")
    return mode


def local_world_size(world_size: int = 1) -> int:
    """Ranks on this machine: torchrun's LOCAL_WORLD_SIZE, else ``world_size``."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def num_workers_for(cfg: CfgNode, world_size: int = 1) -> int:
    """SYSTEM.NUM_CPUS (the machine's data workers), split across the ranks on this machine."""
    return max(0, int(cfg.SYSTEM.NUM_CPUS) // max(1, local_world_size(world_size)))


def build_dataloader(cfg: CfgNode, mode: str = "train", dataset: Any = None, rank: int = 0,
                     world_size: int = 1, seed: int | None = None, start_index: int = 0,
                     num_workers: int | None = None, mode_override: str | None = None,
                     finish: bool | None = None) -> torch.utils.data.DataLoader | ThreadLoader:
    """A DataLoader over :func:`~connectomics_data.datasets.build_dataset` (or ``dataset``).

    Train: batches of SOLVER.SAMPLES_PER_BATCH drawn by a :class:`SampleIndexSampler` starting at
    ``start_index`` (resume). Val/test: the window grid in order, batch 4 x SAMPLES_PER_BATCH
    (val) or INFERENCE.SAMPLES_PER_BATCH (test). Workers = SYSTEM.NUM_CPUS (split across ranks);
    pinned memory only when CUDA is present; persistent workers and prefetch factor from SYSTEM.

    SYSTEM.LOADER_MODE (or ``mode_override``) picks who makes the batches: 'process' (DataLoader
    worker processes) or 'thread' (a :class:`ThreadLoader`: threads of this process, nothing
    transferred). ``finish`` makes each batch ready (normalised float32, :func:`finish_batch`)
    where it is made, so the training process only consumes; default: with threads and no CUDA.
    With CUDA the compact form stays (it crosses PCIe, 4x fewer bytes, and ``Batch.to``
    finishes it on the GPU); with processes too (a float32 batch costs more to transfer than
    to finish: measured in benchmarks/README.md). Either way the values are those of
    ``collate_samples(...).to(device)``, bit for bit.
    """
    tiled = bool(cfg.DATASET.DO_CHUNK_TITLE) and mode == "train"
    if dataset is None:
        from ..datasets import build_dataset, build_tile_dataset

        if tiled:
            dataset = build_tile_dataset(cfg, "train", rank=rank, world_size=world_size, seed=seed)
        else:
            dataset = build_dataset(cfg, mode, rank=rank, seed=seed)
    workers = num_workers_for(cfg, world_size) if num_workers is None else int(num_workers)
    if mode == "train":
        batch = int(cfg.SOLVER.SAMPLES_PER_BATCH)
        if hasattr(dataset, "sampler") and callable(dataset.sampler):
            # TileDataset: the sampler drives chunk loading (next chunk read in the background)
            sampler = dataset.sampler(start_index, workers, int(cfg.SYSTEM.PREFETCH_FACTOR))
        else:
            sampler = SampleIndexSampler(len(dataset), start=start_index)
    else:
        batch = 4 * int(cfg.SOLVER.SAMPLES_PER_BATCH) if mode == "val" else int(cfg.INFERENCE.SAMPLES_PER_BATCH)
        sampler = torch.utils.data.SequentialSampler(dataset)
    threads = (mode_override or loader_mode(cfg)) == "thread"
    pin = bool(cfg.SYSTEM.PIN_MEMORY) and torch.cuda.is_available()
    if finish is None:
        finish = threads and not torch.cuda.is_available()
    if threads:
        # threads have no transfer latency to hide: max(threads, PREFETCH_FACTOR) batches in
        # flight keeps every thread busy; each waiting finished batch is float32 memory
        return ThreadLoader(dataset, batch, sampler, num_threads=workers,
                            in_flight=max(workers, int(cfg.SYSTEM.PREFETCH_FACTOR)),
                            finish=_pooled_finish() if finish else (_pin if pin else None))
    kwargs: dict[str, Any] = {}
    if workers > 0:
        context = worker_start_method(dataset)  # TensorStore volumes: workers from a fork server
        if context is not None:
            kwargs["multiprocessing_context"] = context
        kwargs["persistent_workers"] = (bool(cfg.SYSTEM.PERSISTENT_WORKERS) or tiled) and mode == "train"
        kwargs["prefetch_factor"] = int(cfg.SYSTEM.PREFETCH_FACTOR)
    cls = torch.utils.data.DataLoader
    if not finish and not torch.cuda.is_available() and mode == "train":
        cls = FinishingDataLoader  # compact form across processes, finished here into pooled buffers
    return cls(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_finished if finish else collate_samples,
        pin_memory=pin,
        drop_last=False,
        **kwargs,
    )
