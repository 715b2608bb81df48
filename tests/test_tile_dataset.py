"""TileDataset: chunk data with halo, chunk schedule, streaming through a DataLoader."""

from __future__ import annotations

import gc
import glob
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.utils.data
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.config import get_cfg_defaults
from connectomics_data.datasets import TileDataset, build_tile_dataset
from connectomics_data.datasets.chunk_schedule import ChunkSchedule, select_chunk_ids
from connectomics_data.datasets.chunk_slots import open_slot
from connectomics_data.datasets.chunk_store import ChunkSource, ChunkStore
from connectomics_data.errors import ConfigError, TileJSONError
from connectomics_data.geometry import Box, ChunkGrid
from connectomics_data.io import open_tiled_volume
from connectomics_data.io.base import ArrayVolume
from connectomics_data.loader import collate_samples
from tests._tiles_common import em_like, write_tiles

SHAPE = (12, 50, 46)  # 50 = 3 x 16 + 2, 46 = 2 x 20 + 6: non-divisible last tiles
HALO = (2, 5, 5)


def padded_reference(full: np.ndarray, box: Box, halo=HALO) -> np.ndarray:
    """``np.pad(full, halo, 'reflect')[box grown by halo]``: the plain numpy answer."""
    padded = np.pad(full, [(h, h) for h in halo], mode="reflect")
    return padded[box.grow(list(halo)).shift(halo).slices()]


def write_label_tiles(root: Path, lab: np.ndarray) -> Path:
    """uint32 labels, one TIFF per slice."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for z in range(lab.shape[0]):
        tifffile.imwrite(root / f"l{z:03d}.tif", lab[z])
        names.append(f"l{z:03d}.tif")
    data = {"image": names, "height": lab.shape[1], "width": lab.shape[2], "depth": lab.shape[0],
            "tile_size": list(lab.shape[1:]), "tile_st": [0, 0], "tile_ratio": 1, "dtype": "uint32"}
    import json

    (root / "label.json").write_text(json.dumps(data))
    return root / "label.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiled")
    rng = np.random.default_rng(7)
    img8 = em_like(rng, SHAPE, "uint8")
    img16 = em_like(rng, SHAPE, "uint16")
    lab = (rng.integers(0, 4, SHAPE) * 1000003 + (1 << 25)).astype(np.uint32)  # ids above 2**24
    return {
        "img8": img8, "img16": img16, "lab": lab,
        "single": write_tiles(root / "single", img8, None),
        "multi": write_tiles(root / "multi", img8, (16, 20), tile_st=(1, 1)),
        "u16": write_tiles(root / "u16", img16, (16, 20), ext="png"),
        "label": write_label_tiles(root / "label", lab),
        "root": root,
    }


def make_ds(images, labels=None, cls=None, **kw) -> TileDataset:
    opts = dict(sample_size=(4, 10, 10), chunk_num=(1, 2, 2), chunk_iter=2, batch_size=2, length=24,
                halo=HALO, seed=3)
    opts.update(kw)
    return (cls or PidTileDataset)(images, labels, **opts)


def store_dirs() -> list[str]:
    return glob.glob(f"/dev/shm/cdata-chunks-{os.getpid()}-*")


# ---------------------------------------------------------------------- chunk data
@pytest.mark.parametrize("layout", ["single", "multi", "u16"])
def test_chunk_with_halo_equals_numpy_reflect_pad(data, layout):
    full = data["img16"] if layout == "u16" else data["img8"]
    vol = open_tiled_volume(data[layout], threads=2)
    lab = open_tiled_volume(data["label"])
    grid = ChunkGrid(SHAPE, (1, 3, 3), overlap=True)
    # chunk 4: interior in y and x (halo read from neighbours), border in z (reflected)
    # chunk 0 and 8: corners (reflected on two sides)
    for chunk in (0, 4, 8):
        store = ChunkStore([ChunkSource(vol, lab, None, grid, layout)], ChunkSchedule([chunk], 1, 1), HALO,
                           slab_bytes=2000)  # several z-slabs per chunk
        with store:
            store.wait(0)
            slot = open_slot(store.directory, 0, timeout=5)
            assert slot.chunk == chunk
            assert slot.boxes == [grid[chunk].grow(list(HALO))]
            np.testing.assert_array_equal(slot.images[0], padded_reference(full, grid[chunk]))
            assert slot.images[0].dtype == full.dtype
            np.testing.assert_array_equal(slot.labels[0], padded_reference(data["lab"], grid[chunk]))
            assert slot.labels[0].dtype == np.uint32
            assert isinstance(slot.images[0], np.memmap)
            assert slot.images[0].filename.startswith(store.directory)


def test_chunk_boxes_equal_chunkgrid_with_overlap_and_range(data):
    vol = ArrayVolume(data["img8"])
    ds = make_ds([vol], chunk_num=(1, 2, 2))
    grid = ChunkGrid(SHAPE, (1, 2, 2), overlap=True)
    with ds:
        assert [ds.chunk_box(k, with_halo=False) for k in range(4)] == list(grid)
        assert grid[0].stop[1] > grid[1].start[1]  # 50% overlap
        for i in (0, 4, 8, 12):
            ds[i]
            assert ds._views[ds.schedule.slot_of(i)][1].boxes == [ds.chunk_box(ds.chunk_of(i))]
    rng_ = [2, 10, 4, 44, 0, 40]
    ds = make_ds([vol], chunk_num=(1, 2, 2), coord_ranges=[rng_], overlap=False)
    with ds:
        assert [ds.chunk_box(k, with_halo=False) for k in range(4)] == list(
            ChunkGrid(SHAPE, (1, 2, 2), overlap=False, coord_range=rng_))


# ---------------------------------------------------------------------- schedule
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**31), st.integers(0, 3), st.integers(1, 4), st.integers(1, 5))
def test_chunk_order_is_a_permutation_per_cycle(n, seed, rank, batch, chunk_iter):
    ids = list(range(100, 100 + n))
    sch = ChunkSchedule(ids, batch, chunk_iter, seed=seed, rank=rank)
    for cycle in range(3):
        visited = [sch.chunk_of_slot(s) for s in range(cycle * n, (cycle + 1) * n)]
        assert sorted(visited) == ids
    # the schedule is a pure function: another instance agrees, per index
    other = ChunkSchedule(ids, batch, chunk_iter, seed=seed, rank=rank)
    idx = np.arange(0, 3 * n * batch * chunk_iter, 7)
    assert [sch.chunk_of(int(i)) for i in idx] == [other.chunk_of(int(i)) for i in idx]
    assert all(sch.slot_of(int(i)) == int(i) // (batch * chunk_iter) for i in idx)


def test_orders_differ_between_cycles_and_seeds():
    a = ChunkSchedule(range(12), 1, 1, seed=0)
    b = ChunkSchedule(range(12), 1, 1, seed=1)
    assert a.order(0) != a.order(1)
    assert a.order(0) != b.order(0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6))
def test_chunk_ind_split_shards_ids(n, world):
    ids = list(range(n))
    if n < world:  # the first ranks get nothing: a clear error, not an idle job
        with pytest.raises(ConfigError, match="no chunk"):
            select_chunk_ids(n, None, f"0-{world}")
        assert select_chunk_ids(n, None, f"{world - 1}-{world}") == ids
        return
    parts = [select_chunk_ids(n, None, f"{r}-{world}") for r in range(world)]
    assert sum(parts, []) == ids  # contiguous, disjoint, covering; the last rank takes the rest
    assert all(len(p) == n // world for p in parts[:-1])


def test_chunk_ind_explicit_and_errors():
    assert select_chunk_ids(8, [5, 2, 7], [1, 2]) == [2, 7] and select_chunk_ids(8, [5, 2, 7]) == [5, 2, 7]
    with pytest.raises(ConfigError, match="outside"):
        select_chunk_ids(4, [1, 4])
    with pytest.raises(ConfigError, match="rank-world"):
        select_chunk_ids(4, None, "1/2")


def test_every_chunk_is_visited_and_samples_come_from_their_chunk(data):
    full = data["img8"]
    ds = make_ds([ArrayVolume(full)], [ArrayVolume(data["lab"])], chunk_num=(2, 2, 2), length=8 * 4)
    size = ds.sample_size
    with ds:
        seen = set()
        for i in range(len(ds)):
            s = ds[i]
            chunk = ds.chunk_of(i)
            assert s["chunk"] == chunk
            seen.add(chunk)
            crop = Box.from_shape(size, s["pos"][1:])
            assert ds.chunk_box(chunk).contains(crop)
            # no augmentor: the image is the reflect-padded volume at pos (exact values)
            widths = [(max(0, -a), max(0, b - n)) for a, b, n in zip(crop.start, crop.stop, SHAPE)]
            ref = np.pad(full, widths, mode="reflect")[crop.shift([w[0] for w in widths]).slices()]
            np.testing.assert_array_equal(s["image"][0], ref)
        assert seen == set(range(8))


# ---------------------------------------------------------------------- streaming
class PidTileDataset(TileDataset):
    """Adds the process id and the file the image was mapped from to each sample."""

    def __getitem__(self, index):
        out = super().__getitem__(index)
        data = self._views[self.schedule.slot_of(int(index))][1]
        out["pid"] = os.getpid()
        out["src"] = data.images[0].filename
        return out


def collate_with_pids(samples):
    return collate_samples(samples), [s["pid"] for s in samples], [s["src"] for s in samples]


def loader(ds, workers, start=0, persistent=False):
    return torch.utils.data.DataLoader(
        ds, batch_size=2, sampler=ds.sampler(start, workers, 1 if workers else None), num_workers=workers,
        collate_fn=collate_with_pids, prefetch_factor=1 if workers else None,
        persistent_workers=persistent and workers > 0,
    )


def consume(dl) -> list:
    """All batches of one pass; the workers are shut down explicitly even on error (a failed
    iterator left to the garbage collector costs torch a 5 s join timeout per worker)."""
    it = iter(dl)
    try:
        return list(it)
    finally:
        if hasattr(it, "_shutdown_workers") and not dl.persistent_workers:
            it._shutdown_workers()


def test_batches_identical_for_0_1_2_workers(data):
    vol, lab = open_tiled_volume(data["multi"]), open_tiled_volume(data["label"])
    from connectomics_data.targets import parse_targets

    runs = []
    for workers in (0, 1, 2):
        ds = PidTileDataset([vol], [lab], chunk_num=(1, 2, 2), chunk_iter=2, length=20,
                            target_specs=parse_targets(["0"]), sample_size=(4, 10, 10), batch_size=2,
                            halo=HALO, seed=11)
        with ds:
            runs.append([(b.image, b.pos, b.targets[0]) for b, _, _ in consume(loader(ds, workers))])
    assert len(runs[0]) == 10
    for other in runs[1:]:
        for (i0, p0, t0), (i1, p1, t1) in zip(runs[0], other, strict=True):
            assert torch.equal(i0, i1) and torch.equal(p0, p1) and torch.equal(t0, t1)


def test_workers_persist_across_chunk_switches_and_read_shared_memory(data):
    ds = PidTileDataset([ArrayVolume(data["img8"])], chunk_num=(1, 2, 2), chunk_iter=2, length=8,
                        sample_size=(4, 10, 10), batch_size=2, halo=HALO, seed=5)
    with ds:
        dl = loader(ds, 2, persistent=True)
        pids, chunks = [], []
        for _epoch in range(2):  # 2 epochs x 2 slots: 3 chunk switches, one across epochs
            for _b, p, src in dl:
                pids.append(tuple(p))
                assert all(s.startswith(ds.directory + os.sep) for s in src)
        for i in range(16):
            chunks.append(ds.chunk_of(i))
        worker_pids = {q for p in pids for q in p}
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        assert len(set(chunks[::4])) == 4  # really four different chunks
        assert dl._iterator is not None and len(dl._iterator._workers) == 2
        live = {f.split(".")[0] for f in os.listdir(ds.directory) if f.endswith(".npy")}
        assert len(live) <= 3  # previous, current, next slot
        del dl
    assert not os.path.exists(ds.directory)


def test_shared_memory_is_freed_after_the_run(data):
    before = set(store_dirs())
    ds = make_ds([ArrayVolume(data["img8"])])
    directory = ds.directory
    assert len(consume(loader(ds, 2))) == 12
    assert os.path.isdir(directory)
    del ds
    gc.collect()
    assert not os.path.exists(directory)
    assert set(store_dirs()) <= before


def test_missing_tile_raises_in_main_process_naming_the_file(data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(data["multi"].parent, root)
    victim = root / "s5" / "2_2.png"  # slice 5, second tile row/column (tile_st [1, 1]): every chunk
    victim.unlink()
    vol = open_tiled_volume(root / data["multi"].name, check_files=False)
    for workers in (0, 2):
        ds = make_ds([vol])
        with ds, pytest.raises(TileJSONError, match=str(victim)):
            consume(loader(ds, workers))


def test_pickled_copy_reads_the_same_samples_from_shared_memory(data):
    ds = make_ds([ArrayVolume(data["img16"])], chunk_num=(1, 2, 2))
    with ds:
        copy = pickle.loads(pickle.dumps(ds))
        assert not copy.is_owner
        with pytest.raises(RuntimeError, match="never requested"):
            copy[0]
        a = ds[5]
        b = copy[5]
        assert a["image"].dtype == np.float32  # 16-bit image mapped by the sampled-slice range
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["pos"], b["pos"])


def test_plain_dataloader_without_chunk_sampler_fails_clearly(data):
    ds = make_ds([ArrayVolume(data["img8"])])
    with ds:
        dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_samples)
        with pytest.raises(RuntimeError, match="sampler=dataset.sampler"):
            consume(dl)
        # without workers the dataset drives itself
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_samples)))
        assert batch.image.shape == (2, 1, 4, 10, 10)


def test_in_flight_assumption_is_checked(data):
    ds = make_ds([ArrayVolume(data["img8"])], chunk_iter=3)
    with ds:
        ds.sampler(0, 1, 3)
        with pytest.raises(ConfigError, match="DATA_CHUNK_ITER"):
            ds.sampler(0, 2, 2)


def test_repeated_chunk_is_linked_not_reread(data):
    ds = make_ds([ArrayVolume(data["img8"])], chunk_ids=[3])
    with ds:
        for i in range(0, 20, 4):
            ds[i]
        for slot in ds._store.live_slots():
            ds._store.wait(slot)
        reused = [h.reused_from for h in ds.load_history if h.ready_at == h.ready_at]  # loaded ones
        assert len(reused) >= 5
        assert reused[0] is None and all(r is not None for r in reused[1:])


def test_two_volumes_aligned_by_index(data):
    small = data["img8"][:, :30, :40].copy()
    ds = make_ds([ArrayVolume(data["img8"]), ArrayVolume(small)],
                 [ArrayVolume(data["lab"]), ArrayVolume(data["lab"][:, :30, :40].copy())], length=40)
    with ds:
        vols = set()
        for i in range(len(ds)):
            s = ds[i]
            v = int(s["pos"][0])
            vols.add(v)
            crop = Box.from_shape(ds.sample_size, s["pos"][1:])
            assert ds.chunk_box(s["chunk"], volume=v).contains(crop)
            full = (data["img8"], small)[v]
            widths = [(max(0, -a), max(0, b - n)) for a, b, n in zip(crop.start, crop.stop, full.shape)]
            ref = np.pad(full, widths, mode="reflect")[crop.shift([w[0] for w in widths]).slices()]
            np.testing.assert_array_equal(s["image"][0], ref)
        assert vols == {0, 1}


def test_chunk_too_small_for_the_sample_is_a_config_error(data):
    with pytest.raises(ConfigError, match="DATA_CHUNK_NUM"):
        make_ds([ArrayVolume(data["img8"])], chunk_num=(6, 2, 2), halo=0)


# ---------------------------------------------------------------------- config
def test_build_tile_dataset_from_config(data):
    cfg = get_cfg_defaults()
    cfg.DATASET.DO_CHUNK_TITLE = 1
    cfg.DATASET.INPUT_PATH = ""
    cfg.DATASET.IMAGE_NAME = str(data["multi"])
    cfg.DATASET.LABEL_NAME = str(data["label"])
    cfg.DATASET.IS_ABSOLUTE_PATH = True
    cfg.DATASET.DATA_CHUNK_NUM = [1, 2, 2]
    cfg.DATASET.DATA_CHUNK_ITER = 3
    cfg.DATASET.CHUNK_IND_SPLIT = "1-2"
    cfg.DATASET.PAD_SIZE = list(HALO)
    cfg.AUGMENTOR.ENABLED = False
    cfg.MODEL.INPUT_SIZE = [4, 12, 12]
    cfg.MODEL.TARGET_OPT = ["0"]
    cfg.SOLVER.SAMPLES_PER_BATCH = 2
    cfg.SOLVER.ITERATION_TOTAL = 10
    ds = build_tile_dataset(cfg, "train")
    with ds:
        assert isinstance(ds, TileDataset) and len(ds) == 20
        assert ds.schedule.chunk_ids == (2, 3)
        s = ds[7]
        assert s["image"].shape == (1, 4, 12, 12) and s["targets"][0].shape == (1, 4, 12, 12)
        assert s["chunk"] in (2, 3)
    cfg.DATASET.DATA_SCALE = [1.0, 0.5, 0.5]
    with pytest.raises(ConfigError, match="DATA_SCALE"):
        build_tile_dataset(cfg, "train")


def test_screening_tables_are_built_once_by_the_store(data):
    from connectomics_data.sampling import BlockCountTable, RejectionPolicy

    mask = np.zeros(SHAPE, np.uint8)
    mask[:, :25] = 1  # valid in the top half only
    policy = RejectionPolicy(valid_ratio=0.5, screen=True, num_trial=200)
    ds = make_ds([ArrayVolume(data["img8"])], valid_masks=[ArrayVolume(mask)], rejection=policy)
    with ds:
        s = ds[0]
        copy = pickle.loads(pickle.dumps(ds))
        t = copy[0]
        np.testing.assert_array_equal(s["image"], t["image"])
        box = ds.chunk_box(ds.chunk_of(0))
        table = copy._views[0][0]._valid_tables[0]
        expected = BlockCountTable(padded_reference(mask, ds.chunk_box(ds.chunk_of(0), with_halo=False)))
        np.testing.assert_array_equal(table.sat, expected.sat)
        for i in range(8):
            crop = Box.from_shape(ds.sample_size, ds[i]["pos"][1:])
            widths = crop.padding_in(SHAPE)
            valid = np.pad(mask, widths, mode="reflect")[crop.shift([w[0] for w in widths]).slices()]
            assert valid.mean() > 0.5
        assert box.contains(Box.from_shape(ds.sample_size, s["pos"][1:]))
