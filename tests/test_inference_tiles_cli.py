"""Chunked inference on a tiled volume through scripts/train.py --inference: the tile keys act
as in training (DATASET.TILE_FILL_VALUE / TILE_CACHE_MB / TILE_THREADS) and messages name config
keys, not Python arguments."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from _chunked_common import tiled_project
from PIL import Image
from test_bad_inputs import error_line, run_cli

from connectomics_data.config import load_cfg
from connectomics_data.engine.checkpoint import save_checkpoint
from connectomics_data.inference.from_cfg import _default_open_fn
from connectomics_data.models import build_model

#: chunked inference of the tiny project's validation volume (4, 40, 40) through its tile JSON
INFER = ["--inference", "--checkpoint", "net.pth.tar", "INFERENCE.DO_CHUNK_TITLE", "1",
         "INFERENCE.IMAGE_NAME", "val_im.json", "DATASET.DATA_CHUNK_NUM", "[1, 1, 2]",
         "DATASET.PAD_SIZE", "[1, 4, 4]", "INFERENCE.OUTPUT_DTYPE", "float32"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    cfg_path = tiled_project(tmp_path)
    cfg = load_cfg(str(cfg_path))
    torch.manual_seed(0)
    save_checkpoint("net.pth.tar", build_model(cfg, "cpu"), None, None, 1, cfg)
    return cfg_path


def _prediction(folder: str) -> np.ndarray:
    return zarr.open_group(f"{folder}/result.zarr", mode="r")["vol0"][:]


def test_tile_fill_value_is_honoured_at_inference_and_named_in_the_error(project, capsys, monkeypatch):
    tile = Path("data/val_im/0002.png")
    assert tile.exists()
    base = ["--config-file", str(project), *INFER]
    # reference: the same volume with that section really zero
    original = np.asarray(Image.open(tile))
    Image.fromarray(np.zeros_like(original)).save(tile)
    assert run_cli(base + ["INFERENCE.OUTPUT_PATH", "zeros/"], capsys, monkeypatch)[0] == 0
    os.remove(tile)
    rc, stderr, _ = run_cli(base + ["INFERENCE.OUTPUT_PATH", "missing/"], capsys, monkeypatch)
    line = error_line(stderr)
    assert rc == 2 and "0002.png" in line and "set DATASET.TILE_FILL_VALUE (e.g. 0) to fill them" in line
    assert "fill_value=" not in line and "check_files" not in line
    rc, stderr, _ = run_cli(base + ["INFERENCE.OUTPUT_PATH", "filled/", "DATASET.TILE_FILL_VALUE", "0"],
                            capsys, monkeypatch)
    assert rc == 0, stderr
    np.testing.assert_array_equal(_prediction("filled"), _prediction("zeros"))


def test_tile_cache_and_threads_reach_the_inference_volume(project):
    cfg = load_cfg(str(project), opts=["DATASET.TILE_CACHE_MB", "3", "DATASET.TILE_THREADS", "2",
                                       "DATASET.TILE_FILL_VALUE", "7"], inference=True)
    vol = _default_open_fn(cfg)("data/val_im.json")
    assert (vol.cache_bytes, vol.threads, vol.fill_value) == (3 << 20, 2, 7)
    plain = _default_open_fn(cfg)("data/val_im.h5")  # other formats get no tile options
    assert plain.shape == vol.shape
