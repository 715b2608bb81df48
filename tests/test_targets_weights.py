"""seg_to_weights: '0' (mask / None), '1' and '1-1' (class ratio), '2-w0-w1' (U-Net border)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from connectomics_data.targets import (
    parse_targets,
    parse_weight,
    parse_weights,
    seg_to_targets,
    seg_to_weights,
    unet_border_weight,
)


def two_touching() -> np.ndarray:
    lab = np.zeros((1, 6, 6), np.uint8)
    lab[0, 1:, :3] = 1
    lab[0, 1:, 3:] = 2
    return lab


def weights_for(codes, wcodes, lab, mask=None):
    targets = seg_to_targets(lab, parse_targets(codes))
    return targets, seg_to_weights(targets, parse_weights(wcodes), mask, lab)


def test_weight_0_is_mask_or_none():
    lab = two_touching()
    _, w = weights_for(["0"], [["0"]], lab)
    assert w == [[None]]
    mask = np.zeros(lab.shape, np.uint8)
    mask[0, :3] = 7
    _, w = weights_for(["0"], [["0"]], lab, mask)
    assert w[0][0].shape == (1, 1, 6, 6) and w[0][0].dtype == np.float32
    np.testing.assert_array_equal(w[0][0][0], mask != 0)


def test_weight_1_exact_ratio():
    # '0' on two_touching: 30 of 36 voxels are foreground, ww = 5/6: the background (minority)
    # gets (5/6) / (1/6) = 5, the foreground 1
    _, w = weights_for(["0"], [["1"]], two_touching())
    expected = np.ones((6, 6), np.float32)
    expected[0] = 5.0
    np.testing.assert_allclose(w[0][0][0, 0], expected, rtol=1e-6)
    assert w[0][0].dtype == np.float32


def test_weight_1_inside_mask():
    lab = two_touching()
    mask = np.zeros(lab.shape, bool)
    mask[0, :, :2] = True  # 12 voxels: 2 background, 10 foreground -> ww = 10/12, factor 5
    _, w = weights_for(["0"], [["1"]], lab, mask)
    expected = np.zeros((6, 6), np.float32)
    expected[:, :2] = 1.0
    expected[0, :2] = 5.0
    np.testing.assert_allclose(w[0][0][0, 0], expected, rtol=1e-6)


def test_weight_1_minority_foreground_is_clipped_and_dilated():
    t = np.zeros((1, 1, 6, 6), np.float32)
    t[0, 0, 2, 3] = 1.0  # ww = 1/36 -> clipped to 0.05 -> factor 0.95 / 0.05 = 19
    (w,) = seg_to_weights([t], [[parse_weight("1")]])[0]
    expected = np.ones((6, 6))
    expected[2, 3] = 19.0
    np.testing.assert_allclose(w[0, 0], expected, rtol=1e-6)
    (wd,) = seg_to_weights([t], [[parse_weight("1-1")]])[0]
    expected = np.ones((6, 6))
    expected[1:4, 2:5] = 19.0  # 3x3 dilation after measuring ww
    np.testing.assert_allclose(wd[0, 0], expected, rtol=1e-6)


def test_weight_1_constant_target_and_empty_mask():
    t = np.ones((3, 2, 4, 4), np.float32)
    (w,) = seg_to_weights([t], [[parse_weight("1")]])[0]
    np.testing.assert_array_equal(w, np.ones_like(t))
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[0] = 1
    (w,) = seg_to_weights([t], [[parse_weight("1")]], mask)[0]
    np.testing.assert_array_equal(w, np.broadcast_to(mask[None], t.shape))
    t2 = t.copy()
    t2[0, 0, 0, 0] = 0
    (w,) = seg_to_weights([t2], [[parse_weight("1")]], np.zeros((2, 4, 4)))[0]
    np.testing.assert_array_equal(w, np.zeros_like(t2))


def test_weight_1_multichannel_uses_the_true_fraction():
    aff = np.zeros((3, 1, 2, 5), np.float32)
    aff[:, :, :, :4] = 1.0  # 24 of 30 -> ww 0.8, factor 4 on the background
    mask = np.ones((1, 2, 5), bool)
    (w,) = seg_to_weights([aff], [[parse_weight("1")]], mask)[0]
    assert w.shape == aff.shape
    np.testing.assert_allclose(w, np.where(aff > 0, 1.0, 4.0), rtol=1e-6)


def ref_unet(label: np.ndarray, w0: float, w1: float, sigma: float = 5.0) -> np.ndarray:
    """PyTC's per-object loop: one EDT per object, partition for the two smallest."""
    out = np.ones(label.shape, np.float64)
    for z in range(label.shape[0]):
        seg = label[z]
        ids = np.unique(seg[seg != 0])
        if len(ids) == 0:
            continue
        fg = seg != 0
        if len(ids) < 2:
            out[z] = np.clip(fg * w1, 1.0, max(w0, w1))
            continue
        dist = np.stack([ndimage.distance_transform_edt(seg != i) for i in ids])
        dist = np.partition(dist, 1, axis=0)
        bg = w0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * sigma**2))
        out[z] = np.clip(np.where(fg, w1, bg), 1.0, max(w0, w1))
    return out[None]


def test_unet_weight_at_known_points():
    lab = np.zeros((1, 5, 9), np.uint8)
    lab[0, 2, 1] = 1
    lab[0, 2, 7] = 2
    w = unet_border_weight(lab, 10.0, 5.0)
    assert w.shape == (1, 1, 5, 9) and w.dtype == np.float32
    assert w[0, 0, 2, 4] == pytest.approx(10.0 * np.exp(-(6.0**2) / 50.0), rel=1e-6)
    d1, d2 = np.hypot(2, 1), np.hypot(2, 7)
    assert w[0, 0, 0, 0] == pytest.approx(10.0 * np.exp(-((d1 + d2) ** 2) / 50.0), rel=1e-6)
    assert w[0, 0, 2, 1] == 5.0 and w[0, 0, 2, 7] == 5.0
    np.testing.assert_allclose(w, ref_unet(lab, 10.0, 5.0), rtol=1e-6)


def test_unet_weight_slices_without_two_objects():
    lab = np.zeros((3, 4, 4), np.uint16)
    lab[1, 1, 1] = 3
    w = unet_border_weight(lab, 10.0, 5.0)
    expected = np.ones((3, 4, 4))
    expected[1, 1, 1] = 5.0
    np.testing.assert_array_equal(w[0], expected)
    w_low = unet_border_weight(lab, 10.0, 0.5)  # w1 < 1 is clipped up to 1
    np.testing.assert_array_equal(w_low, np.ones_like(w_low))


@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 40),
    st.sampled_from([(10.0, 5.0), (3.0, 1.0), (1.0, 4.0), (30.0, 2.0)]),
)
@settings(max_examples=40, deadline=None)
def test_unet_weight_matches_per_object_reference(seed, n_objects, ws):
    rng = np.random.default_rng(seed)
    lab = np.zeros((2, 40, 48), np.uint32)
    for k in range(n_objects):  # random rectangles, later ones overwrite earlier ones
        z = rng.integers(0, 2)
        y0, x0 = rng.integers(0, 40), rng.integers(0, 48)
        h, w = rng.integers(1, 6, size=2)
        lab[z, y0 : y0 + h, x0 : x0 + w] = 1000 + 17 * k
    w0, w1 = ws
    np.testing.assert_allclose(unet_border_weight(lab, w0, w1), ref_unet(lab, w0, w1), rtol=1e-5)


def test_seg_to_weights_unet_masked_and_shapes():
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[:, 1:3, 1:3] = 1
    lab[:, 5:7, 5:7] = 2
    mask = np.ones(lab.shape, bool)
    mask[1] = False
    targets = seg_to_targets(lab, parse_targets(["2", "0"]))
    w = seg_to_weights(targets, parse_weights([["1", "2-10-5"], ["0"]]), mask, lab)
    assert w[0][0].shape == (3, 2, 8, 8)
    assert w[0][1].shape == (1, 2, 8, 8)
    np.testing.assert_allclose(w[0][1][0, 0], ref_unet(lab, 10, 5)[0, 0], rtol=1e-6)
    assert not w[0][1][0, 1].any()  # outside the valid mask
    np.testing.assert_array_equal(w[1][0][0], mask)
    with pytest.raises(ValueError, match="needs the label"):
        seg_to_weights(targets, parse_weights([["2"], ["0"]]))
    with pytest.raises(ValueError, match="weight lists"):
        seg_to_weights(targets, parse_weights([["1"]]))


def test_weights_2d():
    lab = two_touching()[0]
    specs = parse_targets(["4-1-1"], do_2d=True)
    targets = seg_to_targets(lab, specs)
    assert targets[0].shape == (1, 6, 6)
    mask = np.ones((6, 6), bool)
    w = seg_to_weights(targets, parse_weights([["1", "2", "0"]]), mask, lab)
    assert [x.shape for x in w[0]] == [(1, 6, 6)] * 3
    np.testing.assert_allclose(w[0][1], unet_border_weight(lab[None])[:, 0], rtol=1e-6)
