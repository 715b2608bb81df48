"""VolumeDataset samples against plain numpy references: crops, targets, weights, normalisation,
2D, multi-channel, val/test grids; build_dataset errors and the demo data."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from connectomics_data.augment import build_train_augmentor
from connectomics_data.config import load_cfg
from connectomics_data.datasets import VolumeDataset, build_dataset
from connectomics_data.errors import VolumeError, VolumeNotFoundError
from connectomics_data.geometry import Box
from connectomics_data.io.base import ArrayVolume
from connectomics_data.loader import collate_samples
from connectomics_data.normalize import ImageNormalizer, normalizer_for
from connectomics_data.targets import (
    parse_targets,
    parse_weights,
    reduce_label,
    seg_to_targets,
    seg_to_weights,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "datasets" / "drosophila_vnc_mito"


def instance_volumes(shape=(8, 40, 40), seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        image = rng.integers(1000, 40000, shape).astype(dtype)
    label = np.zeros(shape, np.uint32)
    for k in range(12):
        z, y, x = (int(rng.integers(0, max(1, n - 3))) for n in shape)
        label[z:z + 3, y:y + 6, x:x + 7] = 100 + 7 * k  # ids far from 1..N: reduce_label matters
    return image, label


def padded_crop(array: np.ndarray, box: Box, pad, mode="reflect") -> np.ndarray:
    """np.pad of the whole volume (spatial axes only), then the box in padded coordinates."""
    lead = array.ndim - 3
    full = np.pad(array, [(0, 0)] * lead + [tuple(p) for p in pad], mode=mode)
    sl = box.shift([a for a, _ in pad]).slices()
    return full[(slice(None),) * lead + sl]


def pos_box(sample, size) -> Box:
    return Box.from_shape(size, [int(v) for v in sample["pos"][1:]])


PAD = ((1, 1), (5, 5), (5, 5))


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "constant"])
def test_targets_and_weights_match_numpy_reference(mode):
    image, label = instance_volumes()
    codes = ["0", "4-1-1", "2"]
    specs = parse_targets(codes)
    wspecs = parse_weights([["1", "0"], ["0"], ["0"]], num_targets=3)
    size = (4, 18, 18)
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=size, target_specs=specs,
                       weight_specs=wspecs, pad=[1, 5, 5], pad_mode=mode, length=20, seed=3)
    for i in range(8):
        s = ds[i]
        box = pos_box(s, size)
        np.testing.assert_array_equal(s["image"], padded_crop(image, box, PAD, mode)[None])
        crop = reduce_label(padded_crop(label, box, PAD, mode))
        ref_t = seg_to_targets(crop, specs)
        ref_w = seg_to_weights(ref_t, wspecs, None, crop)
        assert len(s["targets"]) == 3
        # binary-valued targets travel as uint8 with the exact values
        for got, ref in zip(s["targets"], ref_t):
            assert got.dtype == np.uint8 and got.flags.c_contiguous
            np.testing.assert_array_equal(got.astype(np.float32), ref)
        # what reaches the model (after collate and Batch.to) equals the numpy reference exactly
        batch = collate_samples([s]).to("cpu")
        for got, ref in zip(batch.targets, ref_t):
            assert got.dtype == torch.float32
            np.testing.assert_array_equal(got[0].numpy(), ref)
        for got_ws, ref_ws in zip(batch.weights, ref_w):
            for got, ref in zip(got_ws, ref_ws):
                assert (got is None) == (ref is None)
                if ref is not None:
                    np.testing.assert_array_equal(got[0].numpy(), ref)
        assert s["weights"][0][1] is None  # '0' without a mask
        assert s["targets"][0].shape == (1, *size)


def test_sample_positions_cover_the_padding():
    image, label = instance_volumes()
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=(4, 18, 18),
                       pad=[1, 5, 5], length=400, seed=0)
    starts = np.array([ds[i]["pos"][1:] for i in range(400)])
    assert starts.min(axis=0).tolist() == [-1, -5, -5]
    assert starts.max(axis=0).tolist() == [8 + 1 - 4, 40 + 5 - 18, 40 + 5 - 18]


@pytest.mark.parametrize("mean,std,act", [(0.5, 0.5, "none"), (0.2, 0.3, "none"), (0.5, 0.5, "sigmoid"),
                                          (0.5, 0.5, "tanh")])
def test_uint8_normalisation_after_to(mean, std, act):
    image, _ = instance_volumes()
    norm = ImageNormalizer(mean=mean, std=std, match_act=act)
    ds = VolumeDataset([ArrayVolume(image)], sample_size=(4, 18, 18), normalizers=[norm], pad=[1, 5, 5],
                       length=10, seed=1)
    samples = [ds[i] for i in range(3)]
    assert all(s["image"].dtype == np.uint8 for s in samples)  # compact until .to()
    batch = collate_samples(samples).to("cpu")
    assert batch.image.dtype.is_floating_point and batch.normalized
    for b, s in enumerate(samples):
        x = padded_crop(image, pos_box(s, (4, 18, 18)), PAD).astype(np.float64) / 255
        ref = {"none": (x - mean) / std, "sigmoid": x, "tanh": 2 * x - 1}[act]
        np.testing.assert_allclose(batch.image[b, 0].numpy(), ref, rtol=0, atol=2e-6)


def test_uint16_uses_the_volume_wide_range():
    image, _ = instance_volumes(dtype=np.uint16)
    image[0, 0, 0], image[-1, -1, -1] = 7, 60000  # the extremes lie in two corners only
    vol = ArrayVolume(image)
    norm = normalizer_for(vol, 0.5, 0.5, "none")
    assert norm.value_range == (7.0, 60000.0)
    ds = VolumeDataset([vol], sample_size=(2, 10, 10), normalizers=[norm], pad=0, length=10, seed=2)
    samples = [ds[i] for i in range(4)]
    batch = collate_samples(samples).to("cpu")
    for b, s in enumerate(samples):
        x = padded_crop(image, pos_box(s, (2, 10, 10)), ((0, 0),) * 3).astype(np.float64)
        ref = ((x - 7) / (60000 - 7) - 0.5) / 0.5
        np.testing.assert_allclose(batch.image[b, 0].numpy(), ref, rtol=0, atol=2e-6)


def test_do_2d_squeezes_samples():
    image, label = instance_volumes()
    specs = parse_targets(["0", "4-1-1"], do_2d=True)
    wspecs = parse_weights([["1"], ["0"]], num_targets=2)
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=(1, 18, 18), target_specs=specs,
                       weight_specs=wspecs, pad=[0, 5, 5], length=10, do_2d=True, seed=4)
    s = ds[0]
    assert s["image"].shape == (1, 18, 18)
    assert [t.shape for t in s["targets"]] == [(1, 18, 18), (1, 18, 18)]
    assert s["weights"][0][0].kind == "ratio" and s["weights"][1][0] is None  # expanded on device
    box = pos_box(s, (1, 18, 18))
    np.testing.assert_array_equal(s["image"], padded_crop(image, box, ((0, 0), (5, 5), (5, 5))))
    crop2d = reduce_label(padded_crop(label, box, ((0, 0), (5, 5), (5, 5)))[0])
    for got, ref in zip(s["targets"], seg_to_targets(crop2d, specs)):
        np.testing.assert_array_equal(got, ref)
    batch = collate_samples([s, ds[1]])
    assert batch.image.shape == (2, 1, 18, 18)
    moved = batch.to("cpu")
    assert moved.weights[0][0].shape == (2, 1, 18, 18) and moved.weights[0][0].dtype == torch.float32


def test_do_2d_with_augmentation():
    image, label = instance_volumes()
    cfg = load_cfg(None, opts=["MODEL.INPUT_SIZE", "[1, 17, 17]", "DATASET.DO_2D", "True"])
    aug = build_train_augmentor(cfg)
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=aug.sample_size, augmentor=aug,
                       target_specs=parse_targets(["0"], do_2d=True), pad=[0, 16, 16], length=4, do_2d=True)
    s = ds[0]
    assert s["image"].shape == (1, 17, 17) and s["image"].dtype == np.float32
    assert s["targets"][0].shape == (1, 17, 17)


def test_do_2d_rejects_thick_samples():
    image, _ = instance_volumes()
    with pytest.raises(ValueError, match="z = 1"):
        VolumeDataset([ArrayVolume(image)], sample_size=(2, 8, 8), length=4, do_2d=True)


def test_multichannel_image():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (3, 6, 30, 30), dtype=np.uint8)
    _, label = instance_volumes(shape=(6, 30, 30))
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=(3, 12, 12),
                       target_specs=parse_targets(["0"]), pad=[1, 4, 4], length=4, seed=6)
    s = ds[0]
    assert s["image"].shape == (3, 3, 12, 12)
    np.testing.assert_array_equal(s["image"], padded_crop(image, pos_box(s, (3, 12, 12)), ((1, 1), (4, 4), (4, 4))))
    cfg = load_cfg(None, opts=["MODEL.INPUT_SIZE", "[3, 9, 9]"])
    aug = build_train_augmentor(cfg)
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=aug.sample_size, augmentor=aug,
                       target_specs=parse_targets(["0"]), pad=[2, 10, 10], length=4, seed=6)
    s = ds[1]
    assert s["image"].shape == (3, 3, 9, 9) and s["targets"][0].shape == (1, 3, 9, 9)
    assert collate_samples([s, ds[2]]).image.shape == (2, 3, 3, 9, 9)


def test_channel_count_mismatch_across_volumes():
    a = ArrayVolume(np.zeros((2, 4, 8, 8), np.uint8))
    b = ArrayVolume(np.zeros((3, 4, 8, 8), np.uint8))
    with pytest.raises(VolumeError, match="channel"):
        VolumeDataset([a, b], sample_size=(2, 4, 4), length=2)


@pytest.mark.parametrize("pad,size,stride", [((0, 0, 0), (4, 16, 16), (2, 8, 8)),
                                             ((1, 5, 5), (4, 18, 18), (3, 7, 5)),
                                             ((2, 3, 0), (8, 36, 40), (1, 1, 1))])
def test_val_grid_covers_the_padded_volume(pad, size, stride):
    image, label = instance_volumes()
    widths = [(p, p) for p in pad]
    ds = VolumeDataset([ArrayVolume(image), ArrayVolume(image[:, :30])], [ArrayVolume(label), ArrayVolume(label[:, :30])],
                       sample_size=size, mode="val", target_specs=parse_targets(["0"]), pad=list(pad), stride=stride)
    expected = 0
    for shape in ((8, 40, 40), (8, 30, 40)):
        padded = [n + 2 * p for n, p in zip(shape, pad)]
        expected += math.prod(1 + math.ceil((n - s) / st) for n, s, st in zip(padded, size, stride))
    assert len(ds) == expected
    cover = [np.zeros([n + 2 * p for n, p in zip(shape, pad)], bool) for shape in ((8, 40, 40), (8, 30, 40))]
    for i in range(len(ds)):
        s = ds[i]
        vol = int(s["pos"][0])
        box = pos_box(s, size)
        assert s["trials"] == 1 and s["screened"] == 0
        src_img, src_lab = (image, label) if vol == 0 else (image[:, :30], label[:, :30])
        if i % 7 == 0:  # spot-check content
            np.testing.assert_array_equal(s["image"][0], padded_crop(src_img, box, widths))
            np.testing.assert_array_equal(s["targets"][0][0], padded_crop(src_lab, box, widths) > 0)
        cover[vol][box.shift(pad).slices()] = True
    assert all(c.all() for c in cover)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_test_mode_gives_image_only():
    image, label = instance_volumes()
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=(4, 20, 20), mode="test",
                       target_specs=parse_targets(["0"]), weight_specs=parse_weights([["1"]], num_targets=1))
    s = ds[len(ds) - 1]
    assert s["targets"] == [] and s["weights"] == []
    assert s["pos"].tolist() == [0, 4, 20, 20]  # last window tucked in
    np.testing.assert_array_equal(s["image"][0], image[4:, 20:, 20:])


def test_train_mode_needs_a_length():
    image, _ = instance_volumes()
    with pytest.raises(ValueError, match="length"):
        VolumeDataset([ArrayVolume(image)], sample_size=(2, 8, 8))


# ------------------------------------------------------------------ build_dataset
def write_h5(path: Path, data: np.ndarray) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=data)
    return str(path)


def small_cfg(tmp_path: Path, image: np.ndarray, label: np.ndarray | None, *opts: str):
    img = write_h5(tmp_path / "img.h5", image)
    base = ["DATASET.INPUT_PATH", str(tmp_path), "DATASET.IMAGE_NAME", Path(img).name,
            "MODEL.INPUT_SIZE", "[4, 16, 16]", "DATASET.PAD_SIZE", "[1, 4, 4]", "AUGMENTOR.ENABLED", "False",
            "MODEL.TARGET_OPT", "['0']", "MODEL.WEIGHT_OPT", "[['1']]", "SOLVER.ITERATION_TOTAL", "3",
            "SOLVER.SAMPLES_PER_BATCH", "2"]
    if label is not None:
        base += ["DATASET.LABEL_NAME", Path(write_h5(tmp_path / "lab.h5", label)).name]
    return load_cfg(None, opts=base + list(opts))


def test_build_dataset_train_from_files(tmp_path):
    image, label = instance_volumes()
    ds = build_dataset(small_cfg(tmp_path, image, label), "train")
    assert len(ds) == 6
    s = ds[0]
    box = pos_box(s, (4, 16, 16))
    np.testing.assert_array_equal(s["image"][0], padded_crop(image, box, ((1, 1), (4, 4), (4, 4))))
    np.testing.assert_array_equal(s["targets"][0][0], padded_crop(label, box, ((1, 1), (4, 4), (4, 4))) > 0)


def test_build_dataset_val_uses_half_input_stride(tmp_path):
    image, label = instance_volumes()
    write_h5(tmp_path / "vimg.h5", image)
    write_h5(tmp_path / "vlab.h5", label)
    cfg = small_cfg(tmp_path, image, label, "DATASET.VAL_IMAGE_NAME", "vimg.h5", "DATASET.VAL_LABEL_NAME",
                    "vlab.h5", "DATASET.VAL_PAD_SIZE", "[0, 0, 0]")
    ds = build_dataset(cfg, "val")
    assert len(ds) == (1 + math.ceil(4 / 2)) * (1 + math.ceil(24 / 8)) ** 2


def test_shape_mismatch_names_both_files(tmp_path):
    image, label = instance_volumes()
    with pytest.raises(VolumeError) as err:
        build_dataset(small_cfg(tmp_path, image, label[:, :, :30]), "train")
    msg = str(err.value)
    assert "lab.h5" in msg and "img.h5" in msg
    assert "[8, 40, 30]" in msg and "[8, 40, 40]" in msg


def test_missing_image_names_key_and_path(tmp_path):
    cfg = load_cfg(None, opts=["DATASET.INPUT_PATH", str(tmp_path), "DATASET.IMAGE_NAME", "nothere.h5"])
    with pytest.raises(VolumeNotFoundError) as err:
        build_dataset(cfg, "train")
    assert "DATASET.IMAGE_NAME" in str(err.value) and str(tmp_path / "nothere.h5") in str(err.value)


def test_sample_larger_than_volume_is_a_volume_error(tmp_path):
    image, label = instance_volumes(shape=(3, 40, 40))
    cfg = small_cfg(tmp_path, image, label, "DATASET.PAD_SIZE", "[0, 4, 4]")
    with pytest.raises(VolumeError) as err:
        build_dataset(cfg, "train")
    assert "img.h5" in str(err.value) and "[4, 16, 16]" in str(err.value) and "[3, 40, 40]" in str(err.value)


# ------------------------------------------------------------------ demo data
def test_demo_data_sample_matches_the_files():
    cfg = load_cfg("configs/mito.yaml", opts=["AUGMENTOR.ENABLED", "False", "MODEL.INPUT_SIZE", "[5, 64, 64]",
                                             "SOLVER.ITERATION_TOTAL", "2"])
    ds = build_dataset(cfg, "train")
    with h5py.File(DEMO / "train_image.h5") as f:
        image = f["main"][:]
    with h5py.File(DEMO / "train_label.h5") as f:
        label = f["main"][:]
    pad = ((4, 4), (32, 32), (32, 32))
    for i in range(3):
        s = ds[i]
        box = pos_box(s, (5, 64, 64))
        np.testing.assert_array_equal(s["image"][0], padded_crop(image, box, pad))
        np.testing.assert_array_equal(s["targets"][0][0], padded_crop(label, box, pad) > 0)
        assert [t.shape for t in s["targets"]] == [(1, 5, 64, 64), (1, 5, 64, 64)]
