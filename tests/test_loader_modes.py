"""Loader modes (threads / processes) and the finish in the loader: the same batches, bit for bit,
as collating the dataset's samples and calling ``Batch.to('cpu')`` (today's path)."""

from __future__ import annotations

import gc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from connectomics_data.config import load_cfg
from connectomics_data.datasets import TileDataset, build_dataset
from connectomics_data.errors import ConfigError
from connectomics_data.io.base import ArrayVolume
from connectomics_data.loader import build_dataloader, collate_samples
from connectomics_data.loader.build import loader_mode
from connectomics_data.loader.finish import BufferPool, finish_batch
from connectomics_data.loader.threads import ThreadLoader
from connectomics_data.targets import DeferredWeight


def cfg_for(root: Path, *opts: str):
    return load_cfg(None, opts=[
        "DATASET.INPUT_PATH", str(root), "DATASET.IMAGE_NAME", "img.h5", "DATASET.LABEL_NAME", "lab.h5",
        "MODEL.INPUT_SIZE", "[4, 17, 17]", "DATASET.PAD_SIZE", "[2, 16, 16]",
        "MODEL.TARGET_OPT", "['0', '4-1-1']", "MODEL.WEIGHT_OPT", "[['1'], ['0']]",
        "MODEL.LOSS_OPTION", "[['WeightedBCE'], ['WeightedBCE']]", "MODEL.LOSS_WEIGHT", "[[1.0], [1.0]]",
        "MODEL.OUTPUT_ACT", "[['none'], ['none']]", "INFERENCE.OUTPUT_ACT", "['sigmoid', 'sigmoid']",
        "MODEL.OUT_PLANES", "2", "DATASET.REJECT_SAMPLING.SIZE_THRES", "30",
        "SOLVER.SAMPLES_PER_BATCH", "3", "SOLVER.ITERATION_TOTAL", "4", *opts,
    ])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("modes")
    rng = np.random.default_rng(5)
    shape = (12, 64, 64)
    label = np.zeros(shape, np.uint16)
    for k in range(15):
        z, y, x = rng.integers(0, 9), rng.integers(0, 56), rng.integers(0, 56)
        label[z:z + 3, y:y + 8, x:x + 8] = k + 1
    for name, data in (("img.h5", rng.integers(0, 256, shape, dtype=np.uint8)), ("lab.h5", label)):
        with h5py.File(path / name, "w") as f:
            f.create_dataset("main", data=data)
    return path


def assert_same(a, b):
    assert a.normalized and b.normalized
    assert torch.equal(a.image, b.image) and a.image.dtype == torch.float32
    assert torch.equal(a.image_affine, b.image_affine) and torch.equal(a.pos, b.pos)
    assert len(a.targets) == len(b.targets)
    for x, y in zip(a.targets, b.targets):
        assert x.dtype == y.dtype and torch.equal(x, y)
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        for x, y in zip(wa, wb):
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype and torch.equal(x, y)


def reference(cfg, n_batches: int, batch: int = 3):
    ds = build_dataset(cfg, "train")
    return [collate_samples([ds[k * batch + i] for i in range(batch)]).to("cpu") for k in range(n_batches)]


def take(loader, n: int):
    out = []
    for batch in loader:
        out.append(batch.to("cpu"))
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("mode,workers,finish", [("thread", 0, None), ("thread", 2, None), ("thread", 3, False),
                                                 ("process", 1, None), ("process", 2, True)])
def test_every_mode_gives_todays_batches(root, mode, workers, finish):
    cfg = cfg_for(root, "SYSTEM.LOADER_MODE", mode)
    ref = reference(cfg, 3)
    loader = build_dataloader(cfg, "train", num_workers=workers, finish=finish)
    assert isinstance(loader, ThreadLoader) == (mode == "thread")
    got = take(loader, 3)
    for a, b in zip(ref, got):
        assert_same(a, b)


def test_thread_batches_come_ready_on_cpu_and_epochs_continue(root):
    cfg = cfg_for(root, "SYSTEM.LOADER_MODE", "thread", "DATASET.SAMPLES_PER_EPOCH", "6")
    loader = build_dataloader(cfg, "train", num_workers=2)
    assert len(loader) == 2 and loader.batch_size == 3
    e0 = [b for b in loader]
    assert all(b.normalized for b in e0)  # finished in the loader thread (no CUDA here)
    e1 = [b for b in loader]
    ref = reference(cfg, 4)
    for a, b in zip(ref, e0 + e1):
        assert_same(a, b)


def test_val_loader_in_thread_mode_is_the_grid_in_order(root):
    cfg = cfg_for(root, "SYSTEM.LOADER_MODE", "thread", "DATASET.VAL_IMAGE_NAME", "img.h5",
                  "DATASET.VAL_LABEL_NAME", "lab.h5", "DATASET.VAL_PAD_SIZE", "[0, 0, 0]")
    got = list(build_dataloader(cfg, "val", num_workers=2))
    ds = build_dataset(cfg, "val")
    assert sum(len(b) for b in got) == len(ds)
    first = collate_samples([ds[i] for i in range(12)]).to("cpu")
    assert_same(first, got[0])


def test_bad_loader_mode_is_one_config_error(root):
    with pytest.raises(ConfigError, match="SYSTEM.LOADER_MODE.*'fibers'"):
        loader_mode(cfg_for(root, "SYSTEM.LOADER_MODE", "fibers"))


def test_a_sample_error_reaches_the_consumer_with_its_type():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            if i == 4:
                raise KeyError(f"sample {i} is broken")
            return {"x": i}

    loader = ThreadLoader(Broken(), 2, range(10), num_threads=2, collate_fn=lambda s: [d["x"] for d in s])
    it = iter(loader)
    assert next(it) == [0, 1] and next(it) == [2, 3]
    with pytest.raises(KeyError, match="sample 4 is broken"):
        next(it)
    loader.close()


def test_thread_loader_keeps_sampler_order_and_the_last_partial_batch():
    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            import time

            time.sleep(0.002 * (7 - i))  # later samples finish first
            return i

    loader = ThreadLoader(Slow(), 3, range(7), num_threads=3, in_flight=3, collate_fn=list)
    assert len(loader) == 3 and list(loader) == [[0, 1, 2], [3, 4, 5], [6]]
    loader.drop_last = True
    assert len(loader) == 2 and list(loader) == [[0, 1, 2], [3, 4, 5]]
    loader.close()


def _sample(rng, image_dtype, masked: bool):
    image = rng.integers(0, 256, (1, 3, 9, 9)).astype(image_dtype)
    if image_dtype == np.float32:
        image /= 255
    target = (rng.random((1, 3, 9, 9)) > 0.7).astype(np.uint8)
    valid = (rng.random((3, 9, 9)) > 0.2).astype(np.uint8) if masked else None
    w = DeferredWeight("ratio", 0, float(rng.uniform(1, 9)), float(rng.uniform(0.1, 1)), masked=masked)
    weights = [[w, DeferredWeight("mask", 0)] if masked else [w]]
    return {"image": image, "image_affine": np.array([rng.uniform(-1, 0), rng.uniform(0.001, 0.01)], np.float32),
            "targets": [target, rng.random((2, 3, 9, 9)).astype(np.float32)], "weights": weights,
            "valid": valid, "extra": {}, "pos": np.zeros(4, np.int64)}


@pytest.mark.parametrize("image_dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("masked", [False, True])
def test_finish_batch_is_batch_to_cpu_bit_for_bit(image_dtype, masked):
    rng = np.random.default_rng(11)
    batch = collate_samples([_sample(rng, image_dtype, masked) for _ in range(3)])
    pool = BufferPool()
    assert_same(batch.to("cpu"), finish_batch(batch))
    assert_same(batch.to("cpu"), finish_batch(batch, pool))
    ready = finish_batch(batch)
    assert finish_batch(ready) is ready


@pytest.mark.parametrize("case", ["binary", "values above 1", "zero factor", "float target"])
def test_ratio_weight_map_matches_where_in_every_case(case):
    rng = np.random.default_rng(13)
    samples = [_sample(rng, np.uint8, False) for _ in range(3)]
    if case == "values above 1":
        samples[1]["targets"][0][0, 0, :2] = 2
    if case == "zero factor":
        samples[0]["weights"][0][0] = DeferredWeight("ratio", 0, 2.5, 0.0)
    if case == "float target":
        for s in samples:
            s["targets"][0] = s["targets"][0].astype(np.float32) * 0.5
    batch = collate_samples(samples)
    assert_same(batch.to("cpu"), finish_batch(batch, BufferPool()))


def test_pooled_buffers_are_reused_only_after_the_batch_is_dropped():
    rng = np.random.default_rng(12)
    batch = collate_samples([_sample(rng, np.uint8, False) for _ in range(2)])
    ref = batch.to("cpu")
    pool = BufferPool()
    first = finish_batch(batch, pool)
    held = first.image[1]  # a view keeps its buffer out of the pool
    del first
    gc.collect()
    allocated = pool.allocated
    second = finish_batch(batch, pool)
    assert pool.allocated > allocated  # the image buffer was still in use: a new one
    assert torch.equal(held, ref.image[1]) and torch.equal(second.image, ref.image)
    del second, held
    gc.collect()
    allocated = pool.allocated
    for _ in range(3):
        assert_same(ref, finish_batch(batch, pool))
    assert pool.allocated == allocated  # steady state: the same buffers over and over


def test_tile_dataset_in_thread_mode_gives_the_batches_of_one_process():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (8, 40, 40), dtype=np.uint8)
    label = (rng.random((8, 40, 40)) > 0.6).astype(np.uint16)

    def make():
        return TileDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=(4, 10, 10), chunk_num=(1, 2, 2),
                           chunk_iter=4, batch_size=2, length=24, halo=(1, 3, 3), seed=3)

    with make() as ds:
        ref = [collate_samples([ds[2 * k], ds[2 * k + 1]]).to("cpu") for k in range(12)]
    with make() as ds:
        loader = ThreadLoader(ds, 2, ds.sampler(0, 2, 2), num_threads=2, in_flight=3, finish=finish_batch)
        got = list(loader)
        loader.close()
    assert len(got) == 12
    for a, b in zip(ref, got):
        assert torch.equal(a.image, b.image) and torch.equal(a.pos, b.pos)
