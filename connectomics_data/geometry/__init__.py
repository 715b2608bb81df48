"""Voxel geometry: boxes, halos, padding widths, sliding-window and chunk grids (numpy only)."""

from .box import Box, normalize_halo
from .grids import (
    ChunkGrid,
    SlidingWindowGrid,
    chunk_bounds,
    parse_chunk_split,
    split_indices,
    window_starts,
)

__all__ = [
    "Box",
    "ChunkGrid",
    "SlidingWindowGrid",
    "chunk_bounds",
    "normalize_halo",
    "parse_chunk_split",
    "split_indices",
    "window_starts",
]
