"""Axis-aligned boxes in voxel coordinates.

A :class:`Box` is a half-open interval ``[start, stop)`` per axis, in (z, y, x) order for 3D
volumes (any number of axes is accepted). A box may extend past a volume on any side: reading
it from a volume pads the part that lies outside (see :meth:`Box.padding_in`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IntSeq = Sequence[int]


def _as_int_tuple(values: IntSeq | np.ndarray, name: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} must hold integers, got {v!r}")
        iv = int(v)
        if iv != v:
            raise ValueError(f"{name} must hold integers, got {v!r}")
        out.append(iv)
    return tuple(out)


def normalize_halo(halo: int | IntSeq, ndim: int) -> tuple[tuple[int, int], ...]:
    """Turn a halo spec into ``((before, after), ...)`` per axis.

    Accepts one int (all sides), ``ndim`` ints (symmetric per axis), or ``2 * ndim`` ints
    ``(before_0, after_0, before_1, after_1, ...)`` as in PyTC's ``PAD_SIZE``.
    """
    if isinstance(halo, (int, np.integer)):
        return tuple((int(halo), int(halo)) for _ in range(ndim))
    values = _as_int_tuple(halo, "halo")
    if len(values) == ndim:
        return tuple((v, v) for v in values)
    if len(values) == 2 * ndim:
        return tuple((values[2 * i], values[2 * i + 1]) for i in range(ndim))
    raise ValueError(
        f"halo must be one int, {ndim} ints or {2 * ndim} ints (before/after per axis), "
        f"got {list(values)}"
    )


@dataclass(frozen=True)
class Box:
    """A half-open box ``[start, stop)`` in voxels, (z, y, x) order for 3D.

    ``stop >= start`` on every axis (an empty box has ``stop == start`` somewhere).
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __init__(self, start: IntSeq, stop: IntSeq):
        s = _as_int_tuple(start, "start")
        e = _as_int_tuple(stop, "stop")
        if len(s) != len(e):
            raise ValueError(f"start {s} and stop {e} have different lengths")
        if any(b < a for a, b in zip(s, e)):
            raise ValueError(f"stop {e} must be >= start {s} on every axis")
        object.__setattr__(self, "start", s)
        object.__setattr__(self, "stop", e)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_shape(cls, shape: IntSeq, start: IntSeq | None = None) -> Box:
        """The box of ``shape`` starting at ``start`` (default: the origin)."""
        shape_t = _as_int_tuple(shape, "shape")
        start_t = (0,) * len(shape_t) if start is None else _as_int_tuple(start, "start")
        return cls(start_t, tuple(a + n for a, n in zip(start_t, shape_t)))

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> Box:
        """The box of ``slices`` (each with explicit start and stop, step 1)."""
        return cls([s.start for s in slices], [s.stop for s in slices])

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        return len(self.start)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_empty(self) -> bool:
        return any(b == a for a, b in zip(self.start, self.stop))

    @property
    def center(self) -> tuple[float, ...]:
        return tuple((a + b) / 2.0 for a, b in zip(self.start, self.stop))

    def slices(self) -> tuple[slice, ...]:
        """Slices that index this box in an array whose origin is voxel 0."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    # ------------------------------------------------------------------ arithmetic
    def _check_ndim(self, other_ndim: int, what: str) -> None:
        if other_ndim != self.ndim:
            raise ValueError(f"{what} has {other_ndim} axes, box has {self.ndim}")

    def shift(self, offset: IntSeq) -> Box:
        """The box moved by ``offset`` voxels."""
        off = _as_int_tuple(offset, "offset")
        self._check_ndim(len(off), "offset")
        return Box([a + o for a, o in zip(self.start, off)], [b + o for b, o in zip(self.stop, off)])

    def grow(self, halo: int | IntSeq) -> Box:
        """The box grown by a halo (one int, one per axis, or before/after per axis).

        Negative halos shrink the box; shrinking past empty raises ``ValueError``.
        """
        widths = normalize_halo(halo, self.ndim)
        return Box(
            [a - w[0] for a, w in zip(self.start, widths)],
            [b + w[1] for b, w in zip(self.stop, widths)],
        )

    def intersect(self, other: Box) -> Box:
        """The overlap of two boxes; an empty box (at the clipped corner) when disjoint."""
        self._check_ndim(other.ndim, "other box")
        start = [max(a, c) for a, c in zip(self.start, other.start)]
        stop = [min(b, d) for b, d in zip(self.stop, other.stop)]
        stop = [max(s, e) for s, e in zip(start, stop)]
        return Box(start, stop)

    def contains(self, other: Box) -> bool:
        """True when ``other`` lies inside this box."""
        self._check_ndim(other.ndim, "other box")
        return all(a <= c and d <= b for a, b, c, d in zip(self.start, self.stop, other.start, other.stop))

    def clip(self, shape: IntSeq) -> Box:
        """The part of the box inside a volume of ``shape`` (origin at 0)."""
        return self.intersect(Box.from_shape(shape))

    def padding_in(self, shape: IntSeq) -> tuple[tuple[int, int], ...]:
        """Pad widths ``((before, after), ...)``: how far the box leaves a volume of ``shape``.

        When the box lies wholly outside the volume on an axis, the widths are measured from
        the nearest edge, so ``np.pad(volume, widths)`` holds the box. The box is then the
        slice ``relative_to(...)`` of the padded array, see :meth:`slices_in_padded`.
        """
        shp = _as_int_tuple(shape, "shape")
        self._check_ndim(len(shp), "shape")
        return tuple((max(0, -a), max(0, b - n)) for a, b, n in zip(self.start, self.stop, shp))

    def relative_to(self, origin: Box | IntSeq) -> Box:
        """This box in the coordinates of a frame whose voxel 0 is ``origin``'s start."""
        start = origin.start if isinstance(origin, Box) else _as_int_tuple(origin, "origin")
        return self.shift([-s for s in start])

    def __repr__(self) -> str:
        return f"Box(start={list(self.start)}, stop={list(self.stop)})"
