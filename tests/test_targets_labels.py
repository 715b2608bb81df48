"""Label preprocessing: reduce_label, erosion (seg_widen_border), dilation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from connectomics_data.targets import dilate_label, erode_label, reduce_label
from connectomics_data.targets.labels import as_label_volume

small_labels = hnp.arrays(
    np.uint16,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7),
    elements=st.integers(0, 4),
)


def ref_erode(seg: np.ndarray, r: int) -> np.ndarray:
    """Brute force: per slice, reflect-padded window with > 1 distinct non-zero id -> 0."""
    out = seg.copy()
    for z in range(seg.shape[0]):
        p = np.pad(seg[z], r, mode="reflect")
        for y in range(seg.shape[1]):
            for x in range(seg.shape[2]):
                win = p[y : y + 2 * r + 1, x : x + 2 * r + 1]
                if len(set(win[win != 0].tolist())) > 1:
                    out[z, y, x] = 0
    return out


def ref_dilate(seg: np.ndarray, r: int) -> np.ndarray:
    out = np.zeros_like(seg)
    _, ny, nx = seg.shape
    for y in range(ny):
        for x in range(nx):
            win = seg[:, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            out[:, y, x] = win.max(axis=(1, 2))
    return out


def test_reduce_label_sorted_order_and_dtype():
    lab = np.array([[[0, 900, 900], [5, 0, 70000]]], np.uint64)
    out = reduce_label(lab)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[[0, 2, 2], [1, 0, 3]]])


def test_reduce_label_dtype_grows_with_count():
    lab = np.arange(300, dtype=np.uint32).reshape(1, 15, 20) * 7
    out = reduce_label(lab)
    assert out.dtype == np.uint16 and out.max() == 299
    np.testing.assert_array_equal(out.ravel(), np.arange(300))


def test_reduce_label_all_background_and_bool():
    out = reduce_label(np.zeros((2, 3, 4), np.uint32))
    assert out.dtype == np.uint8 and not out.any() and out.shape == (2, 3, 4)
    b = reduce_label(np.eye(3, dtype=bool)[None])
    assert b.dtype == np.uint8 and b.sum() == 3


@given(hnp.arrays(np.int64, (2, 5, 6), elements=st.integers(0, 2**40)))
@settings(max_examples=60, deadline=None)
def test_reduce_label_is_order_preserving_bijection(lab):
    out = reduce_label(lab)
    ids = np.unique(lab[lab != 0])
    assert out.max() == len(ids)
    assert np.array_equal(out == 0, lab == 0)
    # each original id maps to its rank among the sorted non-zero ids
    expected = np.searchsorted(ids, lab) + 1
    np.testing.assert_array_equal(out[lab != 0], expected[lab != 0])


def test_erode_hand_case():
    lab = np.zeros((1, 4, 6), np.uint8)
    lab[0, :, :3] = 1
    lab[0, :, 3:] = 2
    lab[0, 0, 5] = 0
    out = erode_label(lab, 1)
    expected = lab.copy()
    expected[0, :, 2:4] = 0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == lab.dtype
    np.testing.assert_array_equal(erode_label(lab, 0), lab)


@given(small_labels, st.integers(1, 3))
@settings(max_examples=80, deadline=None)
def test_erode_matches_bruteforce(lab, r):
    np.testing.assert_array_equal(erode_label(lab, r), ref_erode(lab, r))


@given(small_labels, st.integers(1, 3))
@settings(max_examples=80, deadline=None)
def test_dilate_matches_bruteforce(lab, r):
    np.testing.assert_array_equal(dilate_label(lab, r), ref_dilate(lab, r))


def test_erode_with_max_dtype_id():
    lab = np.zeros((1, 3, 5), np.uint8)
    lab[0, :, :2] = 255
    lab[0, :, 3:] = 7
    np.testing.assert_array_equal(erode_label(lab, 1), ref_erode(lab, 1))
    np.testing.assert_array_equal(erode_label(lab, 1), lab)  # the zero column separates them


def test_as_label_volume():
    assert as_label_volume(np.zeros((3, 4), np.uint8)).shape == (1, 3, 4)
    f = as_label_volume(np.array([[[1.0, 2.0]]], np.float32))
    assert f.dtype == np.int64
    with pytest.raises(ValueError, match="non-integral"):
        as_label_volume(np.array([[[1.5]]]))
    with pytest.raises(ValueError, match="shape"):
        as_label_volume(np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="integer ids"):
        as_label_volume(np.zeros((2, 2), complex))
    with pytest.raises(ValueError, match="negative"):
        as_label_volume(np.array([[0, -3]], np.int16))


def test_big_endian_labels_are_handled():
    lab = np.array([[[0, 900, 5], [5, 0, 70]]], ">u4")
    np.testing.assert_array_equal(reduce_label(lab), [[[0, 3, 1], [1, 0, 2]]])
    np.testing.assert_array_equal(
        erode_label(as_label_volume(lab), 1), erode_label(lab.astype("<u4"), 1)
    )


@given(small_labels, st.integers(1, 2))
@settings(max_examples=40, deadline=None)
def test_64bit_ids_beyond_float_precision(lab, r):
    """scipy filters run on float64 buffers; ids above 2**53 must still be exact."""
    big = lab.astype(np.uint64) * np.uint64(2**62) + (lab != 0).astype(np.uint64) * np.uint64(7)
    np.testing.assert_array_equal(erode_label(big, r), ref_erode(big, r))
    np.testing.assert_array_equal(dilate_label(big, r), ref_dilate(big, r))
    signed = (big >> np.uint64(1)).astype(np.int64)  # non-negative ids up to ~2**62
    np.testing.assert_array_equal(erode_label(signed, r), ref_erode(signed, r))
    np.testing.assert_array_equal(dilate_label(signed, r), ref_dilate(signed, r))
