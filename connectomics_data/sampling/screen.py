"""Summed-volume tables over blocks: an O(1) upper bound of a box's foreground count.

A full-resolution summed-volume table costs 8 bytes per voxel (800 MB for 10^8 voxels); here
the volume is cut into blocks of ``block`` voxels, each block's count is stored, and the table
is built over the block grid. The count of a box is then bounded above by the total of the
blocks it touches (exact when the box is block-aligned), at 8 bytes per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geometry import Box


class BlockCountTable:
    """Counts of non-zero voxels per block, with a summed-volume table over the block grid.

    Args:
        volume: a :class:`~connectomics_data.io.Volume` (or ndarray) of shape (z, y, x).
        block: block size (z, y, x); (1, 1, 1) gives exact counts.
        predicate: maps a read slab to a boolean array (default ``slab != 0``).
    """

    def __init__(self, volume, block: Sequence[int] = (1, 8, 8), predicate=None):
        from ..io.base import ArrayVolume, Volume

        vol = volume if isinstance(volume, Volume) else ArrayVolume(np.asarray(volume))
        self.shape = tuple(vol.spatial_shape)
        self.block = tuple(int(b) for b in block)
        grid = tuple(-(-n // b) for n, b in zip(self.shape, self.block))
        counts = np.zeros(grid, dtype=np.int64)
        bz = self.block[0]
        for gz in range(grid[0]):
            z0 = gz * bz
            slab = vol.read(Box([z0, 0, 0], [min(z0 + bz, self.shape[0]), *self.shape[1:]]))
            if slab.ndim > 3:
                slab = slab.reshape(-1, *slab.shape[-3:]).max(axis=0)
            mask = predicate(slab) if predicate is not None else slab != 0
            ys, xs = self.block[1], self.block[2]
            py, px = grid[1] * ys - mask.shape[1], grid[2] * xs - mask.shape[2]
            m = np.pad(mask.sum(axis=0, dtype=np.int64), ((0, py), (0, px)))
            counts[gz] = m.reshape(grid[1], ys, grid[2], xs).sum(axis=(1, 3))
        sat = np.zeros(tuple(g + 1 for g in grid), dtype=np.int64)
        sat[1:, 1:, 1:] = counts.cumsum(0).cumsum(1).cumsum(2)
        self.sat = sat
        self.total = int(sat[-1, -1, -1])

    def upper_bound(self, box: Box) -> int:
        """An upper bound (exact for block-aligned boxes) of the non-zero voxels in ``box``."""
        inside = box.clip(self.shape)
        if inside.is_empty:
            return 0
        lo = [a // b for a, b in zip(inside.start, self.block)]
        hi = [-(-e // b) for e, b in zip(inside.stop, self.block)]
        s = self.sat
        (z0, y0, x0), (z1, y1, x1) = lo, hi
        return int(
            s[z1, y1, x1] - s[z0, y1, x1] - s[z1, y0, x1] - s[z1, y1, x0]
            + s[z0, y0, x1] + s[z0, y1, x0] + s[z1, y0, x0] - s[z0, y0, x0]
        )


def source_extent(box: Box, shape: Sequence[int], pad_mode: str) -> tuple[Box, int]:
    """The region of a volume of ``shape`` that a padded read of ``box`` copies from, and the
    largest number of times one source voxel appears in the read (1 inside the volume).

    With 'constant' padding the padded voxels are the fill value, so only the inside counts.
    """
    from ..io.base import source_indices

    inside = box.clip(shape)
    if box == inside or pad_mode == "constant":
        return inside, 1
    start, stop, mult = [], [], 1
    for a, b, n in zip(box.start, box.stop, shape):
        idx = source_indices(np.arange(a, b), n, pad_mode)
        start.append(int(idx.min()))
        stop.append(int(idx.max()) + 1)
        mult *= int(np.bincount(idx - idx.min()).max())
    return Box(start, stop), mult
