"""BlockCountTable (upper bounds of non-zero counts) and source_extent (padded-read sources)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.geometry import Box
from connectomics_data.io import open_volume
from connectomics_data.io.base import ArrayVolume
from connectomics_data.sampling import BlockCountTable, source_extent


def _exact(mask: np.ndarray, box: Box) -> int:
    inside = box.clip(mask.shape)
    return 0 if inside.is_empty else int(np.count_nonzero(mask[inside.slices()]))


@st.composite
def volume_block_box(draw):
    shape = tuple(draw(st.integers(1, n)) for n in (6, 20, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    rng = np.random.default_rng(seed)
    label = (rng.random(shape) < density) * rng.integers(1, 5, shape)
    block = tuple(draw(st.integers(1, 7)) for _ in range(3))
    start = [draw(st.integers(-4, n + 2)) for n in shape]
    stop = [s + draw(st.integers(0, n + 6)) for s, n in zip(start, shape)]
    return label.astype(np.uint16), block, Box(start, stop)


@settings(max_examples=150, deadline=None)
@given(volume_block_box())
def test_upper_bound_is_at_least_the_exact_count(case):
    label, block, box = case
    table = BlockCountTable(label, block)
    assert table.total == np.count_nonzero(label)
    assert table.upper_bound(box) >= _exact(label, box)
    # the bound never exceeds the blocks that the box touches
    assert table.upper_bound(box) <= table.total


@settings(max_examples=100, deadline=None)
@given(volume_block_box(), st.data())
def test_upper_bound_is_exact_for_block_aligned_boxes(case, data):
    label, block, _ = case
    table = BlockCountTable(label, block)
    grid = [-(-n // b) for n, b in zip(label.shape, block)]
    lo = [data.draw(st.integers(0, g - 1)) for g in grid]
    hi = [data.draw(st.integers(a + 1, g)) for a, g in zip(lo, grid)]
    # block-aligned; the last block may be cut by the volume edge (stop = shape is aligned)
    box = Box([a * b for a, b in zip(lo, block)], [min(h * b, n) for h, b, n in zip(hi, block, label.shape)])
    assert table.upper_bound(box) == _exact(label, box)


@settings(max_examples=50, deadline=None)
@given(volume_block_box())
def test_unit_blocks_give_exact_counts_everywhere(case):
    label, _, box = case
    assert BlockCountTable(label, (1, 1, 1)).upper_bound(box) == _exact(label, box)


def test_empty_or_outside_box_bounds_to_zero():
    label = np.ones((4, 8, 8), np.uint8)
    table = BlockCountTable(label, (2, 4, 4))
    assert table.upper_bound(Box([0, 0, 0], [0, 8, 8])) == 0
    assert table.upper_bound(Box([-5, 0, 0], [-1, 8, 8])) == 0
    assert table.upper_bound(Box([0, 9, 0], [4, 20, 8])) == 0
    assert table.upper_bound(Box([-5, -5, -5], [50, 50, 50])) == 256


def test_four_d_volume_counts_voxels_nonzero_in_any_channel():
    rng = np.random.default_rng(0)
    data = (rng.random((3, 5, 12, 12)) < 0.1).astype(np.uint8)
    anyc = data.max(axis=0)
    table = BlockCountTable(ArrayVolume(data), (2, 3, 5))
    assert table.total == np.count_nonzero(anyc)
    assert BlockCountTable(ArrayVolume(data), (1, 1, 1)).upper_bound(Box([1, 2, 3], [4, 9, 11])) == \
        _exact(anyc, Box([1, 2, 3], [4, 9, 11]))


def test_predicate_is_applied():
    label = np.arange(4 * 6 * 6, dtype=np.int32).reshape(4, 6, 6) % 7
    table = BlockCountTable(label, (1, 1, 1), predicate=lambda slab: slab >= 5)
    assert table.total == np.count_nonzero(label >= 5)


def test_lazy_hdf5_volume_matches_in_memory(tmp_path):
    rng = np.random.default_rng(3)
    label = ((rng.random((7, 30, 26)) < 0.02) * 9).astype(np.uint32)
    path = tmp_path / "label.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=label, chunks=(1, 8, 8))
    vol = open_volume(str(path))
    lazy, mem = BlockCountTable(vol, (3, 8, 8)), BlockCountTable(label, (3, 8, 8))
    np.testing.assert_array_equal(lazy.sat, mem.sat)
    assert lazy.total == np.count_nonzero(label)


# ------------------------------------------------------------------ source_extent
def _reference_extent(box: Box, shape, mode: str):
    """Sources of a padded read by brute force: pad an array of linear indices with np.pad."""
    codes = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    widths = [(max(0, -a), max(0, b - n)) for a, b, n in zip(box.start, box.stop, shape)]
    if mode == "constant":
        padded = np.pad(codes, widths, mode="constant", constant_values=-1)
    else:
        padded = np.pad(codes, widths, mode=mode)
    crop = padded[tuple(slice(a + w[0], b + w[0]) for a, b, w in zip(box.start, box.stop, widths))]
    src = crop[crop >= 0]
    if src.size == 0:
        return None, 0
    idx = np.unravel_index(src, shape)
    ref = Box([int(i.min()) for i in idx], [int(i.max()) + 1 for i in idx])
    return ref, int(np.bincount(src).max())


@settings(max_examples=200, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 7)] * 3),
    offs=st.tuples(*[st.integers(-12, 12)] * 3),
    size=st.tuples(*[st.integers(1, 14)] * 3),
    mode=st.sampled_from(["reflect", "symmetric", "edge", "wrap", "constant"]),
)
def test_source_extent_matches_brute_force(shape, offs, size, mode):
    box = Box.from_shape(size, offs)
    got, mult = source_extent(box, shape, mode)
    ref, ref_mult = _reference_extent(box, shape, mode)
    if ref is None:
        assert got.is_empty
        return
    assert got == ref
    assert mult == (1 if mode == "constant" else ref_mult)
    if mode == "constant":
        assert ref_mult == 1


def test_source_extent_inside_box_is_itself():
    box = Box([1, 2, 3], [3, 5, 7])
    assert source_extent(box, (4, 8, 8), "reflect") == (box, 1)


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge", "wrap"])
def test_bound_times_multiplicity_bounds_a_padded_read(mode):
    rng = np.random.default_rng(5)
    label = (rng.random((5, 9, 9)) < 0.2).astype(np.uint8)
    table = BlockCountTable(label, (2, 4, 4))
    vol = ArrayVolume(label)
    for _ in range(50):
        start = rng.integers(-8, 8, 3)
        box = Box.from_shape(rng.integers(1, 16, 3), start)
        src, mult = source_extent(box, label.shape, mode)
        assert table.upper_bound(src) * mult >= np.count_nonzero(vol.read(box, mode))
