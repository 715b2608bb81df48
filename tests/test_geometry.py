"""Property tests of boxes, halos, padding widths, sliding-window and chunk grids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.geometry import (
    Box,
    ChunkGrid,
    SlidingWindowGrid,
    chunk_bounds,
    normalize_halo,
    parse_chunk_split,
    split_indices,
    window_starts,
)

dims = st.integers(1, 40)
shape3 = st.tuples(dims, dims, dims)


@st.composite
def boxes(draw, lo=-30, hi=60):
    start = [draw(st.integers(lo, hi)) for _ in range(3)]
    size = [draw(st.integers(0, 30)) for _ in range(3)]
    return Box(start, [s + n for s, n in zip(start, size)])


def test_box_basics():
    b = Box([1, 2, 3], [4, 6, 8])
    assert b.shape == (3, 4, 5) and b.size == 60 and b.ndim == 3
    assert b.slices() == (slice(1, 4), slice(2, 6), slice(3, 8))
    assert b.shift([1, -2, 0]) == Box([2, 0, 3], [5, 4, 8])
    assert b.grow(1) == Box([0, 1, 2], [5, 7, 9])
    assert b.grow([1, 0, 2]) == Box([0, 2, 1], [5, 6, 10])
    assert b.grow([1, 2, 0, 0, 3, 4]) == Box([0, 2, 0], [6, 6, 12])
    assert Box.from_shape([2, 3, 4], [1, 1, 1]) == Box([1, 1, 1], [3, 4, 5])
    with pytest.raises(ValueError):
        Box([0, 0, 0], [1, -1, 1])
    with pytest.raises(ValueError):
        Box([0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="halo"):
        normalize_halo([1, 2], 3)


@given(boxes(), boxes())
def test_intersection_is_the_voxelwise_and(a, b):
    inter = a.intersect(b)
    assert a.contains(inter) or inter.is_empty
    assert b.contains(inter) or inter.is_empty
    # voxel-level check on a small grid
    grid = np.zeros((130, 130, 130), bool)
    ma, mb = grid.copy(), grid.copy()
    ma[a.shift([30] * 3).slices()] = True
    mb[b.shift([30] * 3).slices()] = True
    assert (ma & mb).sum() == inter.size


@given(boxes(), st.tuples(st.integers(0, 10), st.integers(0, 10), st.integers(0, 10)))
def test_grow_then_shrink_round_trips(b, halo):
    assert b.grow(halo).grow([-h for h in halo]) == b
    assert b.grow(halo).contains(b)


@given(boxes(), shape3)
def test_padding_widths_match_np_pad(b, shape):
    widths = b.padding_in(shape)
    vol = np.arange(np.prod(shape)).reshape(shape)
    padded = np.pad(vol, widths, mode="constant", constant_values=-1)
    # the box, in padded coordinates, fits inside the padded array exactly at its far side
    shifted = b.shift([w[0] for w in widths])
    assert all(s >= 0 for s in shifted.start)
    assert all(e <= n for e, n in zip(shifted.stop, padded.shape))
    inside = b.clip(shape)
    if not inside.is_empty:
        assert np.array_equal(padded[inside.shift([w[0] for w in widths]).slices()], vol[inside.slices()])


@settings(max_examples=200)
@given(st.integers(1, 200), st.integers(1, 60), st.integers(1, 60))
def test_window_starts_cover_axis_and_stay_inside(length, window, stride):
    if window > length:
        with pytest.raises(ValueError):
            window_starts(length, window, stride)
        return
    starts = window_starts(length, window, stride)
    assert starts[0] == 0 and starts[-1] == length - window
    assert np.all(starts >= 0) and np.all(starts + window <= length)
    assert np.all(np.diff(starts) > 0) if len(starts) > 1 else True
    assert np.all(np.diff(starts) <= stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all() or stride > window  # gaps only when the stride skips voxels
    assert len(starts) == 1 + int(np.ceil((length - window) / stride))


@settings(max_examples=80, deadline=None)
@given(shape3, st.data())
def test_sliding_window_grid_covers_volume(shape, data):
    window = [data.draw(st.integers(1, n)) for n in shape]
    stride = [data.draw(st.integers(1, w)) for w in window]
    grid = SlidingWindowGrid(shape, window, stride)
    cover = np.zeros(shape, np.int32)
    full = Box.from_shape(shape)
    for b in grid:
        assert full.contains(b) and b.shape == tuple(window)
        cover[b.slices()] += 1
    assert cover.min() >= 1
    assert np.array_equal(grid.starts()[-1], np.array(shape) - np.array(window))
    assert grid[len(grid) - 1] == grid[-1]


def test_sliding_window_grid_is_z_major_pytc_order():
    grid = SlidingWindowGrid((4, 6, 6), (2, 4, 4), (2, 2, 2))
    assert grid.counts == (2, 2, 2)
    assert [b.start for b in grid] == [
        (0, 0, 0), (0, 0, 2), (0, 2, 0), (0, 2, 2), (2, 0, 0), (2, 0, 2), (2, 2, 0), (2, 2, 2)
    ]
    with pytest.raises(ValueError, match="does not fit"):
        SlidingWindowGrid((4, 6, 6), (5, 4, 4), (1, 1, 1))


def test_chunk_grid_matches_pytc_mitoem_example():
    train = ChunkGrid((400, 4096, 4096), (4, 8, 8), overlap=True)
    assert train[0] == Box([0, 0, 0], [160, 910, 910])
    test = ChunkGrid((500, 4096, 4096), (4, 8, 8), overlap=False)
    assert test[0] == Box([0, 0, 0], [125, 512, 512])
    assert test[-1] == Box([375, 3584, 3584], [500, 4096, 4096])
    # chunk id -> (z, y, x) z-major
    assert test[8 * 8 + 8 + 1] == Box([125, 512, 512], [250, 1024, 1024])


@settings(max_examples=100, deadline=None)
@given(shape3, st.data())
def test_disjoint_chunks_tile_the_range_exactly(shape, data):
    num = [data.draw(st.integers(1, n)) for n in shape]
    grid = ChunkGrid(shape, num, overlap=False)
    cover = np.zeros(shape, np.int32)
    for b in grid:
        cover[b.slices()] += 1
    assert np.all(cover == 1)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 200), st.integers(1, 10))
def test_overlapping_chunks_overlap_half_and_cover(length, num):
    if num + 1 > length:
        return
    bounds = [chunk_bounds(i, num, length, overlap=True) for i in range(num)]
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    for (a0, a1), (b0, _b1) in zip(bounds, bounds[1:]):
        assert b0 < a1  # neighbours overlap
        assert b0 == (a0 + a1) // 2 or abs(b0 - (a0 + a1) / 2) <= 1  # by about half a chunk


def test_chunk_grid_coord_range_and_errors():
    g = ChunkGrid((100, 100, 100), (2, 1, 1), coord_range=[10, 30, 0, 100, 50, 100])
    assert g[0] == Box([10, 0, 50], [20, 100, 100]) and g[1] == Box([20, 0, 50], [30, 100, 100])
    with pytest.raises(ValueError, match="coord_range"):
        ChunkGrid((100, 100, 100), (1, 1, 1), coord_range=[0, 200, 0, 100, 0, 100])


@given(st.lists(st.integers(), max_size=50), st.integers(1, 8))
def test_split_indices_partition(indices, world):
    parts = [split_indices(indices, r, world) for r in range(world)]
    assert sum(parts, []) == indices


def test_parse_chunk_split():
    assert parse_chunk_split("1-4") == (1, 4)
    assert parse_chunk_split([0, 2]) == (0, 2)
    for bad in ("4-4", "a-b", "1", [1]):
        with pytest.raises(ValueError):
            parse_chunk_split(bad)
