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


def test_sub_range_writes_only_the_region_with_its_offset(tmp_path):
    """Identity network: the output is exactly the input's region, starting at output (0, 0, 0),
    and ``region_offset_zyx`` says where that lies in the input."""
    from test_inference_chunked import NORM, _array, _engine

    from connectomics_data.geometry import ChunkGrid
    from connectomics_data.inference import predict_chunked
    from connectomics_data.inference.chunked import REGION_OFFSET_ATTR
    from connectomics_data.io.base import ArrayVolume

    a = _array((10, 40, 36))
    cr = [2, 9, 5, 37, 3, 30]
    grid = ChunkGrid(a.shape, (2, 2, 1), overlap=False, coord_range=cr)
    predict_chunked(ArrayVolume(a), grid, _engine(lambda x: x), tmp_path / "r.zarr", normalizer=NORM)
    group = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    out = group["vol0"][:]
    assert out.shape == (1, 7, 32, 27)
    assert group.attrs[REGION_OFFSET_ATTR] == [2, 5, 3] and group.attrs["source_shape_zyx"] == [10, 40, 36]
    np.testing.assert_allclose(out[0], NORM(a)[2:9, 5:37, 3:30], atol=2e-6)


def test_inference_chunk_keys_override_the_training_ones(project, capsys, monkeypatch):
    """Training chunks (DATASET.*) stay as they are; INFERENCE.DATA_CHUNK_NUM / DATA_COORD_RANGE
    decide the inference chunks and region."""
    base = ["--config-file", str(project), *INFER]
    assert run_cli(base + ["INFERENCE.OUTPUT_PATH", "plain/"], capsys, monkeypatch)[0] == 0
    rc, stderr, _ = run_cli(base + ["INFERENCE.OUTPUT_PATH", "over/", "DATASET.DATA_CHUNK_NUM", "[2, 2, 2]",
                                    "INFERENCE.DATA_CHUNK_NUM", "[1, 1, 2]"], capsys, monkeypatch)
    assert rc == 0, stderr
    assert zarr.open_group("over/result.zarr", mode="r").attrs["chunk_num"] == [1, 1, 2]
    assert sorted(p.name for p in Path("over/result.zarr.progress").iterdir()) == [
        "chunk_000000.json", "chunk_000001.json"]
    np.testing.assert_array_equal(_prediction("over"), _prediction("plain"))
    # another chunking into the same output: refused, naming what to do through the config
    rc, stderr, _ = run_cli(base + ["INFERENCE.OUTPUT_PATH", "plain/", "INFERENCE.DATA_CHUNK_NUM", "[1, 1, 1]"],
                            capsys, monkeypatch)
    line = error_line(stderr)
    assert rc == 2 and "another chunking or region" in line
    assert "plain/result.zarr.progress, or set another INFERENCE.OUTPUT_PATH / OUTPUT_NAME" in line
    rc, stderr, _ = run_cli(base + ["INFERENCE.OUTPUT_PATH", "region/", "DATASET.DATA_COORD_RANGE",
                                    "[0, 4, 0, 40, 0, 40]", "INFERENCE.DATA_COORD_RANGE", "[1, 4, 8, 40, 0, 24]"],
                            capsys, monkeypatch)
    assert rc == 0, stderr
    group = zarr.open_group("region/result.zarr", mode="r")
    assert group["vol0"].shape == (1, 3, 32, 24) and group.attrs["region_offset_zyx"] == [1, 8, 0]
    rc, stderr, _ = run_cli(base + ["INFERENCE.OUTPUT_PATH", "bad/", "INFERENCE.DATA_CHUNK_NUM", "[1, 1, 90]"],
                            capsys, monkeypatch)
    line = error_line(stderr)
    assert rc == 2 and "INFERENCE.DATA_CHUNK_NUM [1, 1, 90]" in line and "val_im.json" in line


def test_rerun_says_which_chunks_were_skipped(project, capsys, monkeypatch):
    base = ["--config-file", str(project), *INFER, "INFERENCE.OUTPUT_PATH", "again/"]
    assert run_cli(base, capsys, monkeypatch)[0] == 0
    capsys.readouterr()
    from connectomics_data.engine.cli import main

    assert main(base) == 0
    out = capsys.readouterr().out
    assert "skipped 2 chunk(s) already predicted into again/result.zarr (chunk ids 0, 1; their markers " \
           "are in again/result.zarr.progress)" in out
    assert "skipped (output exists)" not in out


def test_interrupt_message_names_the_checkpoint_or_says_there_is_none(tmp_path):
    from types import SimpleNamespace

    from connectomics_data.datasets.chunk_cleanup import Terminated
    from connectomics_data.engine.cli import interrupted_message

    cfg = SimpleNamespace(DATASET=SimpleNamespace(OUTPUT_PATH=str(tmp_path)))
    assert interrupted_message(KeyboardInterrupt(), cfg, False) == \
        "interrupted before the first checkpoint was written (nothing to resume from)"
    (tmp_path / "checkpoint_latest.txt").write_text("checkpoint_000004.pth.tar\n")
    ckpt = tmp_path / "checkpoint_000004.pth.tar"
    assert interrupted_message(Terminated(15), cfg, False) == \
        f"terminated by SIGTERM: the last checkpoint written, {ckpt}, is intact (resume with --checkpoint {ckpt})"
    assert interrupted_message(KeyboardInterrupt(), cfg, True) == \
        "interrupted: finished outputs are kept; run the same command again to resume"
