"""Checkpoint resume through scripts/train.py's CLI: a resumed run continues where the
interrupted one stopped and ends bit-identical to an uninterrupted run (CPU, NUM_CPUS 0);
SOLVER.ITERATION_RESTART loads the weights only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _trainer_common import read_log, tiny_project

from connectomics_data.config import load_cfg
from connectomics_data.engine import read_checkpoint
from connectomics_data.engine.cli import main
from connectomics_data.engine.trainer import Trainer


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tiny_project(tmp_path)


def assert_same_state(a: dict, b: dict, path: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_continues_at_iteration_3_and_matches_an_uninterrupted_run(project: Path):
    # validation after every iteration too: it must not perturb training
    common = ["--config-file", str(project), "DATASET.VAL_IMAGE_NAME", "val_im.h5",
              "DATASET.VAL_LABEL_NAME", "val_lb.h5", "SOLVER.ITERATION_VAL", "1"]
    assert main(common + ["DATASET.OUTPUT_PATH", "full/"]) == 0
    assert sorted(p.name for p in Path("full").glob("*.pth.tar")) == [
        "checkpoint_000002.pth.tar", "checkpoint_000004.pth.tar"]
    # the interrupted run: resume from its iteration-2 checkpoint into another folder
    assert main(common + ["--checkpoint", "full/checkpoint_000002.pth.tar",
                          "DATASET.OUTPUT_PATH", "resumed/"]) == 0
    full = [r for r in read_log(Path("full/log.jsonl")) if "loss" in r]
    resumed = [r for r in read_log(Path("resumed/log.jsonl")) if "loss" in r]
    assert [r["iteration"] for r in full] == [1, 2, 3, 4]
    assert [r["iteration"] for r in resumed] == [3, 4]
    val_full = [r for r in read_log(Path("full/log.jsonl")) if "val_dice" in r]
    val_resumed = [r for r in read_log(Path("resumed/log.jsonl")) if "val_dice" in r]
    assert [r["iteration"] for r in val_full] == [1, 2, 3, 4]
    untimed = [[{k: v for k, v in r.items() if k != "time"} for r in rs] for rs in (val_resumed, val_full)]
    assert untimed[0] == untimed[1][2:]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[2:]]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in full[2:]]
    assert not Path("resumed/checkpoint_000002.pth.tar").exists()
    a = read_checkpoint("full/checkpoint_000004.pth.tar")
    b = read_checkpoint("resumed/checkpoint_000004.pth.tar")
    assert a["iteration"] == b["iteration"] == 4
    for key in ("model", "optimizer", "lr_scheduler"):
        assert_same_state(a[key], b[key], key)


def test_resume_with_workers_matches_too(project: Path):
    """Samples are a pure function of (seed, index), so 2 loader workers give the same run."""
    common = ["--config-file", str(project), "SYSTEM.NUM_CPUS", "2"]
    assert main(common + ["DATASET.OUTPUT_PATH", "full/"]) == 0
    assert main(common + ["--checkpoint", "full/checkpoint_000002.pth.tar",
                          "DATASET.OUTPUT_PATH", "resumed/"]) == 0
    a = read_checkpoint("full/checkpoint_000004.pth.tar")
    b = read_checkpoint("resumed/checkpoint_000004.pth.tar")
    assert_same_state(a["model"], b["model"], "model")


def test_iteration_restart_loads_weights_only(project: Path):
    assert main(["--config-file", str(project), "DATASET.OUTPUT_PATH", "first/",
                 "SOLVER.ITERATION_TOTAL", "2"]) == 0
    saved = read_checkpoint("first/checkpoint_000002.pth.tar")
    cfg = load_cfg(str(project), opts=["SOLVER.ITERATION_RESTART", "True",
                                       "DATASET.OUTPUT_PATH", "restart/"])
    trainer = Trainer(cfg, "cpu", checkpoint="first/checkpoint_000002.pth.tar", show_progress=False)
    assert trainer.start_iteration == 0
    assert_same_state(trainer.model.state_dict(), saved["model"], "model")
    assert trainer.optimizer.state_dict()["state"] == {}  # fresh optimizer
    assert trainer.scheduler.last_epoch == 0  # the schedule starts again (warmup included)
    trainer.train()
    assert [r["iteration"] for r in read_log(Path("restart/log.jsonl"))] == [1, 2, 3, 4]
    # through the CLI: the same run
    assert main(["--config-file", str(project), "--checkpoint", "first/checkpoint_000002.pth.tar",
                 "SOLVER.ITERATION_RESTART", "True", "DATASET.OUTPUT_PATH", "restart_cli/"]) == 0
    assert_same_state(read_checkpoint("restart/checkpoint_000004.pth.tar")["model"],
                      read_checkpoint("restart_cli/checkpoint_000004.pth.tar")["model"], "model")


def test_tile_dataset_resume_matches_an_uninterrupted_run(project: Path):
    """DATASET.DO_CHUNK_TITLE 1: chunk schedule and samples follow the global sample index, so
    resuming at iteration 2 (a new chunk slot, DATA_CHUNK_ITER 1) ends bit-identical too."""
    import h5py

    from connectomics_data.io import make_tile_json, write_png_slices

    for name in ("train_im", "train_lb"):
        with h5py.File(f"data/{name}.h5", "r") as f:
            write_png_slices(f"data/{name}", f["main"][:])
        make_tile_json(f"data/{name}", f"data/{name}.json", relative=True, progress=False)
    common = ["--config-file", str(project), "DATASET.DO_CHUNK_TITLE", "1",
              "DATASET.IMAGE_NAME", "train_im.json", "DATASET.LABEL_NAME", "train_lb.json",
              "DATASET.DATA_CHUNK_NUM", "[1, 1, 2]", "DATASET.DATA_CHUNK_ITER", "1",
              "DATASET.PAD_SIZE", "[1, 12, 12]"]
    assert main(common + ["DATASET.OUTPUT_PATH", "full/"]) == 0
    assert main(common + ["--checkpoint", "full/checkpoint_000002.pth.tar",
                          "DATASET.OUTPUT_PATH", "resumed/"]) == 0
    full, resumed = read_log(Path("full/log.jsonl")), read_log(Path("resumed/log.jsonl"))
    full, resumed = [r for r in full if "loss" in r], [r for r in resumed if "loss" in r]  # no chunk events
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[2:]]
    a = read_checkpoint("full/checkpoint_000004.pth.tar")
    b = read_checkpoint("resumed/checkpoint_000004.pth.tar")
    for key in ("model", "optimizer"):
        assert_same_state(a[key], b[key], key)
