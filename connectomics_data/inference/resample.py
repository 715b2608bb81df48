"""``INFERENCE.OUTPUT_SCALE``: resample the prediction by per-axis factors, block by block.

The output of a volume (or region) of spatial shape ``n`` (z, y, x) has shape
``m = ceil(n * scale)`` per axis (PyTC). The resampling is the one PyTC applies,
``skimage.transform.resize(pred, m, order=1, preserve_range=True, anti_aliasing=True)``,
which is, per spatial axis with ``f = n / m`` (input voxels per output voxel)::

    sigma = max(0, (f - 1) / 2)                      # anti-aliasing, only when downsampling
    g = scipy.ndimage.gaussian_filter(pred, sigma, mode="mirror", truncate=4.0)
    out = scipy.ndimage.zoom(g, m / n, order=1, mode="mirror", grid_mode=True)

i.e. output voxel ``j`` samples input coordinate ``x_j = (j + 0.5) * f - 0.5`` (voxel centres,
the half-pixel / ``align_corners=False`` convention, not corner-aligned), by linear
interpolation between ``floor(x_j)`` and ``floor(x_j) + 1``; an index outside ``[0, n)`` is
mirrored about the edge voxel (``-1 -> 1``, ``n -> n - 2``). An axis with factor 1 is copied.
Probabilities stay in their range (convex weights), so clipping is a no-op.

Difference to PyTC: PyTC resizes every window's output before blending; here the blended
full-resolution prediction is resampled (the same function, applied once to the whole
prediction), so window borders leave no trace and every path gives the same output as
resampling the whole volume at once.

Streaming: :class:`StreamingResampler` turns the engine's finished z-slabs of the (float32)
accumulator into output blocks: an output block needs the input box given by
:meth:`AxisResample.input_span` (its interpolation taps plus the Gaussian radius), read from the
accumulator with that halo. Every output voxel is computed from the same input values with the
same operations whatever the block, so the streamed result is bit-identical to
:func:`resample_array` on the whole prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from ..geometry import Box

TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default, used by skimage's resize


def check_output_scale(scale: Sequence[float] | None, key: str = "INFERENCE.OUTPUT_SCALE") -> tuple[float, ...]:
    """``scale`` as 3 positive finite floats (z, y, x); None means no resampling."""
    if scale is None:
        return (1.0, 1.0, 1.0)
    try:
        out = tuple(float(v) for v in scale)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise ConfigError(f"{key} must be 3 positive numbers (z, y, x), got {scale!r}")
    return out


def is_identity(scale: Sequence[float]) -> bool:
    return all(float(v) == 1.0 for v in scale)


def scaled_shape(shape: Sequence[int], scale: Sequence[float]) -> tuple[int, ...]:
    """``ceil(shape * scale)`` per axis, as PyTC computes it (float64 product)."""
    return tuple(max(1, int(np.ceil(int(n) * float(s)))) for n, s in zip(shape, scale))


def output_voxel_size(
    voxel_size: Sequence[float] | None, shape: Sequence[int], scale: Sequence[float]
) -> tuple[float, ...] | None:
    """Voxel size (z, y, x) in nm of a prediction resampled from ``shape`` by ``scale``.

    ``n`` input voxels become ``m = ceil(n * scale)`` output voxels spanning the same extent, so
    the output voxel is ``voxel * n / m``. None when the input carries no voxel size.
    """
    if voxel_size is None:
        return None
    out = scaled_shape(shape, scale)
    return tuple(float(v) * int(n) / int(m) for v, n, m in zip(voxel_size, shape, out))


@dataclass(frozen=True)
class AxisResample:
    """Resampling along one axis: ``n`` input voxels to ``m`` output voxels."""

    n: int
    m: int

    @classmethod
    def from_scale(cls, n: int, scale: float) -> AxisResample:
        return cls(int(n), scaled_shape([n], [scale])[0])

    @property
    def identity(self) -> bool:
        return self.n == self.m

    @property
    def factor(self) -> float:
        return self.n / self.m

    @property
    def sigma(self) -> float:
        return max(0.0, (self.factor - 1.0) / 2.0)

    @property
    def radius(self) -> int:
        """Gaussian half-width in voxels (scipy: ``int(truncate * sigma + 0.5)``); 0 without it."""
        return int(TRUNCATE * self.sigma + 0.5) if self.sigma > 1e-15 else 0

    def coords(self, j0: int, j1: int) -> np.ndarray:
        """Input coordinates ``x_j`` of output voxels ``j0 .. j1 - 1`` (float64)."""
        return (np.arange(j0, j1, dtype=np.float64) + 0.5) * self.factor - 0.5

    def mirror(self, idx: np.ndarray) -> np.ndarray:
        """Indices reflected into ``[0, n)`` about the edge voxels (scipy's 'mirror')."""
        if self.n == 1:
            return np.zeros_like(idx)
        period = 2 * (self.n - 1)
        idx = np.abs(idx) % period
        return np.where(idx >= self.n, period - idx, idx)

    def taps(self, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lo, hi, w)``: output ``j`` is ``(1 - w) * in[lo] + w * in[hi]`` (mirrored indices)."""
        x = self.coords(j0, j1)
        base = np.floor(x)
        w = x - base
        base = base.astype(np.int64)
        return self.mirror(base), self.mirror(base + 1), w

    def input_span(self, j0: int, j1: int) -> tuple[int, int]:
        """Input range ``[lo, hi)`` (inside ``[0, n)``) that output ``[j0, j1)`` depends on."""
        if j1 <= j0:
            return (0, 0)
        if self.identity:
            return (j0, j1)
        lo, hi, _ = self.taps(j0, j1)
        r = self.radius
        return (max(0, int(min(lo.min(), hi.min())) - r), min(self.n, int(max(lo.max(), hi.max())) + 1 + r))

    def output_cut(self, c: int) -> int:
        """Output index where input cut ``c`` falls (``floor(c m / n)``): chunks own ``[cut(a), cut(b))``."""
        return (int(c) * self.m) // self.n


def _resample_block(block: np.ndarray, axes: Sequence[AxisResample], starts: Sequence[int],
                    out_box: Box) -> np.ndarray:
    """Resample ``block`` (``(C, z, y, x)`` float32, global input start ``starts``) to ``out_box``.

    The block must hold the input span of ``out_box`` on every axis, with the Gaussian halo, and
    may be clipped only at the volume's edges (where scipy's 'mirror' then matches the whole
    volume's).
    """
    g = block
    for a, ax in enumerate(axes):  # anti-aliasing, in axis order like ndimage.gaussian_filter
        if ax.sigma > 1e-15:
            g = ndimage.gaussian_filter1d(g, ax.sigma, axis=a + 1, mode="mirror", truncate=TRUNCATE,
                                          output=np.float32)
    out = g.astype(np.float64)
    for a, ax in enumerate(axes):
        j0, j1 = out_box.start[a], out_box.stop[a]
        if ax.identity:
            out = np.take(out, np.arange(j0 - starts[a], j1 - starts[a]), axis=a + 1)
            continue
        lo, hi, w = ax.taps(j0, j1)
        shape = [1] * out.ndim
        shape[a + 1] = -1
        w = w.reshape(shape)
        out = np.take(out, lo - starts[a], axis=a + 1) * (1.0 - w) + np.take(out, hi - starts[a], axis=a + 1) * w
    return out.astype(np.float32)


def resample_array(pred: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """Whole-array reference: ``(C, z, y, x)`` float -> ``(C, *ceil(shape * scale))`` float32."""
    pred = np.asarray(pred, dtype=np.float32)
    axes = [AxisResample.from_scale(n, s) for n, s in zip(pred.shape[1:], scale)]
    return _resample_block(pred, axes, (0, 0, 0), Box((0, 0, 0), tuple(a.m for a in axes)))


@dataclass(frozen=True)
class ScaleGeometry:
    """Where a predicted region sits in the resampled whole.

    Attributes:
        scale: OUTPUT_SCALE (z, y, x).
        full_shape: the whole input extent that is resampled (``n``); output shape
            ``ceil(full_shape * scale)``.
        region_start: start of the predicted region in ``full_shape``'s coordinates.
        out_box: the output voxels this run writes (output coordinates); the sink receives
            them at its own origin.
    """

    scale: tuple[float, ...]
    full_shape: tuple[int, ...]
    region_start: tuple[int, ...]
    out_box: Box

    @classmethod
    def whole(cls, shape: Sequence[int], scale: Sequence[float]) -> ScaleGeometry:
        shape = tuple(int(n) for n in shape)
        return cls(tuple(scale), shape, (0, 0, 0), Box((0, 0, 0), scaled_shape(shape, scale)))

    @property
    def axes(self) -> list[AxisResample]:
        return [AxisResample.from_scale(n, s) for n, s in zip(self.full_shape, self.scale)]

    def input_box(self, out_box: Box) -> Box:
        """The input box (``full_shape`` coordinates) that ``out_box`` depends on."""
        spans = [ax.input_span(a, b) for ax, a, b in zip(self.axes, out_box.start, out_box.stop)]
        return Box(tuple(s[0] for s in spans), tuple(s[1] for s in spans))


def _cuts(start: int, stop: int, chunk: int, phase: int, per_block: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` at ``phase + k chunk``, ``per_block`` chunks a block."""
    cuts = sorted({start, stop, *range(phase + ((start - phase) // chunk + 1) * chunk, stop, chunk)})
    return [(cuts[i], cuts[min(i + per_block, len(cuts) - 1)]) for i in range(0, len(cuts) - 1, per_block)]


class StreamingResampler:
    """Resample the engine's accumulator into the sink as z-slabs become final.

    Args:
        geometry: :class:`ScaleGeometry` of this run.
        region_shape: the predicted region's shape (z, y, x); the accumulator's coordinates.
        sink: receives ``geometry.out_box`` at its origin (opened by the caller).
        output_dtype: as the engine's; values are converted after resampling.
        budget_bytes: memory for one block's arrays.
    """

    def __init__(self, geometry: ScaleGeometry, region_shape: Sequence[int], sink, output_dtype: str,
                 budget_bytes: int):
        self.geometry = geometry
        self.axes = geometry.axes
        self.region = Box(geometry.region_start,
                          tuple(a + int(n) for a, n in zip(geometry.region_start, region_shape)))
        self.sink = sink
        self.output_dtype = output_dtype
        self.budget_bytes = int(budget_bytes)
        self.next_row = geometry.out_box.start[0]
        self.released = 0  # region z below which the accumulator was released
        need = geometry.input_box(geometry.out_box)
        if not self.region.contains(need):
            raise ValueError(f"the predicted region {self.region} does not hold the input {need} that "
                             f"output {geometry.out_box} depends on")

    def _rows_ready(self, ready_z: int) -> int:
        """The end of the output rows whose input lies below region z ``ready_z``."""
        out = self.geometry.out_box
        zax, z_off = self.axes[0], self.region.start[0]
        j = self.next_row
        while j < out.stop[0] and zax.input_span(j, j + 1)[1] - z_off <= ready_z:
            j += 1
        return j

    def advance(self, acc, weight_sum, ready_z: int, final: bool = False) -> None:
        """Write every output row computable from region z ``< ready_z`` (all when ``final``)."""
        from .sinks import convert_scaled, output_scale

        out = self.geometry.out_box
        end = out.stop[0] if final else self._rows_ready(ready_z)
        chunks, phase = self.sink.chunks, self.sink.phase
        if not final and end < out.stop[0]:  # keep sink z chunks whole
            local = end - out.start[0]
            aligned = phase[0] + ((local - phase[0]) // chunks[0]) * chunks[0]
            end = out.start[0] + max(0, aligned)
        if end <= self.next_row:
            return
        scale = output_scale(self.output_dtype)
        # block size: input voxels per output chunk, within an eighth of the budget
        in_per_chunk = 1
        for ax, c in zip(self.axes, chunks):
            in_per_chunk *= int(math.ceil(c * ax.factor)) + 2 * ax.radius + 2
        channels = getattr(acc, "channels", 1)
        n_chunks = max(1, self.budget_bytes // (8 * 8 * (channels + 1) * in_per_chunk))
        nx = -(-out.shape[2] // chunks[2]) + 1
        kx = min(nx, n_chunks)
        ky = max(1, n_chunks // kx)
        kz = max(1, n_chunks // (kx * ky))
        o = out.start
        z_local = self.next_row - o[0], end - o[0]
        for za, zb in _cuts(*z_local, chunks[0], phase[0], kz):
            for ya, yb in _cuts(0, out.shape[1], chunks[1], phase[1], ky):
                for xa, xb in _cuts(0, out.shape[2], chunks[2], phase[2], kx):
                    local = Box((za, ya, xa), (zb, yb, xb))
                    glob = local.shift(o)
                    need = self.geometry.input_box(glob)
                    rbox = need.shift(tuple(-s for s in self.region.start))
                    pred = acc.read(rbox)
                    pred *= weight_sum.inverse(rbox, scale)
                    data = _resample_block(pred, self.axes, need.start, glob)
                    self.sink.write(local, convert_scaled(data, self.output_dtype))
        self.next_row = end
        keep = (self.geometry.input_box(Box((end, o[1], o[2]), (end + 1, out.stop[1], out.stop[2]))).start[0]
                - self.region.start[0]) if end < out.stop[0] else self.region.shape[0]
        if not final:
            keep = min(keep, ready_z)  # windows still add to z >= ready_z
        if keep > self.released:
            acc.release(Box((self.released, 0, 0), (keep, *self.region.shape[1:])))
            self.released = keep
