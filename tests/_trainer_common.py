"""Shared helpers for tests/test_trainer_*.py and tests/test_cli_*.py: a tiny synthetic EM-like
data set and a config that trains on it in about a second.

(No tests here; the other files import these helpers.)
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import yaml
from scipy.ndimage import gaussian_filter

TINY_CONFIG = {
    "SYSTEM": {"NUM_CPUS": 0, "SEED": 0},
    "MODEL": {
        "ARCHITECTURE": "unet_3d",
        "FILTERS": [4, 8],
        "ISOTROPY": [False, False],
        "INPUT_SIZE": [3, 16, 16],
        "OUTPUT_SIZE": [3, 16, 16],
        "TARGET_OPT": ["0"],
        "LOSS_OPTION": [["WeightedBCEWithLogitsLoss", "DiceLoss"]],
        "LOSS_WEIGHT": [[1.0, 0.5]],
        "WEIGHT_OPT": [["1", "0"]],
        "OUTPUT_ACT": [["none", "sigmoid"]],
    },
    "DATASET": {
        "INPUT_PATH": "data/",
        "IMAGE_NAME": "train_im.h5",
        "LABEL_NAME": "train_lb.h5",
        "OUTPUT_PATH": "out/",
        "PAD_SIZE": [1, 4, 4],
    },
    "SOLVER": {
        "NAME": "Adam",
        "BASE_LR": 0.01,
        "LR_SCHEDULER_NAME": "WarmupCosineLR",
        "WARMUP_ITERS": 2,
        "ITERATION_TOTAL": 4,
        "ITERATION_SAVE": 2,
        "ITERATION_VAL": 100,
        "SAMPLES_PER_BATCH": 2,
    },
    "MONITOR": {"ITERATION_NUM": [1, 0]},
    "INFERENCE": {
        "OUTPUT_ACT": ["sigmoid"],
        "IMAGE_NAME": "val_im.h5",
        "OUTPUT_PATH": "out/test/",
        "STRIDE": [2, 8, 8],
        "AUG_NUM": 0,
    },
}


def write_tiny_data(folder: Path) -> None:
    """``train_im/lb.h5`` (8, 40, 40) and ``val_im/lb.h5`` (4, 40, 40), dataset 'main', uint8:
    smooth blobs (label 1, about 20 % of the voxels) darker than the background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, shape in (("train", (8, 40, 40)), ("val", (4, 40, 40))):
        field = gaussian_filter(rng.random(shape), (0.5, 2, 2))
        label = (field > np.quantile(field, 0.8)).astype(np.uint8)
        image = np.clip(150 - 60 * label + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)
        for suffix, data in (("im", image), ("lb", label)):
            with h5py.File(folder / f"{name}_{suffix}.h5", "w") as f:
                f["main"] = data


def tiny_project(root: Path, **sections: dict) -> Path:
    """Write the tiny data under ``root/data`` and the config ``root/tiny.yaml`` (the sections
    given are merged into :data:`TINY_CONFIG`); returns the config path. Relative paths in the
    config are relative to ``root`` (run from there)."""
    write_tiny_data(root / "data")
    config = json.loads(json.dumps(TINY_CONFIG))
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl file."""
    return [json.loads(line) for line in path.read_text().splitlines()]
