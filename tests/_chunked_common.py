"""Shared helpers for the chunked-training/inference CLI tests: the tiny project of
:mod:`_trainer_common` with its volumes also written as PNG slices described by tile JSONs.

(No tests here; the other files import these helpers.)
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
from _trainer_common import tiny_project

from connectomics_data.io import make_tile_json, write_png_slices

REPO = Path(__file__).resolve().parents[1]
SHM = "/dev/shm"

#: KEY VALUE pairs that turn the tiny project into chunked training on its tile JSONs
CHUNKED = ["DATASET.DO_CHUNK_TITLE", "1", "DATASET.IMAGE_NAME", "train_im.json",
           "DATASET.LABEL_NAME", "train_lb.json", "DATASET.DATA_CHUNK_NUM", "[1, 1, 2]",
           "DATASET.DATA_CHUNK_ITER", "2", "DATASET.PAD_SIZE", "[1, 12, 12]"]


def tiled_project(root: Path, **sections: dict) -> Path:
    """:func:`tiny_project` plus ``data/{train,val}_{im,lb}.json`` (one PNG per slice)."""
    cfg = tiny_project(root, **sections)
    for name in ("train_im", "train_lb", "val_im", "val_lb"):
        with h5py.File(root / "data" / f"{name}.h5", "r") as f:
            write_png_slices(root / "data" / name, f["main"][:])
        make_tile_json(str(root / "data" / name), str(root / "data" / f"{name}.json"), relative=True, progress=False)
    return cfg


def start_train(root: Path, cfg: Path, *opts: str) -> subprocess.Popen:
    """``scripts/train.py --config-file cfg opts...`` in a child process, run from ``root``."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "--config-file", str(cfg), *opts],
                            cwd=str(root), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stores_of(pid: int, root: str = SHM) -> list[str]:
    """The chunk store directories of process ``pid`` in ``root``."""
    return sorted(glob.glob(os.path.join(root, f"cdata-chunks-{pid}-*")))


def wait_for_training(proc: subprocess.Popen, log: Path, timeout: float = 90) -> list[str]:
    """Wait until ``proc`` has a loaded chunk slot in /dev/shm and has logged an iteration;
    return its store directories."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}): {proc.stderr.read()}")
        dirs = stores_of(proc.pid)
        if dirs and glob.glob(os.path.join(dirs[0], "*.ready")) and log.exists() and log.read_text().strip():
            return dirs
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("training did not start within the timeout")
