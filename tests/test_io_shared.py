"""SharedArrayVolume: exact reads, tiny pickles, spawn children attach without copying, unlink."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.utils.data

from connectomics_data.geometry import Box
from connectomics_data.io import ArrayVolume, SharedArrayVolume

sys.path.insert(0, str(Path(__file__).resolve().parent))  # spawn children import _shared_child

import _shared_child  # noqa: E402

SHM = Path("/dev/shm")


def segment(vol: SharedArrayVolume) -> Path:
    return SHM / vol._name.lstrip("/")


@pytest.mark.parametrize("shape,dtype", [((5, 9, 11), np.uint8), ((2, 5, 9, 11), np.float32),
                                         ((4, 6, 7), np.uint64)])
def test_reads_equal_the_array(shape, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.random(shape) * 1000).astype(dtype)
    vol, ref = SharedArrayVolume(arr, path="x.h5"), ArrayVolume(arr)
    assert vol.shape == shape and vol.dtype == dtype and vol.path == "x.h5"
    np.testing.assert_array_equal(vol.read(), arr)
    for box in (Box((1, 2, 3), (4, 7, 9)), Box((-3, -5, 4), (6, 12, 20))):
        for mode in ("reflect", "symmetric", "edge", "constant"):
            np.testing.assert_array_equal(vol.read(box, mode), ref.read(box, mode))


def test_array_is_a_read_only_copy():
    arr = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    vol = SharedArrayVolume(arr)
    arr[0, 0, 0] = 99  # the source can change; the volume holds its own copy
    assert vol.array[0, 0, 0] == 0
    with pytest.raises(ValueError):
        vol.array[0, 0, 0] = 1


def test_pickle_is_small_and_attaches_to_the_same_segment():
    arr = np.random.default_rng(1).integers(0, 255, (32, 256, 256), dtype=np.uint8)  # 2 MiB
    vol = SharedArrayVolume(arr, path="big.h5")
    blob = pickle.dumps(vol)
    assert len(blob) < 1024
    other = pickle.loads(blob)
    assert other._name == vol._name and other.path == "big.h5"
    np.testing.assert_array_equal(other.read(Box((3, 10, 20), (9, 70, 90))), arr[3:9, 10:70, 20:90])
    assert np.shares_memory(other.array, other.array)  # a view, not a copy of bytes
    del other
    gc.collect()
    assert segment(vol).exists()  # an attached copy never unlinks


def test_attaching_leaves_the_resource_tracker_alone(monkeypatch):
    """Workers share the owner's tracker: an attach must neither register nor unregister."""
    from multiprocessing import resource_tracker

    vol = SharedArrayVolume(np.ones((2, 4, 4), np.uint8))
    calls = []
    monkeypatch.setattr(resource_tracker, "register", lambda *a: calls.append(("register", a)))
    monkeypatch.setattr(resource_tracker, "unregister", lambda *a: calls.append(("unregister", a)))
    other = pickle.loads(pickle.dumps(vol))
    del other
    gc.collect()
    assert calls == []


def test_owner_unlinks_on_garbage_collection():
    vol = SharedArrayVolume(np.ones((4, 8, 8), np.uint8))
    path = segment(vol)
    assert path.exists() and path.stat().st_size >= 256
    del vol
    gc.collect()
    assert not path.exists()


def test_spawned_process_reads_the_same_data():
    arr = np.random.default_rng(2).integers(0, 255, (6, 40, 50), dtype=np.uint8)
    vol = SharedArrayVolume(arr)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    box = ((-2, 5, 30), (4, 45, 60))
    proc = ctx.Process(target=_shared_child.read_box, args=(vol, box, queue))
    proc.start()
    crop, total, writeable = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(crop, ArrayVolume(arr).read(Box(*box), "reflect"))
    assert total == int(arr.sum(dtype=np.uint64)) and not writeable
    assert segment(vol).exists()  # the child's exit did not unlink the owner's segment
    np.testing.assert_array_equal(vol.read(), arr)


@pytest.mark.slow
def test_spawn_workers_share_the_pages():
    """Two 'spawn' DataLoader workers read a 200 MB volume end to end: the pages show up as
    shared memory (RssShmem) in each worker, their private memory (RssAnon) barely grows."""
    shape = (200, 1024, 1024)
    nbytes_kb = int(np.prod(shape)) // 1024
    row = (np.arange(shape[2]) % 251).astype(np.uint8)
    vol = SharedArrayVolume(np.broadcast_to(row, shape))  # a view: the parent holds one copy only
    expected = int(vol.array[0].sum(dtype=np.uint64)) * shape[0]
    loader = torch.utils.data.DataLoader(_shared_child.TouchAllDataset(vol, 2), batch_size=None, num_workers=2,
                                         multiprocessing_context="spawn")
    rows = [tuple(int(v) for v in row) for row in loader]
    assert len({r[0] for r in rows}) == 2 and all(r[0] != os.getpid() for r in rows)
    for _pid, total, anon0, anon1, shm0, shm1 in rows:
        assert total == expected
        assert shm1 - shm0 > 0.9 * nbytes_kb  # every page read through the shared mapping
        assert anon1 - anon0 < 0.05 * nbytes_kb  # and none copied into the worker
