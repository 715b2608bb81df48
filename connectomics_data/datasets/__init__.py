"""Datasets: glue between sampling, io, augment and targets."""

from .build import build_dataset, load_inputs, resolve_input_path
from .volume_dataset import LabelTransform, VolumeDataset

__all__ = ["LabelTransform", "VolumeDataset", "build_dataset", "load_inputs", "resolve_input_path"]
