"""Datasets: glue between sampling, io, augment and targets."""

from .build import build_dataset, load_inputs, resolve_input_path
from .tile_dataset import ChunkSampler, TileDataset, build_tile_dataset
from .volume_dataset import LabelTransform, VolumeDataset

__all__ = [
    "ChunkSampler",
    "LabelTransform",
    "TileDataset",
    "VolumeDataset",
    "build_dataset",
    "build_tile_dataset",
    "load_inputs",
    "resolve_input_path",
]
