"""Grids of boxes: sliding windows (last window tucked in) and PyTC-style chunk grids.

Both grids are lazy: ``len(grid)`` and ``grid[i]`` cost O(ndim), so a grid over a 10^12-voxel
volume never materialises its windows. Index order is z-major (C order over the grid axes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from .box import Box, IntSeq, _as_int_tuple


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows of size ``window`` at ``stride`` along one axis of ``length``.

    ``1 + ceil((length - window) / stride)`` windows at ``k * stride``; the last one is tucked
    in to end exactly at ``length``, so no window leaves the axis and the axis is covered.
    Raises ``ValueError`` when the window is larger than the axis or sizes are not positive.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    if window > length:
        raise ValueError(f"window of {window} voxels does not fit an axis of {length} voxels")
    count = 1 + math.ceil((length - window) / stride)
    starts = np.arange(count, dtype=np.int64) * stride
    starts[-1] = length - window
    return starts


class SlidingWindowGrid(Sequence):
    """Windows of ``window`` voxels at ``stride`` over a volume of ``shape``, last tucked in.

    ``grid[i]`` is a :class:`Box`; index order is z-major, then y, then x (PyTC order).
    The union of the windows is the whole volume and every window lies inside it.
    """

    def __init__(self, shape: IntSeq, window: IntSeq, stride: IntSeq):
        self.shape = _as_int_tuple(shape, "shape")
        self.window = _as_int_tuple(window, "window")
        self.stride = _as_int_tuple(stride, "stride")
        if not (len(self.shape) == len(self.window) == len(self.stride)):
            raise ValueError(
                f"shape {self.shape}, window {self.window} and stride {self.stride} "
                "must have the same number of axes"
            )
        for axis, (n, w, s) in enumerate(zip(self.shape, self.window, self.stride)):
            if w <= 0 or s <= 0:
                raise ValueError(f"axis {axis}: window {w} and stride {s} must be positive")
            if w > n:
                raise ValueError(
                    f"window {list(self.window)} does not fit the volume {list(self.shape)} "
                    f"(axis {axis}: {w} > {n})"
                )
        self._starts = [window_starts(n, w, s) for n, w, s in zip(self.shape, self.window, self.stride)]
        self.counts = tuple(len(s) for s in self._starts)

    def __len__(self) -> int:
        return int(np.prod(self.counts, dtype=np.int64))

    def grid_index(self, index: int) -> tuple[int, ...]:
        """The per-axis grid coordinate of flat ``index`` (z-major)."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window index {index} out of range for {n} windows")
        return tuple(int(i) for i in np.unravel_index(index, self.counts))

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        coord = self.grid_index(int(index))
        start = [int(s[c]) for s, c in zip(self._starts, coord)]
        return Box.from_shape(self.window, start)

    def __iter__(self) -> Iterator[Box]:
        for i in range(len(self)):
            yield self[i]

    def starts(self) -> np.ndarray:
        """All window starts as an ``(N, ndim)`` int64 array (materialises the grid)."""
        mesh = np.meshgrid(*self._starts, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)


def chunk_bounds(index: int, num: int, length: int, offset: int = 0, overlap: bool = False) -> tuple[int, int]:
    """Bounds ``[a0, a1)`` of chunk ``index`` of ``num`` along an axis (PyTC v1 arithmetic).

    Disjoint chunks cut the axis into ``num`` parts; overlapping (training) chunks cut it into
    ``num + 1`` parts and chunk ``k`` spans parts ``k`` and ``k + 1`` (50% overlap):
    ``a = floor([k, k + step] / (num + step - 1) * length) + offset`` with ``step`` 2 or 1.
    """
    if num <= 0:
        raise ValueError(f"chunk count must be positive, got {num}")
    if not 0 <= index < num:
        raise IndexError(f"chunk index {index} out of range for {num} chunks")
    step = 2 if overlap else 1
    parts = num + step - 1
    a0 = (index * length) // parts + offset
    a1 = ((index + step) * length) // parts + offset
    return int(a0), int(a1)


class ChunkGrid(Sequence):
    """``DATA_CHUNK_NUM`` chunks per axis over a (sub)volume, z-major chunk ids (PyTC order).

    ``coord_range`` is ``[z0, z1, y0, y1, x0, x1]`` (``DATA_COORD_RANGE``); by default the whole
    volume of ``shape``. ``overlap=True`` gives PyTC's 50%-overlapping training chunks,
    ``overlap=False`` disjoint test chunks that tile the range exactly.
    """

    def __init__(
        self,
        shape: IntSeq,
        chunk_num: IntSeq,
        overlap: bool = False,
        coord_range: IntSeq | None = None,
    ):
        self.shape = _as_int_tuple(shape, "shape")
        self.chunk_num = _as_int_tuple(chunk_num, "chunk_num")
        ndim = len(self.shape)
        if len(self.chunk_num) != ndim:
            raise ValueError(f"chunk_num {list(self.chunk_num)} must have {ndim} entries")
        if any(n <= 0 for n in self.chunk_num):
            raise ValueError(f"chunk_num {list(self.chunk_num)} must be positive")
        if coord_range is None:
            rng = [v for n in self.shape for v in (0, n)]
        else:
            rng = list(_as_int_tuple(coord_range, "coord_range"))
            if len(rng) != 2 * ndim:
                raise ValueError(f"coord_range must have {2 * ndim} entries [z0, z1, y0, y1, x0, x1], got {rng}")
            for axis in range(ndim):
                lo, hi = rng[2 * axis], rng[2 * axis + 1]
                if not 0 <= lo < hi <= self.shape[axis]:
                    raise ValueError(
                        f"coord_range {rng}: axis {axis} range [{lo}, {hi}) is empty or "
                        f"leaves the volume of extent {self.shape[axis]}"
                    )
        self.coord_range = tuple(rng)
        self.overlap = bool(overlap)
        for axis, n in enumerate(self.chunk_num):
            length = rng[2 * axis + 1] - rng[2 * axis]
            if n + (1 if overlap else 0) > length:
                raise ValueError(
                    f"{n} chunks along axis {axis} do not fit a range of {length} voxels"
                )

    def __len__(self) -> int:
        return int(np.prod(self.chunk_num, dtype=np.int64))

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        index = int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"chunk index {index} out of range for {n} chunks")
        coord = np.unravel_index(index, self.chunk_num)
        start, stop = [], []
        for axis, (c, num) in enumerate(zip(coord, self.chunk_num)):
            lo, hi = self.coord_range[2 * axis], self.coord_range[2 * axis + 1]
            a0, a1 = chunk_bounds(int(c), num, hi - lo, lo, self.overlap)
            start.append(a0)
            stop.append(a1)
        return Box(start, stop)

    def __iter__(self) -> Iterator[Box]:
        for i in range(len(self)):
            yield self[i]


def split_indices(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """Contiguous share of ``indices`` for ``rank`` of ``world`` (the last rank takes the rest).

    PyTC's ``CHUNK_IND_SPLIT`` semantics: ``len // world`` ids per rank.
    """
    if world <= 0 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} must be in [0, world) with world > 0, got world={world}")
    per = len(indices) // world
    lo = rank * per
    hi = len(indices) if rank == world - 1 else lo + per
    return list(indices[lo:hi])


def parse_chunk_split(spec: str | Sequence[int]) -> tuple[int, int]:
    """Parse ``CHUNK_IND_SPLIT`` (``"rank-world"`` or ``[rank, world]``) into ``(rank, world)``."""
    if isinstance(spec, str):
        parts = spec.split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"CHUNK_IND_SPLIT must look like 'rank-world' (e.g. '0-4'), got {spec!r}")
        rank, world = int(parts[0]), int(parts[1])
    else:
        vals = list(spec)
        if len(vals) != 2:
            raise ValueError(f"CHUNK_IND_SPLIT must be 'rank-world' or [rank, world], got {spec!r}")
        rank, world = int(vals[0]), int(vals[1])
    if world <= 0 or not 0 <= rank < world:
        raise ValueError(f"CHUNK_IND_SPLIT {spec!r}: need 0 <= rank < world")
    return rank, world
