"""DataLoader construction from a config: workers, collate, pinned memory, prefetch."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.utils.data
from yacs.config import CfgNode

from ..io.formats.tensorstore_array import worker_start_method
from .batch import collate_samples
from .sampler import SampleIndexSampler


def local_world_size(world_size: int = 1) -> int:
    """Ranks on this machine: torchrun's LOCAL_WORLD_SIZE, else ``world_size``."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def num_workers_for(cfg: CfgNode, world_size: int = 1) -> int:
    """SYSTEM.NUM_CPUS (the machine's data workers), split across the ranks on this machine."""
    return max(0, int(cfg.SYSTEM.NUM_CPUS) // max(1, local_world_size(world_size)))


def build_dataloader(cfg: CfgNode, mode: str = "train", dataset: Any = None, rank: int = 0,
                     world_size: int = 1, seed: int | None = None, start_index: int = 0,
                     num_workers: int | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over :func:`~connectomics_data.datasets.build_dataset` (or ``dataset``).

    Train: batches of SOLVER.SAMPLES_PER_BATCH drawn by a :class:`SampleIndexSampler` starting at
    ``start_index`` (resume). Val/test: the window grid in order, batch 4 x SAMPLES_PER_BATCH
    (val) or INFERENCE.SAMPLES_PER_BATCH (test). Workers = SYSTEM.NUM_CPUS (split across ranks);
    pinned memory only when CUDA is present; persistent workers and prefetch factor from SYSTEM.
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
    kwargs: dict[str, Any] = {}
    if workers > 0:
        context = worker_start_method(dataset)  # TensorStore volumes: workers from a fork server
        if context is not None:
            kwargs["multiprocessing_context"] = context
        kwargs["persistent_workers"] = (bool(cfg.SYSTEM.PERSISTENT_WORKERS) or tiled) and mode == "train"
        kwargs["prefetch_factor"] = int(cfg.SYSTEM.PREFETCH_FACTOR)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_samples,
        pin_memory=bool(cfg.SYSTEM.PIN_MEMORY) and torch.cuda.is_available(),
        drop_last=False,
        **kwargs,
    )
