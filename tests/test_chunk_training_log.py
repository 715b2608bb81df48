"""Chunked training (DATASET.DO_CHUNK_TITLE) through the CLI: log.jsonl says which chunk trains,
when it switches, how long each read took, its CPU time and the /dev/shm in use; every record has
a timestamp; the reads' cost is summarised; no chunk is read that the run never uses; the slots
are freed before the final validation."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from _chunked_common import CHUNKED, SHM, tiled_project
from _trainer_common import read_log

from connectomics_data.config import load_cfg
from connectomics_data.datasets.chunk_schedule import ChunkSchedule
from connectomics_data.engine import trainer as trainer_module
from connectomics_data.engine.cli import main


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


def test_read_threads_nice_cpu_time_and_no_read_past_the_last_slot(tmp_path):
    import threading

    import numpy as np
    from _tiles_common import write_tiles

    from connectomics_data.datasets.chunk_store import ChunkSource, ChunkStore
    from connectomics_data.geometry import ChunkGrid
    from connectomics_data.io import open_tiled_volume

    vol = np.random.default_rng(0).integers(0, 256, (6, 64, 64), dtype=np.uint8)
    image = open_tiled_volume(write_tiles(tmp_path, vol, (16, 16)), threads=4, cache_bytes=0)

    def priority(images, labels, masks):  # runs in the loader thread
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    src = ChunkSource(image, None, None, ChunkGrid(vol.shape, (1, 1, 3), overlap=False), "v")
    store = ChunkStore([src], ChunkSchedule([0, 1, 2], 1, 1), (1, 2, 2), root=str(tmp_path),
                       derive=priority, read_threads=2, read_nice=3, last_slot=1)
    try:
        store.advance(0)
        store.wait(0)
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        from connectomics_data.datasets.chunk_slots import open_slot

        data = open_slot(store.directory, 0, 10)
        assert data.derived == min(19, mine + 3)  # the loader thread runs 3 nicer than training
        np.testing.assert_array_equal(data.images[0][1:-1, 2:-2, 2:-2], vol[tuple(store.sources[0].grid[data.chunk].slices())])
        reader = store._readers[0]["img"]
        assert reader is not image and reader.threads == 2 and image.threads == 4
        stats = store.history[0]
        assert stats.cpu_s > 0 and stats.read_s > 0
        assert store.live_slots() == [0, 1]  # slot 1 prefetched
        store.advance(1)
        assert store.live_slots() == [0, 1]  # slot 2 is past the last slot: never read
        store.wait(1)
        assert not store.reading() and store.shm_bytes() > 0
    finally:
        store.close()
