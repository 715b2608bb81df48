"""Convert a volume (typically a :class:`~.volume.TiledVolume`) to a chunked zarr array.

The work is cut into z-slabs of whole zarr chunks (``chunks[0] * slab_chunks`` slices, full
y and x), so no two workers ever write the same chunk. Each slab is read in y-bands that cover
whole tile rows (``ceil(tile_h / chunk_y)`` chunk rows) to bound memory while decoding each
tile once. Slabs run in parallel threads (decoding and zarr compression release the GIL) or
processes.

Resumable: finished slab indices are recorded in ``<out>/.tiles_to_zarr.json`` (rewritten
atomically after every slab, together with the settings and source it was made from). A rerun
skips recorded slabs; a slab that was being written when the run died is simply written again.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import OutputError
from ...geometry import Box
from ...progress import Progress
from ..atomic import atomic_output, ensure_directory
from ..base import Volume

PROGRESS_NAME = ".tiles_to_zarr.json"
DEFAULT_CHUNKS = (32, 256, 256)


@dataclass
class ConversionReport:
    """What one :func:`volume_to_zarr` run did. Slab ``i`` covers z ``[i*sz, (i+1)*sz)``."""

    out: str
    slab_depth: int
    n_slabs: int
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def _settings(volume: Volume, chunks: tuple[int, ...], zarr_format: int, slab_depth: int) -> dict[str, Any]:
    return {
        "source": str(getattr(volume, "path", "<memory>")),
        "shape": list(volume.shape),
        "dtype": np.dtype(volume.dtype).name,
        "chunks": list(chunks),
        "zarr_format": zarr_format,
        "slab_depth": slab_depth,
    }


def _write_progress(out: Path, settings: dict[str, Any], done: set[int]) -> None:
    with atomic_output(out / PROGRESS_NAME) as tmp:
        Path(tmp).write_text(json.dumps({**settings, "done": sorted(done)}), encoding="utf-8")


def _band_rows(volume: Volume, chunk_y: int) -> int:
    """Rows per read band: whole tile rows rounded up to whole chunk rows."""
    spec = getattr(volume, "spec", None)
    height = volume.spatial_shape[1]
    if spec is None or not any(spec.is_pattern):
        return height
    tile_h = spec.tile_shape[0]
    return min(height, math.ceil(tile_h / chunk_y) * chunk_y)


def _write_slab(volume: Volume, out: str, z0: int, z1: int, band: int) -> int:
    """Read z ``[z0, z1)`` band by band and write it into the zarr array at ``out``."""
    import zarr

    arr = zarr.open_array(out, mode="r+")
    _, height, width = volume.spatial_shape
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        arr[z0:z1, y0:y1, :] = volume.read(Box((z0, y0, 0), (z1, y1, width)))
    return z0


def volume_to_zarr(
    volume: Volume,
    out: str | os.PathLike,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
    zarr_format: int = 3,
    workers: int = 2,
    slab_chunks: int = 1,
    processes: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Write the 3D ``volume`` (z, y, x) to a zarr array at ``out``, resumably.

    Args:
        volume: any 3D :class:`Volume` (its dtype is kept).
        out: zarr store directory.
        chunks: zarr chunk shape (z, y, x), clipped to the volume.
        zarr_format: 3 (default) or 2.
        workers: slabs converted at once.
        slab_chunks: zarr chunks along z per slab (slab depth ``chunks[0] * slab_chunks``).
        processes: use worker processes (spawned; the volume is pickled) instead of threads.
        overwrite: discard an existing ``out`` (and its progress record) and start over.
        progress: report slabs done (a tqdm bar on a terminal, else a line every few seconds).

    Returns:
        A :class:`ConversionReport` listing the slabs written now and those skipped.

    Raises:
        OutputError: ``out`` exists but was made with other settings or from another source, or
            has no progress record (pass ``overwrite=True``).
    """
    import zarr

    if len(volume.shape) != 3:
        raise ValueError(f"{volume.path}: expected a 3D (z, y, x) volume, got shape {list(volume.shape)}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format}")
    if len(chunks) != 3 or any(int(c) <= 0 for c in chunks):
        raise ValueError(f"chunks must be 3 positive ints (z, y, x), got {list(chunks)}")
    out_path = Path(out)
    chunks_t = tuple(min(int(c), n) for c, n in zip(chunks, volume.shape))
    slab_depth = chunks_t[0] * max(1, int(slab_chunks))
    depth = volume.shape[0]
    n_slabs = math.ceil(depth / slab_depth)
    settings = _settings(volume, chunks_t, zarr_format, slab_depth)
    record = out_path / PROGRESS_NAME

    done: set[int] = set()
    if out_path.exists() and not overwrite:
        if not record.exists():
            raise OutputError(
                f"{out_path} exists and has no {PROGRESS_NAME} progress record; pass overwrite=True "
                "(--overwrite) to replace it"
            )
        saved = json.loads(record.read_text(encoding="utf-8"))
        saved_settings = {k: saved.get(k) for k in settings}
        if saved_settings != settings:
            diff = {k: (saved_settings[k], v) for k, v in settings.items() if saved_settings[k] != v}
            raise OutputError(
                f"{out_path} was started with other settings or source {diff} (saved, now); pass "
                "overwrite=True (--overwrite) to start over"
            )
        done = {int(i) for i in saved.get("done", [])}
    else:
        ensure_directory(out_path.parent, "directory", output=out_path)
        zarr.create_array(
            store=str(out_path),
            shape=volume.shape,
            chunks=chunks_t,
            dtype=np.dtype(volume.dtype),
            fill_value=0,
            zarr_format=zarr_format,
            overwrite=True,
        )
        _write_progress(out_path, settings, done)

    report = ConversionReport(str(out_path), slab_depth, n_slabs, skipped=sorted(done))
    todo = [i for i in range(n_slabs) if i not in done]
    band = _band_rows(volume, chunks_t[1])
    executor: Executor
    if processes:
        executor = ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"))
    else:
        executor = ThreadPoolExecutor(max(1, workers), thread_name_prefix="zarr-slab")
    bar = Progress(n_slabs, f"-> {out_path.name}", unit="slab", initial=len(done), enabled=progress)
    # At most `workers` slabs in flight: after a failure nothing new starts, and a huge volume
    # does not queue thousands of futures (each holding a pickled volume with processes).
    queue = iter(todo)
    running: dict[Future, int] = {}

    def submit_next() -> None:
        i = next(queue, None)
        if i is not None:
            z0, z1 = i * slab_depth, min(depth, (i + 1) * slab_depth)
            running[executor.submit(_write_slab, volume, str(out_path), z0, z1, band)] = i

    def record(finished: list[int]) -> None:
        done.update(finished)
        report.written.extend(finished)
        _write_progress(out_path, settings, done)
        bar.update(len(finished))

    try:
        for _ in range(max(1, workers)):
            submit_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                fut.result()  # re-raises a worker's error; the finally block drains the rest
                record([running.pop(fut)])
                submit_next()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        # after an error: record the slabs that the other workers finished meanwhile
        late = [i for fut, i in running.items() if not fut.cancelled() and fut.exception() is None]
        if late:
            record(late)
        bar.close()
    report.written.sort()
    return report
