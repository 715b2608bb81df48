"""Shared-memory chunk stores of chunked training (DATASET.DO_CHUNK_TITLE) never outlive a run:
SIGTERM / SIGHUP act like Ctrl-C (store removed, one line, exit 128 + signal); after kill -9
the store is left over, ``scripts/chunk_stores.py`` lists it and ``--remove`` frees it, and the
next chunk store created in the same root removes it by itself. /dev/shm is checked before and
after every kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _chunked_common import (
    CHUNKED,
    REPO,
    SHM,
    start_train,
    stores_of,
    tiled_project,
    wait_for_training,
)

from connectomics_data.datasets import chunk_cleanup
from connectomics_data.datasets.chunk_schedule import ChunkSchedule
from connectomics_data.datasets.chunk_store import ChunkSource, ChunkStore
from connectomics_data.geometry import ChunkGrid
from connectomics_data.io.base import ArrayVolume

pytestmark = pytest.mark.skipif(not os.access(SHM, os.W_OK), reason="needs a writable /dev/shm")

LONG = ["SOLVER.ITERATION_TOTAL", "100000", "SOLVER.ITERATION_SAVE", "100000"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tiled_project(tmp_path)


def test_sigterm_removes_the_store_like_ctrl_c(project, tmp_path):
    proc = start_train(tmp_path, project, *CHUNKED, *LONG, "SYSTEM.NUM_CPUS", "1")
    before = wait_for_training(proc, tmp_path / "out" / "log.jsonl")
    assert len(before) == 1 and os.listdir(before[0])  # the run's slots are in /dev/shm
    assert [s.alive for s in chunk_cleanup.list_stores(SHM) if s.path == before[0]] == [True]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stores_of(proc.pid) == [], "the chunk store survived SIGTERM"
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last == "terminated by SIGTERM before the first checkpoint was written (nothing to resume from)", stderr
    # no traceback of the main process (a DataLoader worker cut off mid-transfer may print one)
    assert "Terminated" not in stderr and "KeyboardInterrupt" not in stderr, stderr


STORE_CHILD = """
import sys, time
import numpy as np
from connectomics_data.datasets.chunk_schedule import ChunkSchedule
from connectomics_data.datasets.chunk_store import ChunkSource, ChunkStore
from connectomics_data.geometry import ChunkGrid
from connectomics_data.io.base import ArrayVolume
vol = ArrayVolume(np.ones((4, 64, 64), np.uint8))
src = ChunkSource(vol, None, None, ChunkGrid(vol.spatial_shape, (1, 1, 1), overlap=False), "v")
store = ChunkStore([src], ChunkSchedule([0], 1, 1), 0)
store.wait(0)
print(store.directory, flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt as err:
    print("handled", type(err).__name__, flush=True)
    raise SystemExit(128 + err.signum)
"""


def test_sighup_in_a_plain_program_removes_the_store():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", STORE_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    directory = proc.stdout.readline().strip()
    assert stores_of(proc.pid) == [directory] and os.listdir(directory)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "handled Terminated" and proc.returncode == 128 + signal.SIGHUP, err
    assert stores_of(proc.pid) == [] and not os.path.exists(directory)


def _store(root: str | None = None) -> ChunkStore:
    vol = ArrayVolume(np.zeros((4, 8, 8), np.uint8))
    src = ChunkSource(vol, None, None, ChunkGrid(vol.spatial_shape, (1, 1, 1), overlap=False), "v")
    return ChunkStore([src], ChunkSchedule([0], 1, 1), 0, root=root)


def test_kill_9_leftover_is_listed_then_removed_at_the_next_start(project, tmp_path):
    proc = start_train(tmp_path, project, *CHUNKED, *LONG, "SYSTEM.NUM_CPUS", "0")
    dirs = wait_for_training(proc, tmp_path / "out" / "log.jsonl")
    proc.kill()
    proc.communicate(timeout=60)
    assert stores_of(proc.pid) == dirs  # kill -9: the store is left behind
    left = dirs[0]
    try:
        listed = subprocess.run([sys.executable, str(REPO / "scripts" / "chunk_stores.py")],
                                capture_output=True, text=True, timeout=60, cwd=str(REPO))
        assert listed.returncode == 0
        line = [ln for ln in listed.stdout.splitlines() if ln.startswith(left + " ")]
        assert len(line) == 1 and line[0].endswith("left over (owner gone)"), listed.stdout
        assert "rerun with --remove" in listed.stdout
        assert os.path.isdir(left)  # listing removes nothing
        with pytest.warns(chunk_cleanup.LeftoverChunkStoreWarning, match=os.path.basename(left)):
            store = _store()
        assert not os.path.exists(left)
        # a live store (ours) is never taken for a leftover
        assert [s.alive for s in chunk_cleanup.list_stores(SHM) if s.path == store.directory] == [True]
        chunk_cleanup.remove_leftovers(SHM, warn=False)
        assert os.path.isdir(store.directory)
        store.close()
        assert not os.path.exists(store.directory)
    finally:
        shutil.rmtree(left, ignore_errors=True)


def test_remove_command_frees_leftovers_and_keeps_live_stores(tmp_path, capsys):
    store = _store(str(tmp_path))
    dead = tmp_path / "cdata-chunks-999999999-x"
    dead.mkdir()
    (dead / "owner.lock").write_text("{}")  # nobody holds its lock
    (dead / "s000000.img0.npy").write_bytes(b"x" * 8192)
    assert chunk_cleanup.main(["--root", str(tmp_path), "--remove"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 left-over store(s)" in out and "in use" in out
    assert not dead.exists() and os.path.isdir(store.directory)
    store.close()
    assert chunk_cleanup.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no chunk stores in {tmp_path}"


def test_store_without_lock_falls_back_to_the_pid(tmp_path):
    dead = tmp_path / "cdata-chunks-999999999-old"  # no such pid
    dead.mkdir()
    (dead / "s000000.img0.npy").write_bytes(b"x" * 4096)
    os.utime(dead, (0, 0))
    alive = tmp_path / f"cdata-chunks-{os.getpid()}-old"
    alive.mkdir()
    os.utime(alive, (0, 0))
    found = {os.path.basename(s.path): s.alive for s in chunk_cleanup.list_stores(str(tmp_path))}
    assert found == {dead.name: False, alive.name: True}
    assert [os.path.basename(s.path) for s in chunk_cleanup.remove_leftovers(str(tmp_path), warn=False)] == [dead.name]
    assert alive.is_dir() and not dead.exists()
