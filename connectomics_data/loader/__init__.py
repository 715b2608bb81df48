"""From datasets to the model: sampler, collate, pinned batches, CUDA prefetch."""

from .batch import Batch, collate_samples, normalize_image
from .build import build_dataloader, num_workers_for
from .prefetch import DevicePrefetcher
from .sampler import SampleIndexSampler

__all__ = [
    "Batch",
    "DevicePrefetcher",
    "SampleIndexSampler",
    "build_dataloader",
    "collate_samples",
    "normalize_image",
    "num_workers_for",
]
