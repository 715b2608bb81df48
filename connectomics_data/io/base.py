"""The one interface every volume source implements, and exact out-of-bounds padding.

A :class:`Volume` has a ``shape`` (``(z, y, x)`` or channel-first ``(c, z, y, x)``), a numpy
``dtype`` and ``read(box, pad_mode, cval)``. ``box`` is a :class:`~connectomics_data.geometry.Box`
over the spatial axes only (the last ``spatial_ndim`` axes); channels are always read whole.
The result equals ``np.pad(full_volume, widths, mode)[box shifted by the pad]`` for every box,
also when the box lies far outside the volume (the pad is then larger than the volume itself).

Subclasses implement only :meth:`Volume._read_inside` for boxes that lie inside the volume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..geometry import Box

PAD_MODES = ("reflect", "symmetric", "edge", "constant", "wrap")


def source_indices(coords: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Map voxel coordinates (possibly outside ``[0, length)``) to source indices.

    Implements ``np.pad``'s modes as closed formulas, so pads of any width are exact:
    'reflect' (period ``2 (n - 1)``, edge voxel not repeated), 'symmetric' (period ``2 n``),
    'edge' (clamp) and 'wrap' (period ``n``). 'constant' is handled by the caller.
    """
    c = np.asarray(coords, dtype=np.int64)
    if mode == "edge":
        return np.clip(c, 0, length - 1)
    if mode == "wrap":
        return np.mod(c, length)
    if mode == "reflect":
        if length == 1:
            return np.zeros_like(c)
        period = 2 * (length - 1)
        m = np.mod(c, period)
        return np.where(m < length, m, period - m)
    if mode == "symmetric":
        period = 2 * length
        m = np.mod(c, period)
        return np.where(m < length, m, period - 1 - m)
    raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {mode!r}")


class Volume(ABC):
    """A readable volume: ``shape``, ``dtype``, ``read(box, pad_mode, cval)``.

    Attributes:
        path: the file (or description) the data comes from, used in error messages.
        spatial_ndim: number of spatial axes (3 for z, y, x); a leading channel axis is allowed.
        voxel_size: ``(z, y, x)`` in nanometres as three floats, or ``None`` when the format
            carries none.
    """

    path: str = "<memory>"
    spatial_ndim: int = 3
    voxel_size: tuple[float, float, float] | None = None

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Full shape: ``(z, y, x)`` or ``(c, z, y, x)``."""

    @property
    @abstractmethod
    def dtype(self) -> np.dtype:
        """The stored dtype, kept on read (no silent cast)."""

    @abstractmethod
    def _read_inside(self, box: Box) -> np.ndarray:
        """Read a spatial ``box`` that lies inside the volume; returns ``(*channels, *box.shape)``."""

    # ------------------------------------------------------------------ derived
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[-self.spatial_ndim :])

    @property
    def channel_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[: len(self.shape) - self.spatial_ndim])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def full_box(self) -> Box:
        return Box.from_shape(self.spatial_shape)

    def read(self, box: Box | None = None, pad_mode: str = "reflect", cval: float = 0) -> np.ndarray:
        """Read ``box`` (spatial axes), padding the part outside the volume.

        Args:
            box: spatial box; ``None`` reads the whole volume.
            pad_mode: 'reflect' | 'symmetric' | 'edge' | 'constant' | 'wrap' (``np.pad`` names).
            cval: fill value for 'constant'.

        Returns:
            An array of shape ``(*channels, *box.shape)`` and the volume's dtype. A box inside an
            in-memory volume may come back as a read-only view: copy it before writing.
        """
        if box is None:
            box = self.full_box()
        if box.ndim != self.spatial_ndim:
            raise ValueError(
                f"{self.path}: box {box} has {box.ndim} axes, the volume has {self.spatial_ndim} "
                f"spatial axes (shape {list(self.shape)})"
            )
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        shape = self.spatial_shape
        if box.is_empty:
            return np.zeros(self.channel_shape + box.shape, dtype=self.dtype)
        if Box.from_shape(shape).contains(box):
            return np.asarray(self._read_inside(box))
        nch = len(self.channel_shape)
        if pad_mode == "constant":
            out = np.full(self.channel_shape + box.shape, cval, dtype=self.dtype)
            inside = box.clip(shape)
            if not inside.is_empty:
                dst = inside.relative_to(box).slices()
                out[(slice(None),) * nch + dst] = self._read_inside(inside)
            return out
        if pad_mode in ("reflect",) and any(n == 0 for n in shape):
            raise ValueError(f"{self.path}: cannot pad an empty volume")
        # Per-axis gather: read the bounding box of the needed source voxels once, then take.
        index_lists = [
            source_indices(np.arange(a, b), n, pad_mode) for a, b, n in zip(box.start, box.stop, shape)
        ]
        src = Box([int(ix.min()) for ix in index_lists], [int(ix.max()) + 1 for ix in index_lists])
        block = np.asarray(self._read_inside(src))
        local = [ix - s for ix, s in zip(index_lists, src.start)]
        out = block
        for axis, ix in enumerate(local):
            if not (len(ix) == out.shape[nch + axis] and np.array_equal(ix, np.arange(len(ix)))):
                out = np.take(out, ix, axis=nch + axis)
        return np.ascontiguousarray(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, shape={list(self.shape)}, dtype={np.dtype(self.dtype).name})"


class ArrayVolume(Volume):
    """An in-memory numpy array as a :class:`Volume` (no copy; ``(z, y, x)`` or ``(c, z, y, x)``)."""

    def __init__(self, array: np.ndarray, path: str = "<memory>", spatial_ndim: int = 3):
        array = np.asarray(array)
        if array.ndim not in (spatial_ndim, spatial_ndim + 1):
            raise ValueError(
                f"{path}: expected a {spatial_ndim}D (z, y, x) or {spatial_ndim + 1}D (c, z, y, x) "
                f"array, got shape {list(array.shape)}"
            )
        self.array = array
        self.path = path
        self.spatial_ndim = spatial_ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        nch = len(self.channel_shape)
        view = self.array[(slice(None),) * nch + box.slices()]
        view.flags.writeable = False  # a view of the caller's array: never written through
        return view
