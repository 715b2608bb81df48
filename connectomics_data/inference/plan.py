"""Window geometry of one inference run: padding, the sliding-window grid, output placement.

Coordinates:

* **volume** coordinates: voxel 0 is the first voxel of the input volume; windows near the
  border reach outside it and are padded on read (``Volume.read``'s pad modes), so the padded
  volume is never materialised.
* **padded** coordinates: the volume grown by ``pad`` (``PAD_SIZE``); the sliding-window grid
  (windows of ``input_size`` at ``stride``, the last one tucked in) tiles this box.
* **region** coordinates: the box that is accumulated and written, the unpadded volume when
  ``unpad`` (``INFERENCE.UNPAD``), else the whole padded volume. Output voxels outside it are
  never accumulated, which is the same as cropping afterwards.

A model whose output is smaller than its input (valid convolutions) has its output placed
centred in the input window: offset ``(input - output) // 2`` per axis.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import VolumeError
from ..geometry import Box, SlidingWindowGrid, normalize_halo, window_starts


def _triple(values: Sequence[int], name: str) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{name} must have 3 entries (z, y, x), got {list(values)}")
    return out


@dataclass(frozen=True)
class WindowPlan:
    """Sliding-window plan over a volume of spatial shape ``volume_shape`` (z, y, x).

    Args:
        volume_shape: spatial shape of the input.
        input_size: model input window (z, y, x); ``[1, y, x]`` for 2D models.
        stride: window stride (z, y, x).
        pad: ``PAD_SIZE``: one int, 3 ints or 6 ints (before/after per axis).
        unpad: crop the padding from the result (``INFERENCE.UNPAD``).
        path: the input's name, used in error messages.
    """

    volume_shape: tuple[int, ...]
    input_size: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    unpad: bool = True
    path: str = "<memory>"
    grid: SlidingWindowGrid = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        volume_shape: Sequence[int],
        input_size: Sequence[int],
        stride: Sequence[int],
        pad: int | Sequence[int] = 0,
        unpad: bool = True,
        path: str = "<memory>",
    ):
        set_ = object.__setattr__
        set_(self, "volume_shape", _triple(volume_shape, "volume shape"))
        set_(self, "input_size", _triple(input_size, "INFERENCE.INPUT_SIZE"))
        set_(self, "stride", _triple(stride, "INFERENCE.STRIDE"))
        widths = normalize_halo(pad if isinstance(pad, (int, np.integer)) else list(pad), 3)
        if any(w < 0 for pair in widths for w in pair):
            raise ValueError(f"PAD_SIZE must not be negative, got {pad}")
        set_(self, "pad", widths)
        set_(self, "unpad", bool(unpad))
        set_(self, "path", str(path))
        if any(s <= 0 for s in self.stride) or any(s <= 0 for s in self.input_size):
            raise ValueError(
                f"INFERENCE.STRIDE {list(self.stride)} and INPUT_SIZE {list(self.input_size)} "
                "must be positive"
            )
        padded = self.padded_shape
        if any(w > n for w, n in zip(self.input_size, padded)):
            raise VolumeError(
                f"{self.path}: the input of shape {list(self.volume_shape)} padded by PAD_SIZE "
                f"{[list(p) for p in self.pad]} to {list(padded)} is smaller than the model window "
                f"{list(self.input_size)} (INFERENCE.INPUT_SIZE / MODEL.INPUT_SIZE)"
            )
        set_(self, "grid", SlidingWindowGrid(padded, self.input_size, self.stride))

    # ------------------------------------------------------------------ derived geometry
    @property
    def pad_before(self) -> tuple[int, ...]:
        return tuple(p[0] for p in self.pad)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(n + a + b for n, (a, b) in zip(self.volume_shape, self.pad))

    @property
    def region(self) -> Box:
        """The accumulated/written box in padded coordinates."""
        if self.unpad:
            return Box.from_shape(self.volume_shape, self.pad_before)
        return Box.from_shape(self.padded_shape)

    @property
    def region_shape(self) -> tuple[int, ...]:
        return self.region.shape

    def __len__(self) -> int:
        return len(self.grid)

    def output_offset(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """Offset of a centred output of ``output_size`` inside an input window."""
        out = _triple(output_size, "output size")
        if any(o > i for o, i in zip(out, self.input_size)):
            raise ValueError(
                f"model output {list(out)} is larger than its input window {list(self.input_size)}"
            )
        return tuple((i - o) // 2 for i, o in zip(self.input_size, out))

    def input_box(self, index: int) -> Box:
        """Window ``index`` in volume coordinates (may leave the volume: padded on read)."""
        return self.grid[index].shift([-p for p in self.pad_before])

    def output_box(self, index: int, output_size: Sequence[int]) -> Box:
        """The centred output of window ``index`` in region coordinates (not clipped)."""
        off = self.output_offset(output_size)
        start = [s + o - r for s, o, r in zip(self.grid[index].start, off, self.region.start)]
        return Box.from_shape(_triple(output_size, "output size"), start)

    def output_starts(self, output_size: Sequence[int]) -> list[np.ndarray]:
        """Per axis, the output start of every window column (region coordinates)."""
        off = self.output_offset(output_size)
        return [
            window_starts(n, w, s) + o - r
            for n, w, s, o, r in zip(self.padded_shape, self.input_size, self.stride, off, self.region.start)
        ]

    def windows(self, output_size: Sequence[int] | None = None) -> Iterator[int]:
        """Indices of the windows whose output can reach the region, in grid (z-major) order.

        Without ``output_size`` the input box is used (conservative: an output lies inside
        its input window).
        """
        region_shape = self.region_shape
        for index in range(len(self.grid)):
            if output_size is None:
                box = self.grid[index].relative_to(self.region)
            else:
                box = self.output_box(index, output_size)
            if not box.clip(region_shape).is_empty:
                yield index

    def axis_windows(self, output_size: Sequence[int] | None = None, box: Box | None = None) -> list[np.ndarray]:
        """Per axis, the grid coordinates (sorted) of the windows that reach ``box`` along that axis.

        ``box`` is in region coordinates (default: the whole region); a window reaches it when
        its output (its input box without ``output_size``) overlaps it. A window reaches
        ``box`` iff it does so along every axis, so the windows reaching ``box`` are the
        product of these lists, in grid (z-major) order; :meth:`windows` of the whole region
        is exactly that product.
        """
        region = self.region
        target = region if box is None else box.shift(region.start)
        if output_size is None:
            off, size = (0, 0, 0), self.input_size
        else:
            off, size = self.output_offset(output_size), _triple(output_size, "output size")
        out = []
        for axis, (n, w, s) in enumerate(zip(self.padded_shape, self.input_size, self.stride)):
            starts = window_starts(n, w, s) + off[axis]
            hit = (starts < target.stop[axis]) & (starts + size[axis] > target.start[axis])
            out.append(np.flatnonzero(hit))
        return out


class SubregionPlan(WindowPlan):
    """``base``'s plan with the output region shrunk to ``box`` (in ``base``'s region coordinates).

    The window grid is ``base``'s (same volume, window, stride, pad); region coordinates start
    at ``box``. :meth:`windows` yields the windows of ``base`` (same z-major order) whose output
    reaches ``box``, widened to whole batches of ``batch_size`` windows of ``base``'s list: a
    model's float results can depend on the batch a window is computed in (CPU convolutions
    pick kernels by batch shape), so each window is computed in the very batch a single-process
    run computes it in. The extra windows' outputs fall outside ``box`` and are clipped away.
    Accumulating these windows in this order gives every voxel of ``box`` the same float32 sum
    as the whole run: the basis of sharded (``distributed``) and blockwise inference.
    """

    def __init__(self, base: WindowPlan, box: Box, batch_size: int = 1):
        flat = [w for pair in base.pad for w in pair]
        super().__init__(base.volume_shape, base.input_size, base.stride, flat, base.unpad, base.path)
        full_shape = base.region.shape
        if box.ndim != 3 or box.is_empty or not Box.from_shape(full_shape).contains(box):
            raise ValueError(f"{base.path}: subregion {box} must be non-empty and inside the region {list(full_shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "batch_size", int(batch_size))

    @property
    def region(self) -> Box:
        return self.box.shift(WindowPlan.region.fget(self).start)  # type: ignore[attr-defined]

    def windows(self, output_size: Sequence[int] | None = None) -> Iterator[int]:
        full = self.base.axis_windows(output_size)
        hits = self.base.axis_windows(output_size, self.box)
        if any(len(h) == 0 for h in hits):
            return iter(())
        n = [len(f) for f in full]
        total = n[0] * n[1] * n[2]
        # ranks of the hit coordinates among the base's (contiguous: both lists are sorted runs)
        rz, ry, rx = (np.searchsorted(f, h) for f, h in zip(full, hits))
        rows = (rz[:, None] * n[1] + ry[None, :]).ravel() * n[2]
        b = self.batch_size
        first, last = (rows + rx[0]) // b, (rows + rx[-1]) // b  # batches of each row's hit run
        spans = last - first + 1
        batches = np.unique(np.repeat(first - np.cumsum(spans) + spans, spans) + np.arange(int(spans.sum())))
        positions = (batches[:, None] * b + np.arange(b)[None, :]).ravel()
        positions = positions[positions < total]
        pz, py, px = np.unravel_index(positions, n)
        index = np.ravel_multi_index((full[0][pz], full[1][py], full[2][px]), self.grid.counts)
        return iter(int(i) for i in index)
