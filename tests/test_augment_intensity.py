"""Intensity transforms, copy-paste and mask smoothing, each against a plain numpy
statement of what it should do."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from connectomics_data.augment import (
    Compose,
    CopyPaste,
    CutBlur,
    CutNoise,
    Grayscale,
    MissingParts,
    MotionBlur,
    Noise,
)
from connectomics_data.augment.base import ChainContext
from connectomics_data.augment.intensity import block_average
from connectomics_data.augment.smooth import smooth_edges


def ctx(shape):
    return ChainContext(tuple(shape), shape[0])


def rand_img(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# ----------------------------------------------------------------------------- grayscale
@pytest.mark.parametrize("mode", ["2D", "3D"])
def test_grayscale_formula(mode):
    shape = (6, 20, 24)
    t = Grayscale(mode=mode, p=1)
    params = t.randomize(np.random.default_rng(0), ctx(shape))
    x = rand_img(shape)
    got = x.copy()
    t.apply({"image": got}, params)
    for z in range(shape[0]):
        i = z if mode == "2D" else 0
        g, o, gam = params.gain[i, 0, 0], params.offset[i, 0, 0], params.gamma[i, 0, 0]
        assert 0.85 <= g <= 1.15 and -0.15 <= o <= 0.15 and 0.5 <= gam <= 2
        ref = np.clip(x[z].astype(np.float64) * g + o, 0, 1) ** gam
        np.testing.assert_allclose(got[z], ref, atol=2e-6)
    per_slice = {tuple(np.round(params.gamma.ravel(), 6))}
    assert len(set(params.gamma.ravel())) == (shape[0] if mode == "2D" else 1), per_slice


def test_grayscale_mix_really_mixes():
    t = Grayscale(mode="mix", p=1)
    modes = {t.randomize(np.random.default_rng(s), ctx((4, 8, 8))).mode for s in range(20)}
    assert modes == {"2D", "3D"}


# ----------------------------------------------------------------------------- missing parts
def _digital_line(a, b, shape):
    n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]))) * 4 + 1
    ys = np.rint(np.linspace(a[0], b[0], n)).astype(int)
    xs = np.rint(np.linspace(a[1], b[1], n)).astype(int)
    m = np.zeros(shape, bool)
    m[ys, xs] = True
    return m


def test_missing_parts_fills_a_dilated_line_with_the_mean():
    shape = (12, 60, 50)
    t = MissingParts(iterations=5, p=0.7)
    x = rand_img(shape, 1)
    got = x.copy()
    params = t.randomize(np.random.default_rng(3), ctx(shape))
    assert params.lines
    zs = [z for z, _, _ in params.lines]
    assert all(b - a >= 3 for a, b in zip(zs, zs[1:]))  # a hit skips the next two sections
    t.apply({"image": got}, params)
    for z in range(shape[0]):
        if z not in zs:
            np.testing.assert_array_equal(got[z], x[z])
    for z, a, b in params.lines:
        band = t.band(shape[1:], a, b)
        np.testing.assert_allclose(got[z][band], x[z].mean(), rtol=1e-6)
        np.testing.assert_array_equal(got[z][~band], x[z][~band])
        # the band is what ITER binary dilations (4-connected) of the rasterised line give
        ref = ndimage.binary_dilation(_digital_line(a, b, shape[1:]), iterations=5)
        iou = (band & ref).sum() / (band | ref).sum()
        assert iou > 0.9


# ----------------------------------------------------------------------------- motion blur
def test_motion_blur_averages_a_line_on_chosen_sections():
    shape = (7, 30, 30)
    t = MotionBlur(sections=3, kernel_size=5, p=1)
    params = t.randomize(np.random.default_rng(0), ctx(shape))
    assert len(params.sections) == 3 and len(set(params.sections)) == 3
    x = rand_img(shape)
    got = x.copy()
    t.apply({"image": got}, params)
    for z in range(shape[0]):
        if z in params.sections:
            ax = 1 if params.axis == -1 else 0
            pad = [(0, 0), (0, 0)]
            pad[ax] = (2, 2)
            padded = np.pad(x[z].astype(np.float64), pad, mode="reflect")
            ref = sum(np.take(padded, np.arange(k, k + 30), axis=ax) for k in range(5)) / 5
            np.testing.assert_allclose(got[z], ref, atol=1e-5)
        else:
            np.testing.assert_array_equal(got[z], x[z])


# ----------------------------------------------------------------------------- cut-blur / noise
def test_block_average_preserves_sums_and_is_blockwise_constant():
    rng = np.random.default_rng(0)
    a = rng.random((3, 17, 10), dtype=np.float32)
    b = block_average(a, {-2: 4, -1: 3})
    np.testing.assert_allclose(b.sum(axis=(1, 2)), a.sum(axis=(1, 2)), rtol=1e-5)
    assert all(np.unique(b[z]).size <= 12 for z in range(3))


def test_cut_blur_changes_only_its_box():
    shape = (8, 40, 40)
    t = CutBlur(length_ratio=0.4, p=1)
    params = t.randomize(np.random.default_rng(2), ctx(shape))
    x = rand_img(shape)
    got = x.copy()
    t.apply({"image": got}, params)
    inside = np.zeros(shape, bool)
    inside[params.box] = True
    np.testing.assert_array_equal(got[~inside], x[~inside])
    assert [s.stop - s.start for s in params.box] == [3, 16, 16]
    np.testing.assert_allclose(got[inside].sum(), x[inside].sum(), rtol=1e-5)
    assert np.unique(got[params.box][0]).size <= (16 / params.ratio + 1) ** 2


def test_cut_noise_changes_only_its_box_within_scale():
    shape = (8, 40, 40)
    t = CutNoise(length_ratio=0.5, scale=0.2, p=1)
    params = t.randomize(np.random.default_rng(2), ctx(shape))
    x = rand_img(shape)
    got = x.copy()
    t.apply({"image": got}, params)
    inside = np.zeros(shape, bool)
    inside[params.box] = True
    np.testing.assert_array_equal(got[~inside], x[~inside])
    np.testing.assert_allclose(got[params.box], np.clip(x[params.box] + params.noise, 0, 1))
    assert np.abs(params.noise).max() <= 0.2


@pytest.mark.parametrize("mode", ["gaussian", "poisson", "salt_pepper", "speckle"])
def test_noise_modes(mode):
    shape = (4, 64, 64)
    t = Noise(mode=mode, scale=0.1, p=1)
    x = np.full(shape, 0.5, np.float32)
    x[0] = 0.0
    got = x.copy()
    params = t.randomize(np.random.default_rng(0), ctx(shape))
    t.apply({"image": got, "other": x.copy()}, params)
    assert got.min() >= 0 and got.max() <= 1
    d = got[1:] - 0.5
    if mode == "gaussian":
        assert abs(d.std() - 0.1) < 0.01
    elif mode == "speckle":
        assert abs(d.std() - 0.05) < 0.005
        np.testing.assert_array_equal(got[0], 0)
    elif mode == "poisson":
        assert abs(d.std() - 0.1 * np.sqrt(0.5)) < 0.01
        np.testing.assert_array_equal(got[0], 0)
    else:
        frac = np.isin(got, (0.0, 1.0))[1:].mean()
        assert abs(frac - 0.1) < 0.02


def test_noise_is_identical_for_every_img_target():
    shape = (3, 16, 16)
    comp = Compose([Noise(p=1)], shape, additional_targets={"aux": "img"})
    img = np.full(shape, 128, np.uint8)
    out = comp({"image": img, "aux": img.astype(np.float32) / 255}, np.random.default_rng(1))
    np.testing.assert_allclose(out["image"], out["aux"], atol=1e-6)


# ----------------------------------------------------------------------------- copy-paste
def test_copy_paste_pastes_a_moved_copy_and_updates_the_label():
    shape = (4, 40, 40)
    lab = np.zeros(shape, np.uint8)
    lab[:, 6:16, 4:14] = 1
    img = np.full(shape, 0.2, np.float32)
    img[lab == 1] = 0.9
    comp = Compose([CopyPaste(p=1)], shape)
    out = comp({"image": img, "label": lab}, np.random.default_rng(0))
    new = (out["label"] == 1) & (lab == 0)
    assert new.sum() > 0
    grown = ndimage.binary_dilation(lab == 1, structure=np.ones((3, 3, 3)), iterations=3)
    assert not (new & grown).any()  # never pasted onto (or next to) existing objects
    np.testing.assert_array_equal(out["label"][lab == 1], 1)  # the original object stays
    np.testing.assert_allclose(out["image"][new], 0.9)  # the object's image content moved along
    np.testing.assert_array_equal(out["image"][~new], img[~new])


def test_copy_paste_skips_large_foreground_and_missing_labels():
    shape = (2, 16, 16)
    comp = Compose([CopyPaste(aug_thres=0.5, p=1)], shape)
    lab = np.ones(shape, np.uint8)
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = comp({"image": img, "label": lab}, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], img)
    out = comp({"image": img}, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], img)


# ----------------------------------------------------------------------------- smoothing
def test_smooth_edges_removes_thin_structures_keeps_blobs_and_values():
    lab = np.zeros((2, 40, 40), np.uint32)
    lab[:, 5:30, 5:30] = 2**30 + 3
    lab[:, 35, :] = 9  # one-voxel line
    out = smooth_edges(lab)
    assert set(np.unique(out)) <= {0, 9, 2**30 + 3}
    assert not (out == 9).any()
    assert abs(int((out == 2**30 + 3).sum()) - 2 * 25 * 25) < 2 * 25 * 4


def test_missing_parts_draws_its_line_in_the_sample_frame_as_pytc_does():
    """PyTC applies MissingParts to the sample before the centre crop, so the line runs between
    edges of the sample frame; on the (smaller) output crop the band may then miss the crop
    instead of always cutting through it."""
    out, sample = (1, 40, 40), (1, 100, 100)
    oy = ox = 30
    t = MissingParts(iterations=2, p=1.0)
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(200):
        (z, a, b), = t.randomize(rng, ChainContext(out, 1, 0.0, sample[1:])).lines
        if a[0] == -oy:  # top to bottom of the sample frame
            assert b[0] == sample[1] - 1 - oy and all(1 - ox <= p[1] <= sample[2] - 3 - ox for p in (a, b))
        else:  # left to right
            assert a[1] == -ox and b[1] == sample[2] - 1 - ox
            assert all(1 - oy <= p[0] <= sample[1] - 3 - oy for p in (a, b))
        covered.append(t.band(out[1:], a, b).mean())
    covered = np.array(covered)
    assert (covered == 0).mean() > 0.15  # many bands pass beside the crop
    # without a sample frame (the crop is the sample) every band crosses the crop
    for _ in range(20):
        (z, a, b), = t.randomize(rng, ChainContext(out, 1)).lines
        assert t.band(out[1:], a, b).any()
