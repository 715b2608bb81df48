"""Chunked training (DATASET.DO_CHUNK_TITLE) through the CLI: log.jsonl says which chunk trains,
when it switches, how long each read took, its CPU time and the /dev/shm in use; every record has
a timestamp; the reads' cost is summarised; no chunk is read that the run never uses; the slots
are freed before the final validation."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
import torch
from _chunked_common import CHUNKED, SHM, tiled_project
from _trainer_common import read_log

from connectomics_data.config import load_cfg
from connectomics_data.datasets.chunk_schedule import ChunkSchedule
from connectomics_data.engine import trainer as trainer_module
from connectomics_data.engine.cli import main


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_log_reports_chunks_reads_and_shm_and_frees_slots_before_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg_path = tiled_project(tmp_path)
    mine = f"{SHM}/cdata-chunks-{os.getpid()}-*"
    before = set(glob.glob(mine))
    seen_at_validation: list[set] = []
    original = trainer_module.Trainer.validate

    def validate(self):
        seen_at_validation.append(set(glob.glob(mine)) - before)
        return original(self)

    monkeypatch.setattr(trainer_module.Trainer, "validate", validate)
    opts = [*CHUNKED, "SOLVER.ITERATION_TOTAL", "6", "SOLVER.ITERATION_SAVE", "6",
            "DATASET.VAL_IMAGE_NAME", "val_im.h5", "DATASET.VAL_LABEL_NAME", "val_lb.h5"]
    assert main(["--config-file", str(cfg_path), *opts]) == 0
    err = capsys.readouterr().err
    assert "chunked training: 2 chunks, 2 iterations each; reading chunk" in err
    assert "chunk reads: 3 in the background" in err
    assert seen_at_validation == [set()]  # the slots were gone when the final validation ran
    assert set(glob.glob(mine)) == before

    records = read_log(Path("out/log.jsonl"))
    times = [r["time"] for r in records]
    assert all(isinstance(t, float) for t in times) and times == sorted(times)
    cfg = load_cfg(str(cfg_path), opts=opts)
    schedule = ChunkSchedule(range(2), 2, 2, seed=int(cfg.SYSTEM.SEED))
    switches = [r for r in records if r.get("event") in ("chunk_start", "chunk_switch")]
    assert [(r["event"], r["iteration"], r["slot"], r["chunk"]) for r in switches] == [
        ("chunk_start", 1, 0, schedule.chunk_of_slot(0)),
        ("chunk_switch", 3, 1, schedule.chunk_of_slot(1)),
        ("chunk_switch", 5, 2, schedule.chunk_of_slot(2)),
    ]
    for r in switches:
        assert r["read_s"] > 0 and r["read_cpu_s"] > 0 and r["shm_mb"] > 0 and r["wait_s"] >= 0
    steps = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [r["chunk"] for r in steps] == [schedule.chunk_of_slot((r["iteration"] - 1) // 2) for r in steps]
    (summary,) = [r for r in records if r.get("event") == "chunk_reads"]
    assert summary["reads"] == 3  # slots 0, 1, 2: the chunk of slot 3 is never read
    assert summary["read_cpu_s_total"] > 0
    # iterations 2, 4, 6 are timed (1, 3, 5 start a slot and have their own records)
    assert summary["iterations_while_reading"] + summary["iterations_otherwise"] == 3
    assert any("val_dice" in r for r in records)
