"""Where finalised prediction blocks go: a numpy array, an HDF5 dataset or a zarr array.

A sink receives the prediction of one volume as chunk-aligned blocks: ``open(shape, dtype)``
with ``shape = (C, z, y, x)``, then ``write(box, data)`` with ``box`` a spatial box in the sink's
coordinates and ``data`` of shape ``(C, *box.shape)``, then ``close()``. ``chunks`` and ``phase``
tell the engine where chunk boundaries lie (``phase + k * chunks`` per axis) so that every
chunk is written exactly once, in one piece.

Output values: ``to_output_dtype`` turns the float32 prediction into 'uint8' (PyTC: clip to
[0, 1], times 255, *rounded*; PyTC truncates), 'float16' or 'float32' (kept signed: no clamp).
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..geometry import Box
from ..io.formats.ome_zarr import write_ome_zarr_metadata

OUTPUT_DTYPES = ("uint8", "float16", "float32")
MARK_ATTR = "connectomics_data"  # set on every output we write; foreign files are not overwritten
MARK_VALUE = "prediction"


def check_output_dtype(dtype: str) -> np.dtype:
    if str(dtype) not in OUTPUT_DTYPES:
        raise ConfigError(f"INFERENCE.OUTPUT_DTYPE must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    return np.dtype(str(dtype))


def output_scale(dtype: str | np.dtype) -> float:
    """Factor from prediction units to stored values: 255 for uint8, else 1."""
    return 255.0 if np.dtype(dtype) == np.uint8 else 1.0


def convert_scaled(pred: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """float32 prediction already multiplied by :func:`output_scale` -> ``dtype`` (in place)."""
    dt = np.dtype(dtype)
    if dt == np.uint8:
        np.clip(pred, 0.0, 255.0, out=pred)
        np.rint(pred, out=pred)
        return pred.astype(np.uint8)
    return pred.astype(dt, copy=False)


def to_output_dtype(pred: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """float32 prediction -> output dtype (may work in place on ``pred``)."""
    scale = output_scale(dtype)
    if scale != 1.0:
        pred *= np.float32(scale)
    return convert_scaled(pred, dtype)


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """Spatial chunks (z, y, x) of outputs: up to 8 x 256 x 256 voxels."""
    z, y, x = (int(n) for n in shape)
    return (max(1, min(z, 8)), max(1, min(y, 256)), max(1, min(x, 256)))


class Sink:
    """Base class; see the module docstring."""

    chunks: tuple[int, ...] = (1, 1, 1)
    phase: tuple[int, ...] = (0, 0, 0)

    def open(self, shape: Sequence[int], dtype: np.dtype) -> None:
        raise NotImplementedError

    def write(self, box: Box, data: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush (no-op by default)."""

    def abort(self) -> None:
        """Stop after a failure: release resources, write nothing more (no-op by default)."""


class ArraySink(Sink):
    """Collect the prediction in memory (``self.array``, ``(C, z, y, x)``)."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def open(self, shape, dtype) -> None:
        self.array = np.zeros(tuple(shape), dtype=dtype)
        self.chunks = (1, *self.array.shape[2:])

    def write(self, box: Box, data: np.ndarray) -> None:
        assert self.array is not None
        self.array[(slice(None), *box.slices())] = data


class _GzipChunkWriter:
    """Compress whole HDF5 chunks with zlib in worker threads, write them with direct chunk I/O.

    HDF5's deflate filter stores exactly ``zlib.compress(chunk bytes, level)``, so chunks
    compressed here read back through the normal filter pipeline. ``zlib`` releases the GIL,
    so compression overlaps the model and the reader thread; HDF5 calls stay on the caller's
    thread. At most ``max_pending`` chunks wait in memory.
    """

    def __init__(self, dataset, level: int, workers: int, max_pending: int):
        from concurrent.futures import ThreadPoolExecutor

        self.dataset = dataset
        self.level = int(level)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="h5-gzip")
        self.pending: deque = deque()
        self.max_pending = max_pending

    def submit(self, offset: tuple[int, ...], chunk: np.ndarray) -> None:
        data = np.ascontiguousarray(chunk)
        self.pending.append((offset, self.pool.submit(zlib.compress, memoryview(data).cast("B"), self.level)))
        self.drain(self.max_pending)

    def drain(self, keep: int = 0) -> None:
        while len(self.pending) > keep or (self.pending and self.pending[0][1].done()):
            offset, future = self.pending.popleft()
            self.dataset.id.write_direct_chunk(offset, future.result(), 0)

    def close(self) -> None:
        try:
            self.drain(0)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Hdf5Sink(Sink):
    """A dataset ``name`` in an open ``h5py`` group/file, chunks ``(1, *chunks)``.

    With 'gzip' (PyTC's filter), chunk-aligned blocks are compressed in ``workers`` threads
    and written with direct chunk writes (same bytes as h5py's filter; much faster); other
    filters and unaligned blocks go through h5py.

    Args:
        compression: h5py filter ('gzip' as PyTC, 'lzf', or None).
        compression_opts: filter level (gzip 0-9).
        attrs: attributes stored on the dataset.
        workers: compression threads (default: the CPU count, at most 8).
    """

    def __init__(
        self,
        group,
        name: str,
        compression: str | None = "gzip",
        compression_opts: int | None = 1,
        chunks: Sequence[int] | None = None,
        attrs: dict | None = None,
        workers: int | None = None,
    ):
        self.group = group
        self.name = name
        self.compression = compression
        self.compression_opts = (4 if compression_opts is None else compression_opts) if compression == "gzip" else None
        self._chunks = None if chunks is None else tuple(int(c) for c in chunks)
        self.attrs = dict(attrs or {})
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.dataset = None
        self._writer: _GzipChunkWriter | None = None

    def open(self, shape, dtype) -> None:
        shape = tuple(int(n) for n in shape)
        self.chunks = tuple(min(c, n) for c, n in zip(self._chunks or default_chunks(shape[1:]), shape[1:]))
        self.dataset = self.group.create_dataset(
            self.name,
            shape=shape,
            dtype=dtype,
            chunks=(1, *self.chunks),
            compression=self.compression,
            compression_opts=self.compression_opts,
        )
        for key, value in self.attrs.items():
            self.dataset.attrs[key] = value
        if self.compression == "gzip":
            self._writer = _GzipChunkWriter(self.dataset, self.compression_opts, self.workers, 4 * self.workers)

    def _aligned(self, box: Box) -> bool:
        shape = self.dataset.shape[1:]
        return all(
            a % c == 0 and (b % c == 0 or b == n) for a, b, c, n in zip(box.start, box.stop, self.chunks, shape)
        )

    def write(self, box: Box, data: np.ndarray) -> None:
        if self._writer is None or not self._aligned(box):
            if self._writer is not None:
                self._writer.drain(0)
            self.dataset[(slice(None), *box.slices())] = data
            return
        full = (np.dtype(self.dataset.dtype).type(0),)
        ranges = [range(a, b, c) for a, b, c in zip(box.start, box.stop, self.chunks)]
        for ch in range(data.shape[0]):
            for z in ranges[0]:
                for y in ranges[1]:
                    for x in ranges[2]:
                        start = (z, y, x)
                        stop = [min(s + c, b) for s, c, b in zip(start, self.chunks, box.stop)]
                        src = tuple(slice(s - o, e - o) for s, e, o in zip(start, stop, box.start))
                        part = data[(ch, *src)]
                        if part.shape != self.chunks:  # dataset edge: HDF5 stores whole chunks
                            padded = np.full(self.chunks, full[0], dtype=self.dataset.dtype)
                            padded[tuple(slice(0, n) for n in part.shape)] = part
                            part = padded
                        self._writer.submit((ch, *start), part)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.dataset is not None:
            self.dataset.flush()  # compress and write cached chunks now, not at file close

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


class ZarrSink(Sink):
    """An array ``name`` in an open zarr group (zarr's default compressor), chunks ``(1, *chunks)``.

    The group gets OME-Zarr metadata for the array (axes ``c, z, y, x``, scale ``voxel_size``
    ``(z, y, x)`` nm; see :func:`~connectomics_data.io.write_ome_zarr_metadata`), so
    Neuroglancer and napari overlay the prediction on the image at the right scale.
    """

    def __init__(self, group, name: str, chunks: Sequence[int] | None = None, attrs: dict | None = None,
                 voxel_size: Sequence[float] | None = None):
        self.group = group
        self.name = name
        self._chunks = None if chunks is None else tuple(int(c) for c in chunks)
        self.attrs = dict(attrs or {})
        self.voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)
        self.array = None

    def open(self, shape, dtype) -> None:
        shape = tuple(int(n) for n in shape)
        self.chunks = tuple(min(c, n) for c, n in zip(self._chunks or default_chunks(shape[1:]), shape[1:]))
        self.array = self.group.create_array(
            self.name, shape=shape, dtype=dtype, chunks=(1, *self.chunks), fill_value=0
        )
        if self.attrs:
            self.array.attrs.update(self.attrs)
        write_ome_zarr_metadata(self.group, self.name, "czyx", self.voxel_size)

    def write(self, box: Box, data: np.ndarray) -> None:
        self.array[(slice(None), *box.slices())] = data


class RegionSink(Sink):
    """Write into a region of a larger, already chunked array (the chunked-inference volume).

    Args:
        get_array: ``(shape (C, z, y, x) of this region, dtype) -> array``: returns the target
            (a zarr or numpy-like array covering the whole volume), creating it if needed.
        offset: the region's start in the target's spatial coordinates.
        chunks: the target's spatial chunks.
    """

    def __init__(self, get_array: Callable, offset: Sequence[int], chunks: Sequence[int]):
        self.get_array = get_array
        self.offset = tuple(int(o) for o in offset)
        self.chunks = tuple(int(c) for c in chunks)
        self.phase = tuple((-o) % c for o, c in zip(self.offset, self.chunks))
        self.array = None

    def open(self, shape, dtype) -> None:
        self.array = self.get_array(tuple(shape), dtype)

    def write(self, box: Box, data: np.ndarray) -> None:
        self.array[(slice(None), *box.shift(self.offset).slices())] = data


class TeeSink(Sink):
    """Forward to several sinks; chunk boundaries follow the first."""

    def __init__(self, sinks: Sequence[Sink]):
        if not sinks:
            raise ValueError("TeeSink needs at least one sink")
        self.sinks = list(sinks)

    def open(self, shape, dtype) -> None:
        for s in self.sinks:
            s.open(shape, dtype)
        self.chunks = self.sinks[0].chunks
        self.phase = self.sinks[0].phase

    def write(self, box: Box, data: np.ndarray) -> None:
        for s in self.sinks:
            s.write(box, data)

    def close(self) -> None:
        for s in self.sinks:
            s.close()

    def abort(self) -> None:
        for s in self.sinks:
            s.abort()
