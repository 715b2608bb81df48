"""Sharded inference over ``torch.distributed`` ranks (``torchrun``): same output as one process.

Three ways to share the work, one per inference mode; every rank calls the same function with
the same arguments, and every output is byte for byte the one a single process writes:

* one file of volumes (:func:`predict_volumes_distributed`): the output region of each volume
  is cut along z into ``world`` contiguous slabs whose boundaries are the output's z-chunk
  boundaries. A rank predicts every window whose output reaches its slab (the window rows
  that straddle a slab boundary are predicted by both neighbours) and accumulates in the
  single-process window order, restricted to its slab (:class:`SlabPlan`, a
  :class:`~.plan.SubregionPlan` as blockwise inference uses): each voxel's
  weighted sum is then the same float32 sum in the same order, and the closed-form weight sum
  (:class:`~.blending.WeightSum`) is per voxel too, so nothing approximate is merged. Windows
  are even run in the same batches as in one process (a model's last bits can depend on the
  batch). Each rank writes its finished slab into its own zarr group in a temporary staging
  directory next to the output (no two ranks touch one file, no locks); rank 0 then copies the
  slabs, chunk-aligned, into the final HDF5 file or zarr group (written atomically as usual)
  and removes the staging directory. Cost: the duplicated boundary rows (about
  ``input_z / stride_z - 1`` rows per boundary, widened to whole batches) and one copy of the
  output by rank 0.
* ``DO_SINGLY`` (:func:`predict_singly_distributed`): the job's files (after
  ``DO_SINGLY_START_INDEX`` / ``DO_SINGLY_STEP``) are dealt round robin: the file at position
  ``k`` of the job's order goes to rank ``k % world``. Each file has its own output.
* ``DO_CHUNK_TITLE`` (:func:`predict_chunked_distributed`): the chunk ids (after
  ``DATA_CHUNK_IND`` and a job-level ``CHUNK_IND_SPLIT``) are split into contiguous shares with
  ``split_indices``; every rank writes whole, aligned chunks of the one shared zarr volume.

Failures: each function exchanges a status between the ranks after its work (an all-gather,
not a bare barrier), so an exception on one rank makes every rank raise instead of waiting
forever; the failing rank re-raises its own exception, the others a
:class:`~connectomics_data.errors.ConnectomicsDataError` naming it. A rank that dies without
an exception (killed, out of memory) is handled by ``torchrun`` (it stops the others).

Ranks must share the output's file system (one node, or a shared file system across nodes).
``world_size == 1`` (or no process group) runs the single-process code path. Byte-identical
outputs assume each process runs the model with the same number of intra-op threads as the
single-process run it is compared with (BLAS/oneDNN results depend on the thread split).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ConnectomicsDataError, OutputError
from ..geometry import Box, ChunkGrid, split_indices
from ..io.atomic import ensure_directory
from ..io.base import Volume
from .chunked import ChunkedResult, aligned_chunks, predict_chunked, progress_dir
from .engine import RunStats, SlidingWindowInference, SubregionInference, _run_attrs
from .naming import format_output_name, validate_template
from .outputs import check_output_format, check_output_path, prediction_file
from .plan import SubregionPlan, WindowPlan
from .singly import SinglyResult, predict_singly, singly_order
from .sinks import ZarrSink, default_chunks

MERGE_BLOCK_BYTES = 64 << 20
"""Largest block rank 0 copies from the staging slabs into the output at once."""


# ---------------------------------------------------------------------- process group
def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else the initialised process group's, else (0, 1).

    Raises:
        ConfigError: the values are inconsistent, or ``world_size > 1`` without an initialised
            ``torch.distributed`` process group (the ranks could not exchange anything).
    """
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"distributed inference: need 0 <= rank < world_size, got rank {rank}, world {world_size}")
    if world_size > 1:
        if not initialised:
            raise ConfigError(
                f"distributed inference with world_size {world_size} needs an initialised torch.distributed "
                "process group (launch with torchrun and --distributed)"
            )
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise ConfigError(
                f"distributed inference: rank {rank} / world {world_size} differ from the process group's "
                f"{dist.get_rank()} / {dist.get_world_size()}"
            )
    return rank, world_size


def _all_gather(obj, world: int) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _collective(fn: Callable[[], object], rank: int, world: int, what: str):
    """Run ``fn`` on this rank, then agree: if any rank raised, every rank raises.

    Returns every rank's result (rank order). The failing rank re-raises its own exception;
    the others raise :class:`ConnectomicsDataError` naming the first failing rank.
    """
    error: BaseException | None = None
    value = None
    try:
        value = fn()
    except Exception as err:  # reported to the other ranks, then re-raised below
        error = err
    status = None if error is None else f"{type(error).__name__}: {error}"
    gathered = _all_gather((status, value), world)
    if error is not None:
        raise error
    failed = [(r, s) for r, (s, _) in enumerate(gathered) if s is not None]
    if failed:
        r, message = failed[0]
        raise ConnectomicsDataError(f"distributed inference ({what}) failed on rank {r} of {world}: {message}")
    return [v for _, v in gathered]


# ---------------------------------------------------------------------- slabs
def slab_share(length: int, chunk: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's z range ``[z0, z1)`` of a region ``length`` voxels long in z.

    The region is cut at multiples of ``chunk`` (the output's z chunk) into
    ``ceil(length / chunk)`` pieces, dealt out contiguously and balanced (ranks differ by at
    most one piece; the first ``n % world`` ranks take one more). A rank without a piece
    (``world > n``) gets an empty range ``(z, z)``.
    """
    if length < 0 or chunk < 1:
        raise ValueError(f"slab_share: length must be >= 0 and chunk >= 1, got {length}, {chunk}")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"slab_share: need 0 <= rank < world, got {rank}, {world}")
    n = -(-length // chunk)
    lo, hi = rank * n // world, (rank + 1) * n // world
    return min(lo * chunk, length), min(hi * chunk, length)


class SlabPlan(SubregionPlan):
    """A :class:`~.plan.SubregionPlan` whose region is the z range ``[z0, z1)`` of ``base``'s region.

    ``z0, z1`` are in ``base``'s region coordinates; :meth:`windows` takes whole batches of
    ``batch_size`` windows of ``base``'s list (see :class:`~.plan.SubregionPlan`).
    """

    def __init__(self, base: WindowPlan, z0: int, z1: int, batch_size: int = 1):
        full = base.region.shape
        if not 0 <= z0 < z1 <= full[0]:
            raise ValueError(f"{base.path}: slab [{z0}, {z1}) must be non-empty and inside [0, {full[0]})")
        super().__init__(base, Box((int(z0), 0, 0), (int(z1), *full[1:])), batch_size)
        object.__setattr__(self, "slab", (int(z0), int(z1)))


class _SlabInference(SubregionInference):
    """The engine of ``base`` (same model, settings, activation, device) predicting one z slab."""

    def __init__(self, base: SlidingWindowInference, z0: int, z1: int):
        super().__init__(base, None)
        self.slab = (int(z0), int(z1))

    def plan(self, volume, pad=None, unpad: bool | None = None) -> WindowPlan:
        return SlabPlan(SlidingWindowInference.plan(self, volume, pad, unpad), *self.slab,
                        batch_size=self.settings.batch_size)


# ---------------------------------------------------------------------- one file of volumes
@dataclass
class ShardedRun:
    """What :func:`predict_volumes_distributed` did.

    Attributes:
        output: the prediction file (complete on every rank when the call returns).
        slabs: per volume, per rank, the ``(z0, z1)`` region rows predicted (``z0 == z1``: none).
        windows: windows predicted per rank (all volumes; boundary rows count on both ranks).
        stats: this rank's :class:`RunStats` per volume (``None`` for an empty slab).
    """

    output: Path
    slabs: list[list[tuple[int, int]]]
    windows: list[int]
    stats: list[RunStats | None] = field(default_factory=list)


def _output_chunks(region_shape: Sequence[int], chunks: Sequence[int] | None) -> tuple[int, ...]:
    """The spatial chunks the output sinks will use (as ``Hdf5Sink`` / ``ZarrSink.open``)."""
    want = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(region_shape)
    return tuple(min(c, n) for c, n in zip(want, region_shape))


def _blocks(z0: int, z1: int, shape_yx: Sequence[int], chunks: Sequence[int], voxel_bytes: int) -> list[Box]:
    """Chunk-aligned boxes tiling ``[z0, z1) x Y x X``, one z chunk thick, each within
    :data:`MERGE_BLOCK_BYTES` (at least one chunk)."""
    cz, cy, cx = chunks
    ny, nx = shape_yx
    chunk_bytes = max(1, voxel_bytes * cz * cy * cx)
    per_block = max(1, MERGE_BLOCK_BYTES // chunk_bytes)
    kx = min(-(-nx // cx), per_block)
    ky = max(1, min(-(-ny // cy), per_block // kx))
    out = []
    for z in range(z0, z1, cz):
        for y in range(0, ny, ky * cy):
            for x in range(0, nx, kx * cx):
                out.append(Box((z, y, x), (min(z + cz, z1), min(y + ky * cy, ny), min(x + kx * cx, nx))))
    return out


def _stage_name(index: int) -> str:
    return f"v{index}"


def predict_volumes_distributed(
    inference: SlidingWindowInference,
    volumes: Sequence[Volume],
    path: str | Path,
    fmt: str = "h5",
    normalizers: Sequence | None = None,
    overwrite: bool = False,
    names: Sequence[str] | None = None,
    compression: str | None = "gzip",
    chunks: Sequence[int] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> ShardedRun:
    """:func:`~.engine.predict_volumes_to_file` with the z slabs of every volume shared by the ranks.

    Every rank calls it with the same arguments (each rank opens the volumes itself; reads are
    lazy). Arguments as :func:`~.engine.predict_volumes_to_file`; ``rank`` / ``world_size``
    default to the process group's. The output at ``path`` has the same dataset contents,
    chunks, compression and attributes as a single-process run. ``INFERENCE.MEMORY_BUDGET_MB``
    applies per rank.

    Raises:
        OutputError: ``path`` cannot be written or holds a foreign file (on every rank, before
            any computation).
        ConnectomicsDataError: another rank failed (its message is included).
    """
    rank, world = rank_and_world(rank, world_size)
    final = Path(path)
    check_output_format(fmt)
    names = list(names) if names is not None else [f"vol{i}" for i in range(len(volumes))]
    if len(names) != len(volumes):
        raise ValueError(f"{len(volumes)} volumes but {len(names)} dataset names")
    if world == 1:
        return _predict_single_process(inference, volumes, final, fmt, normalizers, overwrite, names,
                                       compression, chunks)
    if any(float(f) != 1.0 for f in inference.settings.output_scale):
        raise ConfigError(
            f"INFERENCE.OUTPUT_SCALE {list(inference.settings.output_scale)} is not supported by "
            "--distributed inference of whole volumes; use INFERENCE.DO_SINGLY or DO_CHUNK_TITLE, "
            "or one process"
        )
    _collective(lambda: check_output_path(final, overwrite), rank, world, "output check")

    plans: list[WindowPlan] = []
    _collective(lambda: plans.extend(inference.plan(v) for v in volumes), rank, world, "planning")
    out_chunks = [_output_chunks(p.region_shape, chunks) for p in plans]
    slabs = [[slab_share(p.region_shape[0], c[0], r, world) for r in range(world)] for p, c in zip(plans, out_chunks)]
    staging = _collective(lambda: _make_staging(final) if rank == 0 else None, rank, world, "staging")[0]
    stats: list[RunStats | None] = []
    try:

        def predict_share() -> int:
            import zarr

            group = zarr.open_group(str(Path(staging) / f"rank{rank:05d}"), mode="w")
            done = 0
            for i, volume in enumerate(volumes):
                z0, z1 = slabs[i][rank]
                if z0 == z1:
                    stats.append(None)
                    continue
                engine = _SlabInference(inference, z0, z1)
                normalizer = normalizers[i] if normalizers is not None else None
                sink = ZarrSink(group, _stage_name(i), chunks=out_chunks[i])
                engine.predict(volume, normalizer, sink=sink, work_dir=staging)
                stats.append(engine.last_stats)
                done += engine.last_stats.windows
            inference.last_stats = next((s for s in reversed(stats) if s is not None), RunStats())
            return done

        windows = _collective(predict_share, rank, world, "prediction")

        def merge() -> None:
            if rank == 0:
                _merge_slabs(inference, volumes, final, fmt, overwrite, names, compression, chunks,
                             Path(staging), slabs, [p.region_shape for p in plans])

        _collective(merge, rank, world, "merge by rank 0")
    finally:
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
    return ShardedRun(final, slabs, [int(w) for w in windows], stats)


def _predict_single_process(inference, volumes, final: Path, fmt, normalizers, overwrite, names, compression,
                            chunks) -> ShardedRun:
    """One rank: exactly :func:`~.engine.predict_volumes_to_file`, keeping per-volume stats."""
    stats: list[RunStats | None] = []
    slabs = []
    with prediction_file(final, fmt, overwrite, attrs=_run_attrs(inference.settings)) as out:
        for i, volume in enumerate(volumes):
            normalizer = normalizers[i] if normalizers is not None else None
            attrs = {"source": str(getattr(volume, "path", ""))}
            sink = out.sink(names[i], chunks=chunks, attrs=attrs, compression=compression,
                            voxel_size=getattr(volume, "voxel_size", None))
            inference.predict(volume, normalizer, sink=sink, work_dir=out.work_dir)
            stats.append(inference.last_stats)
            slabs.append([(0, inference.plan(volume).region_shape[0])])
    return ShardedRun(final, slabs, [sum(s.windows for s in stats if s is not None)], stats)


def _make_staging(final: Path) -> str:
    parent = final.parent if str(final.parent) else Path(".")
    ensure_directory(parent, "output directory", output=final)
    try:
        return tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".shards.tmp", dir=parent)
    except OSError as err:
        raise OutputError(f"cannot create the staging directory for {final} in {parent}: {err}") from err


def _merge_slabs(inference, volumes, final: Path, fmt: str, overwrite: bool, names, compression, chunks,
                 staging: Path, slabs, region_shapes) -> None:
    """Rank 0: copy every rank's staged slabs into the final file, chunk-aligned."""
    import zarr

    with prediction_file(final, fmt, overwrite, attrs=_run_attrs(inference.settings)) as out:
        for i, volume in enumerate(volumes):
            parts = [(r, z0, z1) for r, (z0, z1) in enumerate(slabs[i]) if z1 > z0]
            arrays = {r: zarr.open_group(str(staging / f"rank{r:05d}"), mode="r")[_stage_name(i)] for r, _, _ in parts}
            first = arrays[parts[0][0]]
            channels, dtype = int(first.shape[0]), np.dtype(first.dtype)
            attrs = {"source": str(getattr(volume, "path", ""))}
            sink = out.sink(names[i], chunks=chunks, attrs=attrs, compression=compression,
                            voxel_size=getattr(volume, "voxel_size", None))
            sink.open((channels, *region_shapes[i]), dtype)
            try:
                voxel_bytes = channels * dtype.itemsize
                for r, z0, z1 in parts:
                    array = arrays[r]
                    if int(array.shape[0]) != channels or np.dtype(array.dtype) != dtype:
                        raise OutputError(
                            f"{final}: rank {r} staged {list(array.shape)} {np.dtype(array.dtype).name}, rank "
                            f"{parts[0][0]} {list(first.shape)} {dtype.name} for {names[i]}"
                        )
                    for box in _blocks(z0, z1, region_shapes[i][1:], sink.chunks, voxel_bytes):
                        src = box.shift((-z0, 0, 0))
                        sink.write(box, np.asarray(array[(slice(None), *src.slices())]))
                sink.close()
            except BaseException:
                sink.abort()
                raise


# ---------------------------------------------------------------------- DO_SINGLY
def singly_share(n: int, start_index: int, step: int, rank: int, world: int) -> tuple[int, int]:
    """``(start_index, step)`` of rank ``rank``'s share of a ``DO_SINGLY`` job.

    The job visits ``singly_order(n, start_index, step)``; taking every ``world``-th file of
    ``range(start_index, n, |step|)`` from position ``rank`` is again such a range, so each
    rank runs :func:`~.singly.predict_singly` on ``range(start + rank |step|, n, world |step|)``
    (reversed for a negative step). The shares are disjoint and cover the job.
    """
    singly_order(n, start_index, step)  # validates
    s = abs(int(step))
    share_step = world * s
    return int(start_index) + rank * s, (share_step if step > 0 else -share_step)


def predict_singly_distributed(
    files: Sequence[str],
    open_fn: Callable[[str], object],
    inference: SlidingWindowInference,
    output_dir: str | Path,
    output_name_template: str = "result.h5",
    start_index: int = 0,
    step: int = 1,
    normalizer_fn: Callable[[object], Callable] | None = None,
    output_format: str = "h5",
    overwrite: bool = False,
    compression: str | None = "gzip",
    rank: int | None = None,
    world_size: int | None = None,
) -> SinglyResult:
    """:func:`~.singly.predict_singly` with the job's files dealt round robin to the ranks.

    Returns, on every rank, the outputs of the whole job (all ranks) in the job's visiting
    order. Output names are checked for collisions over the whole job first.
    """
    rank, world = rank_and_world(rank, world_size)
    check_output_format(output_format)
    validate_template(output_name_template)
    order = singly_order(len(files), start_index, step)
    position: dict[Path, int] = {}
    seen: dict[str, int] = {}
    for k, i in enumerate(order):
        name = format_output_name(output_name_template, files[i], i, output_format)
        if name in seen:
            raise ConfigError(
                f"INFERENCE.OUTPUT_NAME {output_name_template!r} gives the same output {name!r} for "
                f"{files[seen[name]]} and {files[i]}; use {{stem}} or {{index}}"
            )
        seen[name] = i
        position[Path(output_dir) / name] = k
    my_start, my_step = singly_share(len(files), start_index, step, rank, world)

    def run() -> tuple[list[Path], list[Path]]:
        if my_start >= len(files):
            return [], []
        res = predict_singly(files, open_fn, inference, output_dir, output_name_template, my_start, my_step,
                             normalizer_fn, output_format, overwrite, compression)
        return res.written, res.skipped

    parts = _collective(run, rank, world, "DO_SINGLY")
    written = sorted((p for w, _ in parts for p in w), key=lambda p: position[Path(p)])
    skipped = sorted((p for _, s in parts for p in s), key=lambda p: position[Path(p)])
    return SinglyResult(written, skipped)


# ---------------------------------------------------------------------- DO_CHUNK_TITLE
def predict_chunked_distributed(
    volume: Volume,
    chunk_grid: ChunkGrid,
    inference: SlidingWindowInference,
    output_path: str | Path,
    *,
    chunk_indices: Sequence[int] | None = None,
    job_split: tuple[int, int] | None = None,
    overwrite: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    **kwargs,
) -> ChunkedResult:
    """:func:`~.chunked.predict_chunked` with the chunk ids shared by the ranks.

    Args:
        chunk_indices: ``DATA_CHUNK_IND`` (default: all chunks).
        job_split: ``CHUNK_IND_SPLIT`` as ``(job, jobs)``: this job's contiguous share, split
            again among the ranks (so independent jobs and ranks combine).
        overwrite: rank 0 deletes the existing output and its progress markers, then all
            ranks start.
        **kwargs: passed to :func:`predict_chunked` (halo, normalizer, write_chunk_files, ...).

    Returns, on every rank, the chunk ids done / skipped by all ranks (sorted).
    """
    rank, world = rank_and_world(rank, world_size)
    out = Path(output_path)
    ids = list(chunk_indices) if chunk_indices is not None else list(range(len(chunk_grid)))
    if job_split is not None:
        ids = split_indices(ids, *job_split)
    if (world == 1 and job_split is not None and job_split[1] > 1
            and not aligned_chunks(chunk_grid, scale=inference.settings.output_scale)[1]):
        # predict_chunked checks this for rank_world; with one rank only the job split is shared
        raise ConfigError(
            f"DATASET.DATA_CHUNK_NUM {list(chunk_grid.chunk_num)} cuts the volume {list(chunk_grid.shape)} at "
            "positions without a common zarr chunk size >= 32 voxels; several jobs (CHUNK_IND_SPLIT) would "
            "overwrite each other's zarr chunks"
        )

    def clear() -> None:
        if overwrite and rank == 0:
            for p in (out, progress_dir(out)):
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()

    _collective(clear, rank, world, "overwrite")

    def run() -> tuple[list[int], list[int]]:
        res = predict_chunked(volume, chunk_grid, inference, out, chunk_indices=ids, rank_world=(rank, world),
                              overwrite=False, **kwargs)
        return res.done, res.skipped

    parts = _collective(run, rank, world, "DO_CHUNK_TITLE")
    return ChunkedResult(sorted(c for d, _ in parts for c in d), sorted(c for _, s in parts for c in s), out)


__all__ = [
    "SlabPlan",
    "ShardedRun",
    "predict_chunked_distributed",
    "predict_singly_distributed",
    "predict_volumes_distributed",
    "rank_and_world",
    "singly_share",
    "slab_share",
]
