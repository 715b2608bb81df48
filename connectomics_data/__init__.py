"""connectomics_data: fast, exact, reproducible data loading for connectomics EM volumes.

The top-level names are the stable API::

    import connectomics_data as cd

    cfg = cd.load_cfg("configs/mito.yaml")               # PyTC v1 YAML, yacs CfgNode
    loader = cd.build_dataloader(cfg, "train")            # torch DataLoader of cd.Batch
    for batch in cd.DevicePrefetcher(loader, "cuda"):     # ready batches on the GPU
        loss = my_loss(my_model(batch.image), batch.targets[0], batch.weights[0][0])

Importing the package is cheap: each name is imported from its subpackage on first use
(``cd.Box`` needs numpy only; ``cd.build_dataloader`` imports torch). See
``tutorials/own_training_loop.md`` and the API reference in ``docs/api``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the subpackage that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    # config
    "load_cfg": "config",
    "get_cfg_defaults": "config",
    "save_cfg": "config",
    # geometry and io
    "Box": "geometry",
    "open_volume": "io",
    "Volume": "io",
    "ArrayVolume": "io",
    # augmentation
    "Compose": "augment",
    "build_train_augmentor": "augment",
    "CopyPaste": "augment",
    "CutBlur": "augment",
    "CutNoise": "augment",
    "Elastic": "augment",
    "Flip": "augment",
    "Grayscale": "augment",
    "MisAlignment": "augment",
    "MissingParts": "augment",
    "MissingSection": "augment",
    "MotionBlur": "augment",
    "Noise": "augment",
    "Rescale": "augment",
    "Rotate": "augment",
    # datasets and loader
    "VolumeDataset": "datasets",
    "TileDataset": "datasets",
    "build_dataset": "datasets",
    "build_tile_dataset": "datasets",
    "build_dataloader": "loader",
    "collate_samples": "loader",
    "Batch": "loader",
    "DevicePrefetcher": "loader",
    # errors
    "ConnectomicsDataError": "errors",
}

__all__ = [
    "ArrayVolume",
    "Batch",
    "Box",
    "Compose",
    "ConnectomicsDataError",
    "CopyPaste",
    "CutBlur",
    "CutNoise",
    "DevicePrefetcher",
    "Elastic",
    "Flip",
    "Grayscale",
    "MisAlignment",
    "MissingParts",
    "MissingSection",
    "MotionBlur",
    "Noise",
    "Rescale",
    "Rotate",
    "TileDataset",
    "Volume",
    "VolumeDataset",
    "build_dataloader",
    "build_dataset",
    "build_tile_dataset",
    "build_train_augmentor",
    "collate_samples",
    "get_cfg_defaults",
    "load_cfg",
    "open_volume",
    "save_cfg",
    "__version__",
]

if TYPE_CHECKING:  # static tools see the real objects; nothing is imported at run time
    from .augment import (
        Compose,
        CopyPaste,
        CutBlur,
        CutNoise,
        Elastic,
        Flip,
        Grayscale,
        MisAlignment,
        MissingParts,
        MissingSection,
        MotionBlur,
        Noise,
        Rescale,
        Rotate,
        build_train_augmentor,
    )
    from .config import get_cfg_defaults, load_cfg, save_cfg
    from .datasets import TileDataset, VolumeDataset, build_dataset, build_tile_dataset
    from .errors import ConnectomicsDataError
    from .geometry import Box
    from .io import ArrayVolume, Volume, open_volume
    from .loader import Batch, DevicePrefetcher, build_dataloader, collate_samples


#: subpackages reachable as attributes without an explicit import (``cd.targets.parse_targets``)
_SUBPACKAGES = frozenset({
    "augment", "config", "datasets", "engine", "errors", "geometry", "inference", "io",
    "lightning", "loader", "models", "normalize", "sampling", "targets",
})


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'connectomics_data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBPACKAGES)
