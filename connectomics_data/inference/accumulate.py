"""Blending accumulators: the weighted sum ``sum_w(prediction * w)``, in memory or on disk.

The summed weights are not accumulated: the windows form a product grid and the blending
weights are ``floor + product of per-axis profiles``, so their sum has a closed form
(:class:`~.blending.WeightSum`) computed per finalised block. An accumulator therefore holds
one float32 array ``(C, z, y, x)`` over the output region. Adds happen in window order, so both
backends produce bit-identical results.

* :class:`MemoryAccumulator`: a numpy array, ``4 C z y x`` bytes.
* :class:`ZarrAccumulator`: an uncompressed chunked zarr array in a temporary directory (put it
  next to the output) behind a bounded write-back chunk cache. Finalised z-slabs are dropped
  and their chunk files deleted, so disk use stays near a band of window rows and memory use
  near the cache size, independent of the volume.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..geometry import Box
from ..io.atomic import ensure_directory


class Accumulator:
    """Interface: ``add(boxes, weighted)``, ``read(box)``, ``release(box)``, ``close()``."""

    channels: int
    shape: tuple[int, ...]

    def add(self, boxes: Sequence[Box], weighted: np.ndarray) -> None:
        """Add window outputs.

        Args:
            boxes: output boxes in region coordinates (may leave the region: clipped).
            weighted: ``(B, C, *window)`` float32, prediction times blending weights.
        """
        raise NotImplementedError

    def read(self, box: Box) -> np.ndarray:
        """``(C, *box.shape)`` float32 weighted sum of a box inside the region (a new array)."""
        raise NotImplementedError

    def release(self, box: Box) -> None:
        """Drop a finalised box (it is not read or added to again)."""

    def close(self) -> None:
        """Free resources (temporary files)."""


class MemoryAccumulator(Accumulator):
    """In-memory ``(C, z, y, x)`` float32 weighted sum over a region of ``shape``."""

    def __init__(self, shape: Sequence[int], channels: int):
        self.shape = tuple(int(n) for n in shape)
        self.channels = int(channels)
        self.array = np.zeros((self.channels, *self.shape), dtype=np.float32)

    def add(self, boxes, weighted) -> None:
        for k, box in enumerate(boxes):
            inside = box.clip(self.shape)
            if inside.is_empty:
                continue
            src = inside.relative_to(box).slices()
            self.array[(slice(None), *inside.slices())] += weighted[(k, slice(None), *src)]

    def read(self, box: Box) -> np.ndarray:
        return self.array[(slice(None), *box.slices())].copy()

    def close(self) -> None:
        self.array = np.zeros((0,), dtype=np.float32)


class ZarrAccumulator(Accumulator):
    """On-disk chunked accumulator: an uncompressed zarr array behind a write-back chunk cache.

    The zarr array ``(C, z, y, x)`` has chunks ``(C, *chunks)`` (all channels of a
    block in one file). Recently used chunks stay in memory; once ``cache_bytes`` is exceeded
    the least recently used chunk's whole chunk row (same z and y chunk index, contiguous x
    runs) is written back in one call, and a missing chunk is loaded together with the stored
    chunks right of it, so windows processed in raster order cost few disk calls. Chunks never
    written back are zeros without a disk read. Released chunks are dropped from the cache and
    their files deleted (writing the fill value removes a chunk, ``write_empty_chunks`` off).

    Args:
        shape: region shape (z, y, x).
        channels: prediction channels ``C``.
        directory: where the temporary store is created (the output directory).
        chunks: spatial chunk shape (z, y, x); align it with the output's chunks.
        cache_bytes: memory for cached chunks (at least one chunk is always cached).
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: int,
        directory: str | Path,
        chunks: Sequence[int],
        cache_bytes: int = 256 << 20,
    ):
        import zarr

        self.shape = tuple(int(n) for n in shape)
        self.channels = int(channels)
        self.chunks = tuple(max(1, min(int(c), n)) for c, n in zip(chunks, self.shape))
        self.cache_bytes = int(cache_bytes)
        ensure_directory(directory, "directory of the temporary accumulator")
        try:
            self.path = Path(tempfile.mkdtemp(prefix=".accumulator.", suffix=".tmp", dir=directory))
        except OSError as err:
            raise OutputError(f"cannot create the temporary accumulator in {directory}: {err}") from err
        self.array = zarr.create_array(
            store=str(self.path),
            shape=(self.channels, *self.shape),
            chunks=(self.channels, *self.chunks),
            dtype="float32",
            fill_value=0.0,
            compressors=None,
            config={"write_empty_chunks": False},
        )
        self._cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._rows: dict[tuple[int, ...], set[int]] = {}  # (kz, ky) -> cached kx
        self._cached = 0
        self._chunk_nbytes = 4 * self.channels * int(np.prod(self.chunks))
        self._stored: set[tuple[int, ...]] = set()
        self.loads = 0  # chunk reads from disk
        self.stores = 0  # chunk writes to disk

    # ------------------------------------------------------------------ chunk bookkeeping
    def _chunk_box(self, key: tuple[int, ...]) -> Box:
        start = [k * c for k, c in zip(key, self.chunks)]
        return Box(start, [min(a + c, n) for a, c, n in zip(start, self.chunks, self.shape)])

    def _keys(self, box: Box) -> list[tuple[int, ...]]:
        ranges = [range(a // c, (b - 1) // c + 1) for a, b, c in zip(box.start, box.stop, self.chunks)]
        return [(i, j, k) for i in ranges[0] for j in ranges[1] for k in ranges[2]]

    def _run_box(self, row: tuple[int, ...], x0: int, x1: int) -> Box:
        """Chunks ``x0..x1`` (inclusive) of chunk row ``row = (kz, ky)`` as one box."""
        first, last = self._chunk_box((*row, x0)), self._chunk_box((*row, x1))
        return Box(first.start, last.stop)

    def _insert(self, key: tuple[int, ...], block: np.ndarray) -> None:
        self._cache[key] = block
        self._cached += block.nbytes
        self._rows.setdefault(key[:2], set()).add(key[2])

    def _pop(self, key: tuple[int, ...]) -> np.ndarray | None:
        block = self._cache.pop(key, None)
        if block is not None:
            self._cached -= block.nbytes
            xs = self._rows[key[:2]]
            xs.discard(key[2])
            if not xs:
                del self._rows[key[:2]]
        return block

    def _load_run(self, key: tuple[int, ...]) -> None:
        """Load ``key`` and the stored, uncached chunks right of it in its row: one disk read."""
        row, x0 = key[:2], key[2]
        limit = max(1, (self.cache_bytes // 2) // max(1, self._chunk_nbytes))
        x1 = x0
        while x1 + 1 - x0 < limit and (*row, x1 + 1) in self._stored and (*row, x1 + 1) not in self._cache:
            x1 += 1
        box = self._run_box(row, x0, x1)
        data = np.asarray(self.array[(slice(None), *box.slices())], dtype=np.float32)
        self.loads += 1
        for x in range(x0, x1 + 1):
            cbox = self._chunk_box((*row, x))
            part = cbox.relative_to(box).slices()
            self._insert((*row, x), np.array(data[(slice(None), *part)]))

    def _evict(self, protect: tuple[int, ...]) -> None:
        """Write least recently used chunks back, a whole chunk row (x runs) per disk write."""
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            oldest = next(iter(self._cache))
            if oldest == protect:
                self._cache.move_to_end(oldest)
                continue
            row = oldest[:2]
            xs = sorted(x for x in self._rows[row] if (*row, x) != protect)
            runs: list[list[int]] = []
            for x in xs:
                if runs and x == runs[-1][-1] + 1:
                    runs[-1].append(x)
                else:
                    runs.append([x])
            for run in runs:
                box = self._run_box(row, run[0], run[-1])
                blocks = [self._pop((*row, x)) for x in run]
                self.array[(slice(None), *box.slices())] = np.concatenate(blocks, axis=-1)
                self._stored.update((*row, x) for x in run)
                self.stores += 1

    def _get(self, key: tuple[int, ...]) -> np.ndarray:
        """The chunk's block for updating; may evict other chunks (never ``key``)."""
        block = self._cache.get(key)
        if block is not None:
            self._cache.move_to_end(key)
            return block
        if key in self._stored:
            self._load_run(key)
        else:
            self._insert(key, np.zeros((self.channels, *self._chunk_box(key).shape), dtype=np.float32))
        self._evict(protect=key)
        return self._cache[key]

    # ------------------------------------------------------------------ interface
    def add(self, boxes, weighted) -> None:
        for k, box in enumerate(boxes):
            clipped = box.clip(self.shape)
            if clipped.is_empty:
                continue
            for key in self._keys(clipped):
                cbox = self._chunk_box(key)
                part = clipped.intersect(cbox)
                dst = part.relative_to(cbox).slices()
                src = part.relative_to(box).slices()
                block = self._get(key)  # updated right away, before any other chunk is fetched
                block[(slice(None), *dst)] += weighted[(k, slice(None), *src)]

    def read(self, box: Box) -> np.ndarray:
        keys = self._keys(box)
        if any(k in self._stored and k not in self._cache for k in keys):
            out = np.array(self.array[(slice(None), *box.slices())], dtype=np.float32)  # one read
            self.loads += 1
        else:
            out = np.zeros((self.channels, *box.shape), dtype=np.float32)
        for key in keys:  # cached chunks are newer than their stored copies
            block = self._cache.get(key)
            if block is not None:
                cbox = self._chunk_box(key)
                part = box.intersect(cbox)
                out[(slice(None), *part.relative_to(box).slices())] = block[(slice(None), *part.relative_to(cbox).slices())]
        return out

    def release(self, box: Box) -> None:
        stored = False
        for key in self._keys(box):
            stored = stored or key in self._stored
            if box.contains(self._chunk_box(key)):  # chunks partly outside are still live
                self._pop(key)
                self._stored.discard(key)
        if stored:  # one write of the fill value: deletes the files of whole chunks
            self.array[(slice(None), *box.slices())] = 0.0

    def close(self) -> None:
        self._cache.clear()
        self._rows.clear()
        self._cached = 0
        shutil.rmtree(self.path, ignore_errors=True)


def accumulator_bytes(shape: Sequence[int], channels: int) -> int:
    """Bytes of an in-memory accumulator for a region of ``shape`` and ``channels``."""
    return 4 * int(channels) * int(np.prod(shape, dtype=np.int64))
