"""File handles are opened lazily per process: pickles are small, forks reopen, workers read."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest
import tifffile
import zarr

from connectomics_data.geometry import Box
from connectomics_data.io import (
    ImageStackVolume,
    LazyArrayVolume,
    open_volume,
    write_hdf5,
    write_png_slices,
    write_tiff,
    write_zarr,
)

SHAPE = (6, 40, 48)
BOX = Box((1, -3, 10), (5, 20, 52))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("pickle")
    rng = np.random.default_rng(42)
    arr = rng.integers(0, 2**16, SHAPE, dtype=np.uint16)
    write_hdf5(d / "v.h5", arr)
    write_zarr(d / "v3.zarr", arr, chunks=(2, 16, 16))
    write_zarr(d / "v2.zarr", arr, chunks=(2, 16, 16), zarr_format=2)
    write_tiff(d / "mm.tif", arr)
    write_tiff(d / "pages.tif", arr, compression="zlib")
    tifffile.imwrite(
        d / "load.tif", arr, tile=(16, 16), compression="zlib", photometric="minisblack"
    )
    np.save(d / "v.npy", arr)
    write_png_slices(d / "png", arr)
    paths = {
        "hdf5": d / "v.h5",
        "zarr3": d / "v3.zarr",
        "zarr2": d / "v2.zarr",
        "tiff_memmap": d / "mm.tif",
        "tiff_pages": d / "pages.tif",
        "tiff_load": d / "load.tif",
        "npy": d / "v.npy",
        "png": str(d / "png" / "*.png"),
    }
    return arr, paths


def expected(arr: np.ndarray, box: Box, mode: str = "reflect") -> np.ndarray:
    before = [max(0, -a) for a in box.start]
    after = [max(0, b - n) for b, n in zip(box.stop, arr.shape)]
    padded = np.pad(arr, list(zip(before, after)), mode=mode)
    return padded[tuple(slice(a + w, b + w) for a, b, w in zip(box.start, box.stop, before))]


NAMES = ["hdf5", "zarr3", "zarr2", "tiff_memmap", "tiff_pages", "tiff_load", "npy", "png"]


@pytest.mark.parametrize("name", NAMES)
def test_pickle_roundtrip_is_small_and_reads(sources, name):
    arr, paths = sources
    vol = open_volume(paths[name], **({"strategy": "load"} if name == "tiff_load" else {}))
    assert isinstance(vol, LazyArrayVolume)
    assert not vol.is_open  # opening reads metadata only
    first = vol.read(BOX)
    assert vol.is_open
    blob = pickle.dumps(vol)
    assert len(blob) < 4000, len(blob)  # the volume is 23 kB: no data travels
    assert arr[0, 0].tobytes() not in blob
    clone = pickle.loads(blob)
    assert not clone.is_open
    np.testing.assert_array_equal(clone.read(BOX), first)
    np.testing.assert_array_equal(first, expected(arr, BOX))
    if name.startswith("tiff_"):
        assert vol.strategy == name.split("_")[1]


def test_close_and_reopen(sources):
    arr, paths = sources
    vol = open_volume(paths["hdf5"])
    with vol:
        vol.read(BOX)
        assert vol.is_open
    assert not vol.is_open
    np.testing.assert_array_equal(vol.read(BOX), expected(arr, BOX))


def _child_read(vol, box, queue):
    out = vol.read(box)
    queue.put((os.getpid(), vol._pid, out))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("name", ["hdf5", "zarr3", "tiff_pages", "png"])
def test_forked_child_reopens(sources, name):
    arr, paths = sources
    vol = open_volume(paths[name])
    vol.read(BOX)  # the parent holds an open handle when forking
    parent_handle = vol._array
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(vol, BOX, queue))
    proc.start()
    child_pid, handle_pid, out = queue.get(timeout=30)
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert handle_pid == child_pid != os.getpid()
    np.testing.assert_array_equal(out, expected(arr, BOX))
    assert vol._array is parent_handle  # the parent's handle is untouched
    np.testing.assert_array_equal(vol.read(BOX), expected(arr, BOX))


def test_dataloader_workers_read(sources):
    torch = pytest.importorskip("torch")
    arr, paths = sources
    vols = [open_volume(paths[n]) for n in ("hdf5", "zarr3", "tiff_pages", "npy")]
    for v in vols:
        v.read(Box((0, 0, 0), (1, 1, 1)))  # open in the parent first: workers must not reuse it
    boxes = [Box((z, -4 + z, 3 * z), (z + 3, 12 + z, 20 + 3 * z)) for z in range(-1, 5)]

    class Reads(torch.utils.data.Dataset):
        def __len__(self):
            return len(boxes) * len(vols)

        def __getitem__(self, i):
            v, b = vols[i % len(vols)], boxes[i // len(vols)]
            return torch.from_numpy(v.read(b).astype(np.int64))

    ctx = "fork" if "fork" in mp.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        Reads(), batch_size=None, num_workers=2, multiprocessing_context=ctx
    )
    for i, out in enumerate(loader):
        np.testing.assert_array_equal(out.numpy(), expected(arr, boxes[i // len(vols)]))


def test_slice_stack_pickle_keeps_paths_not_pixels(sources):
    _, paths = sources
    vol = open_volume(paths["png"], threads=2)
    assert isinstance(vol, ImageStackVolume)
    vol.read(BOX)
    clone = pickle.loads(pickle.dumps(vol))
    assert clone.paths == vol.paths and clone.threads == 2
    np.testing.assert_array_equal(clone.read(BOX), vol.read(BOX))
    vol.close()


def test_zarr_handle_is_not_pickled(sources):
    _, paths = sources
    vol = open_volume(paths["zarr3"])
    vol.read(BOX)
    assert isinstance(vol._array, zarr.Array)
    state = vol.__getstate__()
    assert state["_array"] is None and state["_resource"] is None and state["_pid"] is None


@pytest.mark.parametrize("name", ["hdf5", "tiff_pages", "png", "zarr3"])
def test_threads_share_one_volume(sources, name):
    from concurrent.futures import ThreadPoolExecutor

    arr, paths = sources
    vol = open_volume(paths[name])
    boxes = [Box((z % 4, -z, 2 * z), (z % 4 + 2, 30 - z, 40 + 2 * z)) for z in range(16)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(vol.read, boxes))
    for box, out in zip(boxes, outs):
        np.testing.assert_array_equal(out, expected(arr, box))
