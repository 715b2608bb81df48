"""scripts/train.py with image and label as Neuroglancer precomputed and as OME-Zarr, picked at
level 1 by DATASET.VOXEL_SIZE; --inference writes an OME-Zarr output carrying the voxel size."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _pyramids_common import SPACE, ome_zarr, precomputed
from _trainer_common import tiny_project

from connectomics_data.config import load_cfg
from connectomics_data.engine.cli import main
from connectomics_data.io import open_volume

LEVEL1 = [40, 8, 8]



def _tiny(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ("train_im", "train_lb", "val_im"):
        with h5py.File(root / "data" / f"{name}.h5", "r") as f:
            out[name] = f["main"][:]
    return out


def _levels(arr: np.ndarray) -> list[np.ndarray]:
    """Level 0 is twice as fine in y and x; level 1 is the tiny volume itself."""
    return [np.repeat(np.repeat(arr, 2, axis=1), 2, axis=2), arr]


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    config = tiny_project(tmp_path, INFERENCE={"OUTPUT_ACT": ["sigmoid"], "OUTPUT_PATH": "out/test/",
                                               "STRIDE": [2, 8, 8], "AUG_NUM": 0, "OUTPUT_FORMAT": "zarr"})
    data = _tiny(tmp_path)
    sizes = [(40.0, 4.0, 4.0), (40.0, 8.0, 8.0)]
    d = tmp_path / "data"
    precomputed(d / "im_pc", _levels(data["train_im"]), sizes, chunk=(16, 16, 4))
    precomputed(d / "lb_pc", _levels(data["train_lb"].astype(np.uint64)), sizes,
                "compressed_segmentation", "segmentation", sharded=True, chunk=(16, 16, 4))
    scales = [[40, 4, 4], [40, 8, 8]]
    for name in ("train_im", "train_lb", "val_im"):
        ome_zarr(d / f"{name}.ome.zarr", _levels(data[name]), scales, SPACE, "0.5", chunks=(4, 32, 32))
    return config


def _train(config: Path, out: str, image: str, label: str, *extra: str) -> int:
    return main(["--config-file", str(config), "DATASET.IMAGE_NAME", image, "DATASET.LABEL_NAME", label,
                 "DATASET.VOXEL_SIZE", str(LEVEL1), "DATASET.OUTPUT_PATH", out,
                 "SOLVER.ITERATION_TOTAL", "2", *extra])


def test_train_on_precomputed_and_ome_zarr_level_1_and_predict_ome_zarr(project: Path, capsys):
    assert _train(project, "pc/", "im_pc", "lb_pc") == 0
    assert Path("pc/checkpoint_000002.pth.tar").is_file()
    assert load_cfg("pc/config.yaml").DATASET.VOXEL_SIZE == LEVEL1
    assert _train(project, "ome/", "train_im.ome.zarr", "train_lb.ome.zarr") == 0
    assert Path("ome/checkpoint_000002.pth.tar").is_file()
    capsys.readouterr()
    assert main(["--config-file", str(project), "--inference", "--checkpoint", "ome/checkpoint_000002.pth.tar",
                 "DATASET.VOXEL_SIZE", str(LEVEL1), "INFERENCE.IMAGE_NAME", "val_im.ome.zarr"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "wrote out/test/result.zarr"
    meta = json.loads(Path("out/test/result.zarr/zarr.json").read_text())["attributes"]
    assert meta["connectomics_data"] == "prediction"
    (ms,) = meta["ome"]["multiscales"]
    assert meta["ome"]["version"] == "0.5"
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert ms["axes"][0]["type"] == "channel" and ms["axes"][1]["unit"] == "nanometer"
    assert ms["datasets"] == [{"path": "vol0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 40.0, 8.0, 8.0]}]}]
    pred = open_volume("out/test/result.zarr")  # our reader takes it as OME-Zarr
    assert pred.voxel_size == (40.0, 8.0, 8.0) and pred.shape == (1, 4, 40, 40)


def test_level_mismatch_and_missing_info_are_one_error_line(project: Path, capsys):
    with h5py.File("data/train_lb.h5", "r+") as f:
        f["main"].attrs["resolution"] = [40, 8, 8]
    # no level chosen: the image's finest level (4 x 4 x 40 nm) against an 8 x 8 x 40 nm label
    assert _train(project, "bad/", "train_im.ome.zarr", "train_lb.h5", "DATASET.VOXEL_SIZE", "None") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "train_im.ome.zarr/0 has voxel size (40, 4, 4) nm" in err[0]
    assert "train_lb.h5 has (40, 8, 8) nm" in err[0]
    # level 1 chosen: the same pair trains
    assert _train(project, "ok/", "train_im.ome.zarr", "train_lb.h5", "SOLVER.ITERATION_TOTAL", "1") == 0
    capsys.readouterr()
    # an HDF5 label whose resolution is not the chosen one
    assert _train(project, "bad/", "train_im.ome.zarr", "train_lb.h5", "DATASET.VOXEL_SIZE", "[40, 4, 4]") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_lb.h5: no level has the voxel size (40, 4, 4) nm" in err[0]
    assert _train(project, "bad/", "im_pc", "lb_pc", "DATASET.VOXEL_SIZE", "[40, 16, 16]") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no level has the voxel size (40, 16, 16) nm" in err[0]
    assert "level 0: (40, 4, 4) nm, level 1: (40, 8, 8) nm" in err[0]
    Path("data/empty_pc").mkdir()
    assert _train(project, "bad/", "precomputed://file://" + str(Path("data/empty_pc").resolve()), "lb_pc") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty_pc: no 'info' file" in err[0]


def test_lazy_tensorstore_volumes_are_read_in_fork_server_workers(project: Path):
    from connectomics_data.datasets import build_dataset
    from connectomics_data.loader.build import build_dataloader

    opts = ["DATASET.IMAGE_NAME", "im_pc", "DATASET.LABEL_NAME", "lb_pc", "DATASET.VOXEL_SIZE", str(LEVEL1),
            "SYSTEM.NUM_CPUS", "2", "SYSTEM.LOADER_MODE", "process"]
    cfg = load_cfg(str(project), opts=opts)  # preloaded into shared memory: workers fork as usual
    assert build_dataloader(cfg, "train", dataset=build_dataset(cfg, "train")).multiprocessing_context is None
    cfg = load_cfg(str(project), opts=[*opts, "DATASET.PRELOAD", "False"])
    dataset = build_dataset(cfg, "train")
    dataset[0]  # the main process reads through TensorStore first
    loader = build_dataloader(cfg, "train", dataset=dataset)
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    batch = next(iter(loader))
    same = next(iter(build_dataloader(cfg, "train", dataset=dataset, num_workers=0)))
    assert batch.image.shape[0] == 2
    assert torch.equal(batch.image, same.image) and torch.equal(batch.targets[0], same.targets[0])
    # loader threads (the default mode) never fork: the same batch from the same process
    threads = load_cfg(str(project), opts=[*opts[:-1], "thread", "DATASET.PRELOAD", "False"])
    batch = next(iter(build_dataloader(threads, "train", dataset=dataset)))
    assert torch.equal(batch.image, same.image) and torch.equal(batch.targets[0], same.targets[0])
