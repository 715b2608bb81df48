"""Chunk-by-chunk inference over a (tiled) volume: ``DO_CHUNK_TITLE = 1`` at test time.

The volume is cut into disjoint chunks (``ChunkGrid`` over ``DATA_CHUNK_NUM``, PyTC's test
arithmetic). Each chunk is predicted on its own with a halo of ``PAD_SIZE`` voxels: real
neighbouring data where the halo lies inside the volume, the volume's padding (reflect)
outside it; the halo's prediction is discarded. Chunk predictions go into **one** zarr volume
``(C, z, y, x)`` whose chunks are aligned with the chunk grid where possible, so concurrent jobs
(``CHUNK_IND_SPLIT``) never write the same zarr chunk. Optionally each chunk is also written as
PyTC's ``<stem>_z0-z1-y0-y1-x0-x1.h5`` (dataset ``vol0``, unpadded chunk coordinates).

A sub-range (``DATA_COORD_RANGE``): only the predicted region is written; the zarr's shape is the
range's and its attribute ``region_offset_zyx`` (:data:`REGION_OFFSET_ATTR`) is the range's start
in the input (``source_shape_zyx`` the input's shape); with ``OUTPUT_SCALE`` the offset is in the
resampled output's grid (``floor(start * m / n)`` per axis). Nothing outside the range is written, so
no unpredicted voxel can be mistaken for background.

Restarts: after a chunk's data is written (zarr writes are synchronous), a marker
``<output>.progress/chunk_<id>.json`` is written atomically; chunks with a marker are skipped.
A chunk interrupted half way has no marker and is recomputed, which rewrites the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, OutputError
from ..geometry import Box, ChunkGrid, chunk_bounds, split_indices
from ..io.atomic import atomic_output, ensure_directory
from ..io.base import Volume
from ..io.formats.ome_zarr import write_ome_zarr_metadata
from .engine import SlidingWindowInference, _run_attrs
from .outputs import check_output_path, prediction_file
from .resample import AxisResample, ScaleGeometry, is_identity, output_voxel_size
from .sinks import MARK_ATTR, MARK_VALUE, RegionSink, TeeSink

REGION_OFFSET_ATTR = "region_offset_zyx"
"""Zarr attribute of a chunked prediction: where voxel (0, 0, 0) of the output lies in the input
volume. With ``DATA_COORD_RANGE`` the output covers that range only (shape ``(C, z1 - z0, y1 - y0,
x1 - x0)``), so ``output[:, i, j, k]`` is input voxel ``(z0 + i, y0 + j, x0 + k)``."""


class VolumeView(Volume):
    """The part ``box`` of ``parent`` as a volume whose outside is the parent's data.

    ``read`` of a box leaving the view returns the parent's voxels there (the chunk's halo),
    and the parent's padding (``pad_mode``) only outside the parent.
    """

    def __init__(self, parent: Volume, box: Box):
        if box.ndim != parent.spatial_ndim or not parent.full_box().contains(box):
            raise ValueError(f"{parent.path}: view {box} must lie inside {list(parent.spatial_shape)}")
        self.parent = parent
        self.box = box
        self.spatial_ndim = parent.spatial_ndim
        self.path = f"{parent.path}[{':'.join(f'{a}-{b}' for a, b in zip(box.start, box.stop))}]"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.parent.channel_shape) + self.box.shape

    @property
    def dtype(self) -> np.dtype:
        return self.parent.dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        return self.parent.read(box.shift(self.box.start))

    def read(self, box: Box | None = None, pad_mode: str = "reflect", cval: float = 0) -> np.ndarray:
        if box is None:
            box = self.full_box()
        return self.parent.read(box.shift(self.box.start), pad_mode=pad_mode, cval=cval)


def chunk_file_name(stem: str, box: Box) -> str:
    """PyTC's per-chunk name ``<stem>_z0-z1-y0-y1-x0-x1.h5`` (unpadded chunk coordinates)."""
    coords = "-".join(f"{a}-{b}" for a, b in zip(box.start, box.stop))
    return f"{stem}_{coords}.h5"


def aligned_chunks(
    grid: ChunkGrid,
    target: Sequence[int] = (16, 256, 256),
    minimum: Sequence[int] = (1, 32, 32),
    scale: Sequence[float] | None = None,
) -> tuple[tuple[int, ...], bool]:
    """Zarr chunk shape whose boundaries include every chunk-grid boundary, when one exists.

    Boundaries are counted from the start of the grid's ``coord_range`` (the output array covers
    that range only). Per axis: the largest divisor of the gcd of the inner boundaries that is
    ``<= target``;
    when that is below ``minimum``, ``target`` is used and the result is flagged unaligned
    (neighbouring grid chunks then share zarr chunks: safe for one job, not for several).
    With ``scale`` (OUTPUT_SCALE) the boundaries are those of the resampled output.
    Returns ``(chunks, aligned)``.
    """
    chunks, aligned = [], True
    axes = [AxisResample.from_scale(n, f) for n, f in zip(grid.shape, scale or (1.0, 1.0, 1.0))]
    for axis, num in enumerate(grid.chunk_num):
        lo, hi = grid.coord_range[2 * axis], grid.coord_range[2 * axis + 1]
        # the output covers the range only: cuts are counted from its start (in the output grid)
        o_lo = axes[axis].output_cut(lo)
        length = axes[axis].output_cut(hi) - o_lo
        cuts = set()
        for k in range(num):
            cuts.update(axes[axis].output_cut(c) - o_lo
                        for c in chunk_bounds(k, num, hi - lo, lo, overlap=False))
        inner = [c for c in cuts if 0 < c < length]
        cap = max(1, min(int(target[axis]), length))
        if not inner:
            chunks.append(cap)
            continue
        g = 0
        for c in inner:
            g = math.gcd(g, c)
        best = max(d for d in range(1, min(g, cap) + 1) if g % d == 0)
        if best < min(int(minimum[axis]), length):
            chunks.append(cap)
            aligned = False
        else:
            chunks.append(best)
    return tuple(chunks), aligned


@dataclass
class ChunkedResult:
    """Chunk ids predicted by this call, and those skipped (already done)."""

    done: list[int]
    skipped: list[int]
    output: Path


class _SharedOutput:
    """The output zarr (group with one array), created on first use, safe against racing jobs."""

    def __init__(self, path: Path, name: str, spatial_shape, chunks, attrs: dict, voxel_size=None):
        self.voxel_size = voxel_size
        self.path = path
        self.name = name
        self.spatial_shape = tuple(spatial_shape)
        self.chunks = tuple(chunks)
        self.attrs = attrs
        self.array = None

    def get(self, region_shape, dtype):
        if self.array is not None:
            return self._check(self.array, region_shape[0], dtype)
        import zarr

        if not self.path.exists():
            parent = self.path.parent
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent))
            try:
                group = zarr.open_group(str(tmp), mode="w")
                group.attrs.update({MARK_ATTR: MARK_VALUE, **self.attrs})
                group.create_array(
                    self.name,
                    shape=(int(region_shape[0]), *self.spatial_shape),
                    chunks=(1, *self.chunks),
                    dtype=dtype,
                    fill_value=0,
                )
                write_ome_zarr_metadata(group, self.name, "czyx", self.voxel_size)
                os.rename(tmp, self.path)  # fails if another job created it first
            except OSError:
                if not self.path.exists():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        group = zarr.open_group(str(self.path), mode="r+")
        self.array = self._check(group[self.name], region_shape[0], dtype)
        return self.array

    def _check(self, array, channels: int, dtype):
        want = (int(channels), *self.spatial_shape)
        if tuple(array.shape) != want or np.dtype(array.dtype) != np.dtype(dtype) or tuple(array.chunks[1:]) != self.chunks:
            raise OutputError(
                f"{self.path}/{self.name} exists with shape {list(array.shape)}, dtype "
                f"{np.dtype(array.dtype).name}, chunks {list(array.chunks)}; this run writes shape "
                f"{list(want)}, dtype {np.dtype(dtype).name}, chunks {[1, *self.chunks]}: another chunking, "
                f"region or INFERENCE.OUTPUT_DTYPE; delete it and {progress_dir(self.path)}, or set another "
                "INFERENCE.OUTPUT_PATH / OUTPUT_NAME"
            )
        return array


def _check_marker(marker: Path, cid: int, box: Box, out: Path) -> None:
    """A chunk is skipped only when its marker was written for the same box (same chunking and
    region); otherwise the output belongs to another run."""
    try:
        done = json.loads(marker.read_text())
        same = list(done["start"]) == list(box.start) and list(done["stop"]) == list(box.stop)
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        raise OutputError(
            f"{out} was predicted with another chunking or region (chunk {cid} is {box} now, but its "
            f"marker {marker} says otherwise); delete it and {progress_dir(out)}, or set another "
            "INFERENCE.OUTPUT_PATH / OUTPUT_NAME"
        )


def progress_dir(output_path: str | Path) -> Path:
    """Where chunk completion markers live: ``<output>.progress``."""
    return Path(str(output_path).rstrip("/") + ".progress")


def predict_chunked(
    volume: Volume,
    chunk_grid: ChunkGrid,
    inference: SlidingWindowInference,
    output_path: str | Path,
    halo: int | Sequence[int] | None = None,
    normalizer: Callable | None = None,
    chunk_indices: Sequence[int] | None = None,
    rank_world: tuple[int, int] | None = None,
    write_chunk_files: bool = False,
    chunk_file_stem: str = "result",
    chunk_file_dir: str | Path | None = None,
    dataset_name: str = "vol0",
    overwrite: bool = False,
    compression: str | None = "gzip",
    on_chunk_done: Callable[[int], None] | None = None,
) -> ChunkedResult:
    """Predict ``volume`` chunk by chunk into one zarr volume at ``output_path``.

    Args:
        chunk_grid: disjoint ``ChunkGrid(volume.spatial_shape, DATA_CHUNK_NUM, overlap=False)``.
        halo: context read around each chunk and discarded (default: the engine's ``pad``).
        normalizer: raw crop -> network input (computed once for the whole volume).
        chunk_indices: chunk ids to consider (``DATA_CHUNK_IND``; default all).
        rank_world: ``CHUNK_IND_SPLIT`` as ``(rank, world)``: this job's contiguous share.
        write_chunk_files: also write ``<chunk_file_stem>_z0-z1-y0-y1-x0-x1.h5`` per chunk
            into ``chunk_file_dir`` (default: the output's directory).
        overwrite: delete an existing output and its markers first (one job only).
        on_chunk_done: called with the chunk id after its marker is written.

    Raises:
        OutputError: the output exists and is not ours, or was written with another
            shape/dtype/chunking; or it cannot be written.
        ConfigError: several jobs (``world > 1``) but the chunk grid cannot be aligned with
            zarr chunks (choose ``DATA_CHUNK_NUM`` dividing the extent more evenly).
    """
    out = Path(output_path)
    if chunk_grid.overlap:
        raise ConfigError("chunked inference needs disjoint chunks (ChunkGrid(overlap=False))")
    if tuple(chunk_grid.shape) != tuple(volume.spatial_shape):
        raise ValueError(f"chunk grid shape {list(chunk_grid.shape)} != volume {list(volume.spatial_shape)}")
    progress = progress_dir(out)
    if overwrite:
        for p in (out, progress):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    check_output_path(out, overwrite=False)
    ids = list(chunk_indices) if chunk_indices is not None else list(range(len(chunk_grid)))
    if rank_world is not None:
        rank, world = rank_world
        ids = split_indices(ids, rank, world)
    scale = inference.settings.output_scale
    chunks, aligned = aligned_chunks(chunk_grid, scale=scale)
    if not aligned and rank_world is not None and rank_world[1] > 1:
        raise ConfigError(
            f"DATASET.DATA_CHUNK_NUM {list(chunk_grid.chunk_num)} cuts the volume "
            f"{list(chunk_grid.shape)} at positions without a common zarr chunk size >= 32 voxels; "
            "with several jobs (CHUNK_IND_SPLIT) they would overwrite each other's zarr chunks"
        )
    cr = chunk_grid.coord_range
    region = Box(cr[0::2], cr[1::2])
    out_axes = [AxisResample.from_scale(n, f) for n, f in zip(volume.spatial_shape, scale)]
    out_region = Box(tuple(ax.output_cut(a) for ax, a in zip(out_axes, region.start)),
                     tuple(ax.output_cut(b) for ax, b in zip(out_axes, region.stop)))
    attrs = {
        **_run_attrs(inference.settings),
        "chunk_num": list(chunk_grid.chunk_num),
        "coord_range": list(cr),
        "source": str(getattr(volume, "path", "")),
        REGION_OFFSET_ATTR: list(out_region.start),
        "source_shape_zyx": list(volume.spatial_shape),
    }
    shared = _SharedOutput(out, dataset_name, out_region.shape, chunks, attrs,
                           output_voxel_size(getattr(volume, "voxel_size", None),
                                             volume.spatial_shape, scale))
    halo = inference.settings.pad if halo is None else halo
    chunk_dir = Path(chunk_file_dir) if chunk_file_dir is not None else out.parent
    result = ChunkedResult([], [], out)
    for k, cid in enumerate(ids):
        marker = progress / f"chunk_{cid:06d}.json"
        box = chunk_grid[cid]
        if marker.exists():
            _check_marker(marker, cid, box, out)
            result.skipped.append(cid)
            continue
        view, geometry, out_box = VolumeView(volume, box), None, box
        if not is_identity(scale):
            # the chunk's share of the resampled output, predicted from the input it depends on
            whole = ScaleGeometry.whole(volume.spatial_shape, scale)
            axes = whole.axes
            out_box = Box(tuple(ax.output_cut(a) for ax, a in zip(axes, box.start)),
                          tuple(ax.output_cut(b) for ax, b in zip(axes, box.stop)))
            if not out_box.is_empty:  # else: strong downsampling left this chunk no output voxel
                need = whole.input_box(out_box)
                geometry = ScaleGeometry(whole.scale, whole.full_shape, need.start, out_box)
                view = VolumeView(volume, need)
        with contextlib.ExitStack() as stack:
            sinks = [RegionSink(shared.get, [a - b for a, b in zip(out_box.start, out_region.start)], chunks)]
            if write_chunk_files and not out_box.is_empty:
                target = chunk_dir / chunk_file_name(chunk_file_stem, box)
                pf = stack.enter_context(prediction_file(target, "h5", overwrite, attrs=attrs))
                sinks.append(pf.sink(dataset_name, chunks=chunks, compression=compression))
            try:
                if not out_box.is_empty:
                    inference.predict(view, normalizer, sink=TeeSink(sinks), work_dir=out.parent, pad=halo,
                                      unpad=True, scale_geometry=geometry,
                                      progress_desc=f"chunk {k + 1}/{len(ids)} (id {cid})")
            except OutputError:
                raise
            except OSError as err:  # e.g. the disk filled up while zarr wrote a chunk
                raise OutputError(
                    f"cannot write chunk {cid} ({box}) of {out}: {err.strerror or err}; the chunks "
                    "finished before are kept and a rerun resumes after them"
                ) from err
        ensure_directory(progress, "chunk progress directory")
        with atomic_output(marker) as tmp:
            tmp.write_text(json.dumps({"chunk": cid, "start": list(box.start), "stop": list(box.stop)}))
        result.done.append(cid)
        if on_chunk_done is not None:
            on_chunk_done(cid)
    return result
