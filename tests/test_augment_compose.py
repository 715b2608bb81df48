"""Compose: the sample contract (shapes, dtypes, kinds, pass-through), identity, determinism,
SKIP, 2D / 4D / non-square inputs and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from connectomics_data.augment import (
    Compose,
    CopyPaste,
    CutBlur,
    CutNoise,
    Elastic,
    Flip,
    Grayscale,
    MisAlignment,
    MissingParts,
    MissingSection,
    MotionBlur,
    Noise,
    Rescale,
    Rotate,
    warp_nearest,
)
from connectomics_data.errors import ConfigError, VolumeError


def all_transforms(p: float = 1.0, rot90: bool = False) -> list:
    return [
        Rotate(rot90=rot90, p=p),
        Rescale(p=p),
        Flip(p=p),
        Elastic(p=p),
        MisAlignment(rotate_ratio=0.5, p=p),
        MissingSection(p=p),
        CopyPaste(p=p),
        CutNoise(p=p),
        CutBlur(p=p),
        MotionBlur(p=p),
        MissingParts(iterations=4, p=p),
        Grayscale(p=p),
        Noise(p=p),
    ]


def make_sample(shape, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    img_shape = shape if channels is None else (channels,) + tuple(shape)
    img = rng.integers(0, 256, img_shape, dtype=np.uint8)
    lab = np.zeros(shape, np.uint16)
    Z, Y, X = shape
    lab[:, Y // 4 : Y // 2, X // 4 : X // 2] = 7
    lab[:, Y // 2 + 2 :, X // 2 + 2 :] = 40000
    valid = np.ones(shape, np.uint8)
    valid[:, :, : X // 8] = 0
    return {"image": img, "label": lab, "valid_mask": valid}


def centre_crop(a, size):
    sl = tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(a.shape[-3:], size))
    return a[(Ellipsis, *sl)]


def test_output_shapes_dtypes_and_pass_through():
    size = (8, 48, 64)
    comp = Compose(
        all_transforms(),
        size,
        additional_targets={"label": "mask", "valid_mask": "mask", "aux": "img"},
    )
    sample = make_sample(comp.sample_size)
    sample["aux"] = sample["image"].astype(np.float32) / 255
    sample["meta"] = {"pos": (1, 2, 3)}
    sample["weight"] = np.ones(3)
    out = comp(sample, np.random.default_rng(0))
    assert out["meta"] is sample["meta"] and out["weight"] is sample["weight"]
    assert out["image"].shape == size and out["image"].dtype == np.float32
    assert out["aux"].shape == size and out["aux"].dtype == np.float32
    assert out["label"].dtype == np.uint16 and out["valid_mask"].dtype == np.uint8
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert set(np.unique(out["label"])) <= {0, 7, 40000}
    assert set(np.unique(out["valid_mask"])) <= {0, 1}
    assert sample["image"].dtype == np.uint8  # the input is not modified


def test_missing_or_none_targets_are_fine():
    comp = Compose([Flip(p=1)], (2, 8, 8))
    sample = make_sample((2, 8, 8))
    sample["valid_mask"] = None
    del sample["label"]
    out = comp(sample, np.random.default_rng(0))
    assert out["valid_mask"] is None and "label" not in out


@pytest.mark.parametrize("big", [False, True])
def test_p_zero_is_the_centre_crop(big):
    size = (6, 30, 40)
    comp = Compose(all_transforms(p=0.0), size)
    assert comp.sample_size == size
    shape = (9, 37, 44) if big else size
    sample = make_sample(shape)
    out = comp(sample, np.random.default_rng(1))
    np.testing.assert_array_equal(out["label"], centre_crop(sample["label"], size))
    np.testing.assert_array_equal(
        out["image"], centre_crop(sample["image"], size).astype(np.float32) * np.float32(1 / 255)
    )


def test_float_image_is_not_rescaled():
    size = (4, 16, 16)
    comp = Compose([Flip(p=0)], size)
    img = np.random.default_rng(0).random(size)  # float64
    out = comp({"image": img}, np.random.default_rng(0))
    assert out["image"].dtype == np.float32
    np.testing.assert_array_equal(out["image"], img.astype(np.float32))


def test_same_seed_is_bit_identical_and_seeds_differ():
    size = (8, 40, 40)
    comp = Compose(all_transforms(p=0.7), size)
    sample = make_sample(comp.sample_size, seed=3)
    a = comp(sample, np.random.default_rng(42))
    b = comp(sample, np.random.default_rng(42))
    for k in ("image", "label", "valid_mask"):
        np.testing.assert_array_equal(a[k], b[k])
    c = comp(sample, np.random.default_rng(43))
    assert not np.array_equal(a["image"], c["image"])


def test_no_global_random_state_is_used():
    size = (6, 24, 24)
    comp = Compose(all_transforms(), size)
    sample = make_sample(comp.sample_size)
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    a = comp(sample, np.random.default_rng(5))
    after = np.random.get_state()[1]
    np.testing.assert_array_equal(before, after)
    np.random.seed(123)
    b = comp(sample, np.random.default_rng(5))
    np.testing.assert_array_equal(a["image"], b["image"])


def test_skipped_targets_get_only_the_centre_crop():
    size = (8, 32, 32)
    names = ["label"]
    ts = [
        Rotate(rot90=False, p=1, skip=names),
        Rescale(p=1, skip=names),
        Flip(p=1, skip=names),
        Elastic(p=1, skip=names),
        MisAlignment(p=1, skip=names),
        MissingSection(p=1, skip=names),
    ]
    comp = Compose(ts, size)
    sample = make_sample(comp.sample_size)
    out = comp(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["label"], centre_crop(sample["label"], size))
    assert not np.array_equal(
        out["image"], centre_crop(sample["image"], size) * np.float32(1 / 255)
    )


def test_partial_skip_uses_the_map_without_that_transform():
    size = (6, 32, 32)
    comp = Compose([Rotate(rot90=False, p=1, skip=["label"]), Elastic(p=1)], size)
    sample = make_sample(comp.sample_size)
    params = comp.randomize(np.random.default_rng(2))
    out = comp.apply(sample, params)
    label_plan = comp.plan(params, key="label")
    np.testing.assert_array_equal(out["label"], warp_nearest(sample["label"], label_plan))
    np.testing.assert_array_equal(
        out["valid_mask"], warp_nearest(sample["valid_mask"], comp.plan(params))
    )
    assert not np.array_equal(label_plan.maps[0], comp.plan(params).maps[0])


def test_intensity_skip_leaves_the_image_alone():
    size = (4, 16, 16)
    comp = Compose([Grayscale(p=1, skip=["image"])], size, additional_targets={"aux": "img"})
    sample = make_sample(size)
    sample["aux"] = sample["image"].copy()
    out = comp(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], sample["image"] * np.float32(1 / 255))
    assert not np.array_equal(out["aux"], out["image"])


def test_img_targets_get_intensity_transforms_and_masks_do_not():
    size = (8, 40, 40)
    intensity = [
        CutNoise(p=1),
        CutBlur(p=1),
        MotionBlur(p=1),
        MissingParts(iterations=3, p=1),
        Grayscale(p=1),
        Noise(p=1),
    ]
    comp = Compose(
        [Rotate(rot90=False, p=1), Elastic(p=1)] + intensity,
        size,
        additional_targets={"label": "mask", "aux": "img", "lab_copy": "mask"},
    )
    sample = make_sample(comp.sample_size)
    sample["aux"] = sample["image"].copy()
    sample["lab_copy"] = sample["image"].copy()  # same values as the image, but a mask
    params = comp.randomize(np.random.default_rng(9))
    out = comp.apply(sample, params)
    np.testing.assert_array_equal(out["aux"], out["image"])  # identical parameters
    # the mask copy is only warped: integer values of the input, equal to a nearest gather
    np.testing.assert_array_equal(out["lab_copy"], warp_nearest(sample["image"], comp.plan(params)))
    no_intensity = Compose([Rotate(rot90=False, p=1), Elastic(p=1)], size).apply(sample, params[:2])
    assert not np.allclose(out["image"], no_intensity["image"])


@pytest.mark.parametrize("shape", [(5, 24, 40), (5, 41, 24), (4, 17, 30)])
@pytest.mark.parametrize("index", range(13))
def test_every_transform_on_non_square_inputs(shape, index):
    t = all_transforms(p=1.0)[index]
    comp = Compose([t], shape)
    sample = make_sample(comp.sample_size, seed=index)
    for seed in range(3):
        out = comp(sample, np.random.default_rng(seed))
        assert out["image"].shape == shape and out["label"].shape == shape
        assert (
            out["image"].dtype == np.float32 and 0 <= out["image"].min() and out["image"].max() <= 1
        )
        assert set(np.unique(out["label"])) <= {0, 7, 40000}


def test_rot90_on_non_square_is_exact_and_shaped():
    shape = (3, 20, 32)
    comp = Compose([Rotate(rot90=True, p=1)], shape)
    sample = make_sample(comp.sample_size)
    lab = np.arange(np.prod(comp.sample_size), dtype=np.uint32).reshape(comp.sample_size)
    sample["label"] = lab
    for seed in range(6):
        out = comp(sample, np.random.default_rng(seed))
        assert out["label"].shape == shape
        assert np.unique(out["label"]).size == out["label"].size  # a permutation: no repeats


def test_2d_inputs():
    size = (1, 48, 40)
    comp = Compose(all_transforms(), size)
    assert comp.sample_size[0] == 1  # no z margin: misalignment / missing sections cannot act
    sample = make_sample(comp.sample_size)
    for seed in range(4):
        out = comp(sample, np.random.default_rng(seed))
        assert out["image"].shape == size and out["label"].shape == size


def test_4d_channel_first_image():
    size = (5, 32, 32)
    comp = Compose(all_transforms(p=0.8), size)
    sample = make_sample(comp.sample_size, channels=3)
    out = comp(sample, np.random.default_rng(4))
    assert out["image"].shape == (3,) + size and out["label"].shape == size
    for c in range(3):
        one = dict(sample, image=np.ascontiguousarray(sample["image"][c]))
        np.testing.assert_array_equal(out["image"][c], comp(one, np.random.default_rng(4))["image"])


def test_4d_mask_targets():
    size = (4, 20, 20)
    comp = Compose([Rotate(rot90=False, p=1), Flip(p=1)], size)
    sample = make_sample(comp.sample_size)
    sample["label"] = np.stack([sample["label"], sample["label"][::-1].copy()])
    out = comp(sample, np.random.default_rng(0))
    assert out["label"].shape == (2,) + size and out["label"].dtype == np.uint16


def test_smooth_option_keeps_mask_values():
    size = (4, 40, 40)
    comp = Compose([Rotate(rot90=False, p=1)], size, smooth=True)
    sample = make_sample(comp.sample_size)
    out = comp(sample, np.random.default_rng(0))
    assert set(np.unique(out["label"])) <= {0, 7, 40000}
    assert (out["label"] == 7).sum() > 0


# ----------------------------------------------------------------------------- errors
def test_input_errors():
    comp = Compose([Flip(p=1)], (2, 8, 8))
    rng = np.random.default_rng(0)
    with pytest.raises(VolumeError, match="no 'image'"):
        comp({"label": np.zeros((2, 8, 8))}, rng)
    with pytest.raises(VolumeError, match="numpy array"):
        comp({"image": np.zeros((8, 8), np.uint8)}, rng)
    with pytest.raises(VolumeError, match="spatial shape"):
        comp({"image": np.zeros((2, 8, 8), np.uint8), "label": np.zeros((2, 8, 9), np.uint8)}, rng)
    with pytest.raises(VolumeError, match="dtype int32"):
        comp({"image": np.zeros((2, 8, 8), np.int32)}, rng)
    with pytest.raises(TypeError, match="Generator"):
        comp({"image": np.zeros((2, 8, 8), np.uint8)}, np.random.RandomState(0))


def test_construction_errors():
    with pytest.raises(ConfigError, match="one Rotate"):
        Compose([Rotate(), Rotate()], (2, 8, 8))
    with pytest.raises(ConfigError, match="DO_ZTRANS"):
        Compose([Flip(do_ztrans=True)], (2, 8, 8))
    with pytest.raises(ConfigError, match="kind"):
        Compose([], (2, 8, 8), additional_targets={"label": "nearest"})
    with pytest.raises(ConfigError, match="input_size"):
        Compose([], (0, 8, 8))
    with pytest.raises(ConfigError, match=r"ELASTIC.P"):
        Elastic(p=1.5)
