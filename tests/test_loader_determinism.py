"""build_dataloader: batches are a pure function of (seed, sample index), whatever the workers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from connectomics_data.config import load_cfg
from connectomics_data.datasets import build_dataset
from connectomics_data.loader import (
    SampleIndexSampler,
    build_dataloader,
    collate_samples,
    num_workers_for,
)


def write_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shape = (12, 64, 64)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    label = np.zeros(shape, np.uint16)
    for k in range(15):
        z, y, x = rng.integers(0, 9), rng.integers(0, 56), rng.integers(0, 56)
        label[z:z + 3, y:y + 8, x:x + 8] = k + 1
    for name, data in (("img.h5", image), ("lab.h5", label)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("main", data=data)


def cfg_for(tmp_path: Path, *opts: str):
    return load_cfg(None, opts=[
        "DATASET.INPUT_PATH", str(tmp_path), "DATASET.IMAGE_NAME", "img.h5", "DATASET.LABEL_NAME", "lab.h5",
        "MODEL.INPUT_SIZE", "[4, 17, 17]", "DATASET.PAD_SIZE", "[2, 16, 16]",
        "MODEL.TARGET_OPT", "['0', '4-1-1']", "MODEL.WEIGHT_OPT", "[['1'], ['0']]",
        "MODEL.LOSS_OPTION", "[['WeightedBCE'], ['WeightedBCE']]", "MODEL.LOSS_WEIGHT", "[[1.0], [1.0]]",
        "MODEL.OUTPUT_ACT", "[['none'], ['none']]", "INFERENCE.OUTPUT_ACT", "['sigmoid', 'sigmoid']",
        "MODEL.OUT_PLANES", "2",
        "DATASET.REJECT_SAMPLING.SIZE_THRES", "30", "DATASET.REJECT_SAMPLING.P", "0.9",
        "SOLVER.SAMPLES_PER_BATCH", "3", "SOLVER.ITERATION_TOTAL", "4", "SYSTEM.NUM_CPUS", "2", *opts,
    ])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader")
    write_volumes(path)
    return path


def first_batches(loader, n: int):
    out = []
    for i, batch in enumerate(loader):
        if i == n:
            break
        out.append(batch.to("cpu"))
    return out


def assert_batches_equal(a, b):
    assert torch.equal(a.image, b.image)
    assert torch.equal(a.image_affine, b.image_affine)
    assert torch.equal(a.pos, b.pos) and torch.equal(a.trials, b.trials)
    assert len(a.targets) == len(b.targets)
    for x, y in zip(a.targets, b.targets):
        assert torch.equal(x, y)
    for wa, wb in zip(a.weights, b.weights):
        for x, y in zip(wa, wb):
            assert (x is None) == (y is None)
            if x is not None:
                assert torch.equal(x, y)


def test_batches_do_not_depend_on_the_number_of_workers(data_dir):
    cfg = cfg_for(data_dir)
    ref = first_batches(build_dataloader(cfg, "train", num_workers=0), 3)
    assert len(ref) == 3
    assert ref[0].image.shape == (3, 1, 4, 17, 17) and ref[0].image.dtype == torch.float32
    for workers in (1, 2):
        got = first_batches(build_dataloader(cfg, "train", num_workers=workers), 3)
        for a, b in zip(ref, got):
            assert_batches_equal(a, b)


def test_samples_within_a_batch_and_seeds_differ(data_dir):
    cfg = cfg_for(data_dir)
    a = first_batches(build_dataloader(cfg, "train", num_workers=0), 1)[0]
    positions = {tuple(p) for p in a.pos.tolist()}
    assert len(positions) == 3
    assert not torch.equal(a.image[0], a.image[1])
    b = first_batches(build_dataloader(cfg, "train", num_workers=0, seed=1), 1)[0]
    assert not torch.equal(a.image, b.image) and not torch.equal(a.pos, b.pos)
    c = first_batches(build_dataloader(cfg_for(data_dir, "SYSTEM.SEED", "1"), "train", num_workers=0), 1)[0]
    assert_batches_equal(b, c)


def test_ranks_draw_different_samples(data_dir):
    cfg = cfg_for(data_dir)
    a = first_batches(build_dataloader(cfg, "train", num_workers=0, rank=0), 1)[0]
    b = first_batches(build_dataloader(cfg, "train", num_workers=0, rank=1), 1)[0]
    assert not torch.equal(a.pos, b.pos)


def test_resume_gives_the_same_samples(data_dir):
    cfg = cfg_for(data_dir)
    fresh = first_batches(build_dataloader(cfg, "train", num_workers=0), 3)
    resumed = first_batches(build_dataloader(cfg, "train", num_workers=0, start_index=6), 1)[0]
    assert_batches_equal(fresh[2], resumed)
    # a start that is not a batch multiple: sample k of a fresh run
    ds = build_dataset(cfg, "train")
    shifted = first_batches(build_dataloader(cfg, "train", dataset=ds, num_workers=0, start_index=4), 1)[0]
    single = collate_samples([ds[4], ds[5], ds[6]]).to("cpu")
    assert_batches_equal(single, shifted)
    assert torch.equal(shifted.image[:2], fresh[1].image[1:]) and torch.equal(shifted.image[2], fresh[2].image[0])


def test_epochs_continue_the_index_stream():
    sampler = SampleIndexSampler(5, start=2)
    assert len(sampler) == 5
    assert list(sampler) == [2, 3, 4, 5, 6]
    assert list(sampler) == [7, 8, 9, 10, 11]
    with pytest.raises(ValueError):
        SampleIndexSampler(0)


def test_second_epoch_differs_from_the_first(data_dir):
    cfg = cfg_for(data_dir, "DATASET.SAMPLES_PER_EPOCH", "3")
    loader = build_dataloader(cfg, "train", num_workers=0)
    (e0,) = [b.to("cpu") for b in loader]
    (e1,) = [b.to("cpu") for b in loader]
    assert not torch.equal(e0.pos, e1.pos)
    ds = build_dataset(cfg, "train")
    assert_batches_equal(e1, collate_samples([ds[3], ds[4], ds[5]]).to("cpu"))


def test_val_loader_is_the_grid_in_order(data_dir):
    cfg = cfg_for(data_dir, "DATASET.VAL_IMAGE_NAME", "img.h5", "DATASET.VAL_LABEL_NAME", "lab.h5",
                  "DATASET.VAL_PAD_SIZE", "[0, 0, 0]")
    loader = build_dataloader(cfg, "val", num_workers=0)
    assert loader.batch_size == 12
    batches = list(loader)
    ds = loader.dataset
    assert sum(len(b) for b in batches) == len(ds) == 5 * 7 * 7
    pos = torch.cat([b.pos for b in batches])
    assert pos[:, 1:].tolist()[:3] == [[0, 0, 0], [0, 0, 8], [0, 0, 16]]


def test_num_workers_split_across_ranks():
    cfg = load_cfg(None, opts=["SYSTEM.NUM_CPUS", "8"])
    assert num_workers_for(cfg) == 8 and num_workers_for(cfg, world_size=3) == 2


@pytest.mark.slow
def test_spawned_workers_give_the_same_batches(data_dir):
    """The whole dataset (shared-memory volumes, screen tables, augmentor) pickles into a
    'spawn' worker and yields the batches of the single-process run."""
    cfg = cfg_for(data_dir)
    ds = build_dataset(cfg, "train")
    ref = first_batches(build_dataloader(cfg, "train", dataset=ds, num_workers=0), 2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=SampleIndexSampler(len(ds)), num_workers=1,
                                         collate_fn=collate_samples, multiprocessing_context="spawn")
    for a, b in zip(ref, first_batches(loader, 2)):
        assert_batches_equal(a, b)
