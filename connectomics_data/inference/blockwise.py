"""Blockwise inference on daisy: many workers (and machines), resumable, the bytes of one process.

The output region of each volume (the prediction's ``(z, y, x)`` extent) is one daisy task. Its
blocks' write ROIs tile the region on the output zarr's chunk grid (a block is a whole number
of chunks, the last ones shrunk to the region), so no two blocks ever write the same zarr
chunk; a block's read ROI is its write ROI grown by one model window (the context its sliding
windows reach; daisy needs it only for bookkeeping, the windows read what they need).

A block is predicted by :class:`~.engine.SubregionInference`: the windows of the single-process
sliding-window grid whose output reaches the block, in the grid's order and in the grid's
batches, blended with the closed-form weight sum; this is the same code the
``torch.distributed`` path (:mod:`.distributed`) runs for its z slabs, and it makes every output
voxel the same float32 sum as :func:`~.engine.predict_volumes_to_file` computes. The output zarr
is created once, up front, with its full shape, by the same code as the single-process zarr
output (:func:`~.outputs.prediction_file`); workers then write their blocks into it.

Files (``<output>`` is ``<OUTPUT_PATH>/<name>.zarr``):

* ``<output>.blockwise/run.json``: what the output is (settings, shapes, chunks, blocks, model
  id, normaliser); a rerun with the same run resumes, a different one is refused;
* ``<output>.blockwise/vol<i>/``: daisy's tracking store (one done byte per block, written by
  the scheduler when a worker reports the block finished, i.e. after its chunks are written);
* ``<output>.blockwise/vol<i>/failed/block_<id>.json``: why a block failed (removed when it
  succeeds later); ``<output>.blockwise/logs/``: the workers' stdout/stderr;
* ``<output>.blockwise/scheduler.json``: the running scheduler's address, for workers started
  separately (:func:`join_blockwise`).

Restarts: killing the scheduler or any worker at any moment (``kill -9``) and running the same
command again finishes the volume: blocks with a done byte are skipped, a block interrupted
half way has none and is predicted again, rewriting the same bytes into the same chunks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ConnectomicsDataError, OutputError
from ..geometry import Box
from ..io.atomic import atomic_output
from .blockwise_progress import BlockProgress
from .engine import InferenceSettings, SlidingWindowInference, SubregionInference, _run_attrs
from .outputs import is_our_output, prediction_file
from .plan import SubregionPlan, WindowPlan
from .sinks import RegionSink, check_output_dtype

EngineFactory = Callable[..., SlidingWindowInference]
"""``factory(device) -> SlidingWindowInference`` (model on ``device``, eval mode); picklable
(a module-level function or ``functools.partial`` of one): it runs in every worker."""

MANIFEST_VERSION = 1


class BlockwiseError(ConnectomicsDataError, RuntimeError):
    """A blockwise run could not finish: blocks failed (named by ROI) or workers kept dying."""


def _require_daisy() -> None:
    try:
        import daisy  # noqa: F401
    except ImportError as err:
        raise ConfigError("blockwise inference needs daisy >= 2 (Python >= 3.11): "
                          "pip install 'connectomics_data[blockwise]'") from err


# ---------------------------------------------------------------------- geometry
def progress_dir(output: str | Path) -> Path:
    """``<output>.blockwise``: manifest, done markers, failure records and worker logs."""
    return Path(str(output).rstrip("/") + ".blockwise")


def default_block_shape(region_shape: Sequence[int], chunks: Sequence[int], settings: InferenceSettings) -> tuple[int, ...]:
    """Blocks of whole chunks: 8 strides in z, 16 in y and x, at least 2 windows (clipped to the region).

    A window whose output straddles two blocks is computed by both, so larger blocks recompute
    fewer windows (with PyTC's 17 x 257 x 257 windows at stride 8 x 128 x 128 on a 256 x 4096 x
    4096 volume this default, 64 x 2048 x 2048, computes 1.6x the windows of one process,
    64 x 1024 x 1024 blocks 2.25x, whole 64 x 4096 x 4096 planes 1.19x) but hold
    more: the block's float32 accumulator, ``4 C`` bytes a voxel, in memory within
    ``INFERENCE.MEMORY_BUDGET_MB`` and on disk beyond.
    """
    out = []
    for axis, (n, c, s, w) in enumerate(zip(region_shape, chunks, settings.stride, settings.input_size)):
        want = max(c, (8 if axis == 0 else 16) * s, 2 * w)
        out.append(min(-(-want // c) * c, -(-int(n) // c) * c))
    return tuple(out)


def aligned_block_shape(block_shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """``block_shape`` rounded up to whole chunks per axis.

    Raises:
        ConfigError: not 3 positive ints.
    """
    block = tuple(int(b) for b in block_shape)
    if len(block) != 3 or any(b <= 0 for b in block):
        raise ConfigError(f"--block-size must be 3 positive ints (z, y, x), got {list(block_shape)}")
    return tuple(-(-b // c) * c for b, c in zip(block, chunks))


def block_boxes(region_shape: Sequence[int], block_shape: Sequence[int]) -> list[Box]:
    """The write boxes tiling the region (z-major), the last ones shrunk: daisy's ``fit='shrink'``."""
    axes = [[(a, min(a + b, n)) for a in range(0, n, b)] for n, b in zip(region_shape, block_shape)]
    return [Box((z0, y0, x0), (z1, y1, x1)) for z0, z1 in axes[0] for y0, y1 in axes[1] for x0, x1 in axes[2]]


def windows_per_block(plan: WindowPlan, blocks: Sequence[Box], output_size: Sequence[int] | None,
                      batch_size: int) -> list[int]:
    """How many windows each block computes (whole batches included); compare ``len(plan.windows())``."""
    return [sum(1 for _ in SubregionPlan(plan, box, batch_size).windows(output_size)) for box in blocks]


def _roi(box: Box):
    from funlib.geometry import Roi

    return Roi(tuple(box.start), tuple(box.shape))


def _box(roi) -> Box:
    begin = tuple(int(v) for v in roi.begin)
    return Box(begin, tuple(b + int(s) for b, s in zip(begin, roi.shape)))


def format_box(box: Box) -> str:
    """``[z0:z1, y0:y1, x0:x1]`` (output region coordinates)."""
    return "[" + ", ".join(f"{a}:{b}" for a, b in zip(box.start, box.stop)) + "]"


# ---------------------------------------------------------------------- the work of one worker
@dataclass
class BlockwiseJob:
    """Everything a worker needs for one volume; pickled to every worker.

    Attributes:
        engine_factory: ``(device) -> SlidingWindowInference`` (see :data:`EngineFactory`).
        settings: the run's settings (checked against the engine the factory builds).
        volume: the input :class:`~connectomics_data.io.Volume` (opened lazily in the worker).
        normalizer: raw crop -> network input (computed once, by the scheduler).
        output: the output zarr group; ``name``: the array in it (``vol<i>``).
        channels: prediction channels ``C`` of the array.
        task_id: daisy task (``vol<i>``); ``tracking``: its tracking directory.
        threads: torch intra-op threads per worker (None: leave torch's default).
        device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda'.
        worker_command: run each worker slot as this shell command (e.g. ``srun ... python
            scripts/predict_blockwise.py --join {output}``) with ``DAISY_CONTEXT`` in its
            environment instead of in a local subprocess; ``{output}`` and ``{worker_id}`` are
            filled in.
        cwd: the scheduler's working directory: workers resolve relative paths (input, output)
            from it, so a worker started elsewhere needs it on its host (a shared file system
            mounted at the same path).
    """

    engine_factory: EngineFactory
    settings: InferenceSettings
    volume: object
    normalizer: Callable | None
    output: Path
    name: str
    channels: int
    task_id: str
    tracking: Path
    threads: int | None = None
    device: str = "auto"
    worker_command: str | None = None
    cwd: str | None = None


def _pick_device(kind: str, worker_index: int):
    """Worker ``worker_index`` takes GPU ``worker_index % visible GPUs`` (one GPU per worker)."""
    import torch

    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to this worker")
    index = worker_index % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class BlockProcessor:
    """Predicts blocks of one job; sets itself up (threads, device, model, output) on first use."""

    def __init__(self, job: BlockwiseJob, worker_index: int = 0):
        self.job = job
        self.worker_index = int(worker_index)
        self.engine: SlidingWindowInference | None = None
        self.array = None
        self.chunks: tuple[int, ...] = ()

    def setup(self) -> None:
        if self.engine is not None:
            return
        import torch
        import zarr

        job = self.job
        if job.threads:
            torch.set_num_threads(int(job.threads))
        engine = job.engine_factory(_pick_device(job.device, self.worker_index))
        if engine.settings != job.settings:
            raise ConfigError(f"{job.output}: the worker's engine settings {engine.settings} differ from the run's "
                              f"{job.settings}")
        self.array = zarr.open_group(str(job.output), mode="r+")[job.name]
        self.chunks = tuple(int(c) for c in self.array.chunks[1:])
        self.engine = engine

    def _target(self, shape, dtype):
        want = (self.job.channels, *shape[1:])
        if int(shape[0]) != self.job.channels or np.dtype(dtype) != np.dtype(self.array.dtype):
            raise OutputError(f"{self.job.output}/{self.job.name}: the model predicts {list(shape)} "
                              f"{np.dtype(dtype).name} but the output holds {self.job.channels} channels "
                              f"{np.dtype(self.array.dtype).name} (MODEL.OUT_PLANES?); expected {list(want)}")
        return self.array

    def predict(self, box: Box) -> int:
        """Predict the block ``box`` (output region coordinates) into the output; returns windows."""
        self.setup()
        engine = SubregionInference(self.engine, box)
        sink = RegionSink(self._target, box.start, self.chunks)
        engine.predict(self.job.volume, self.job.normalizer, sink=sink, work_dir=self.job.output.parent)
        return engine.last_stats.windows

    # daisy's serial mode calls this once per block
    def __call__(self, block) -> None:
        self.run_block(block)

    def run_block(self, block) -> None:
        box = _box(block.write_roi)
        record = self.job.tracking / "failed" / f"block_{block.block_id[1]}.json"
        try:
            self.predict(box)
        except Exception as err:
            _record_failure(record, block.block_id[1], box, err, self.worker_index)
            raise
        if record.exists():
            record.unlink(missing_ok=True)


def _record_failure(path: Path, block_id: int, box: Box, err: BaseException, worker: int) -> None:
    message = " ".join(f"{type(err).__name__}: {err}".split())
    text = json.dumps({"block": block_id, "write_roi": [list(box.start), list(box.stop)], "error": message,
                       "worker": worker, "host": socket.gethostname(), "time": time.time(),
                       "traceback": traceback.format_exc()[-4000:]})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except OSError:
        pass  # the failure is still reported to the scheduler by daisy


class _BlockFailed(Exception):
    """Raised inside daisy's acquire context so the block is reported failed; the worker lives on."""


def _write_address(job: BlockwiseJob, context) -> None:
    address = {k: context[k] for k in ("hostname", "port", "task_id")}
    path = job.tracking.parent / "scheduler.json"
    try:
        if path.exists() and json.loads(path.read_text()) == address:
            return
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(address))
    except (OSError, ValueError):
        pass


class BlockwiseWorker:
    """daisy worker function: connect, set up once, then predict blocks until none are left.

    A block that raises is reported failed (daisy retries it up to ``max_retries`` times,
    possibly on another worker) and the worker continues with the next block; only errors of
    the connection or the set-up (model, output) end the worker.
    """

    def __init__(self, job: BlockwiseJob):
        self.job = job

    def __call__(self, *, context=None) -> int | None:
        """Returns the number of blocks this worker finished (``None``: no scheduler to talk to)."""
        import daisy

        if context is None:
            context = daisy.Context.from_env()
        if self.job.cwd and os.path.isdir(self.job.cwd):
            os.chdir(self.job.cwd)
        worker_id = int(context.get("worker_id", "-1"))
        if worker_id >= 0:
            _write_address(self.job, context)
            if self.job.worker_command:
                return _run_worker_command(self.job, context, worker_id)
        client = daisy.Client(context)
        if not client.connected:
            return None
        local = int(os.environ.get("LOCAL_RANK", "0"))
        processor = BlockProcessor(self.job, worker_id if worker_id >= 0 else local)
        processor.setup()
        done = 0
        while True:
            try:
                with client.acquire_block() as block:
                    if block is None:
                        return done
                    try:
                        processor.run_block(block)
                    except Exception as err:
                        raise _BlockFailed(f"{type(err).__name__}: {err}") from err
                    done += 1
            except _BlockFailed:
                continue


def _run_worker_command(job: BlockwiseJob, context, worker_id: int) -> None:
    """One worker slot as a user command (``srun``, ``ssh``, ...) that runs ``--join`` somewhere."""
    import shlex
    import subprocess

    command = job.worker_command.format(output=shlex.quote(str(job.output)), worker_id=worker_id)
    env = dict(os.environ, DAISY_CONTEXT=context.to_env())
    code = subprocess.run(command, shell=True, env=env).returncode
    if code != 0:
        raise RuntimeError(f"worker command exited with status {code}: {command}")


def _job_path(progress: Path, task_id: str) -> Path:
    return progress / task_id / "job.pkl"


def _save_job(job: BlockwiseJob) -> None:
    import cloudpickle

    job.tracking.mkdir(parents=True, exist_ok=True)
    with atomic_output(_job_path(job.tracking.parent, job.task_id)) as tmp:
        tmp.write_bytes(cloudpickle.dumps(job))


def join_blockwise(output: str | Path) -> int | None:
    """Run one worker for the running blockwise run that writes ``output`` (any host, any time).

    The scheduler's address comes from ``DAISY_CONTEXT`` (set by ``worker_command`` slots) or
    else from ``<output>.blockwise/scheduler.json`` (written by the run's own worker slots);
    the job (model factory, volume, settings) from ``<output>.blockwise/<task>/job.pkl``,
    written by the scheduler. Both live on the file system every worker must share anyway.
    The worker predicts blocks until the scheduler has none left and returns how many it
    finished; a scheduler that is gone ends it at once (returns ``None``).

    Raises:
        OutputError: no running blockwise run is recorded for ``output``.
    """
    import pickle

    import daisy

    progress = progress_dir(output)
    if os.environ.get("DAISY_CONTEXT"):
        context = daisy.Context.from_env()
    else:
        address = progress / "scheduler.json"
        if not address.is_file():
            raise OutputError(f"no blockwise run is running for {output}: {address} is missing (start "
                              "predict_blockwise.py with --workers >= 1 first; its workers write it)")
        context = daisy.Context(**json.loads(address.read_text()), worker_id="-1")
    job_file = _job_path(progress, context["task_id"])
    try:
        job = pickle.loads(job_file.read_bytes())
    except OSError as err:
        raise OutputError(f"cannot read the blockwise job {job_file}: {err}") from err
    # a slot of worker_command runs this with the slot's context: predict here, never relaunch
    return BlockwiseWorker(dataclasses.replace(job, worker_command=None))(context=context)


# ---------------------------------------------------------------------- the run
@dataclass
class FailedBlock:
    """A block that failed after daisy's retries: its id, write ROI and the last error."""

    volume: str
    block_id: int
    box: Box
    error: str = ""

    def describe(self) -> str:
        return f"{self.volume} block {self.block_id} {format_box(self.box)}: {self.error or 'failed (see worker logs)'}"


@dataclass
class BlockwiseResult:
    """What :func:`predict_blockwise` did (all volumes)."""

    output: Path
    blocks: int = 0
    done: int = 0  # predicted by this run
    skipped: int = 0  # done by an earlier run
    failed: list[FailedBlock] = field(default_factory=list)
    block_shape: tuple[int, ...] = ()  # of the first volume
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.done + self.skipped == self.blocks


def _normalizer_record(normalizer) -> dict | None:
    from ..normalize import ImageNormalizer

    if isinstance(normalizer, ImageNormalizer):
        return {"mean": normalizer.mean, "std": normalizer.std, "match_act": normalizer.match_act,
                "value_range": None if normalizer.value_range is None else list(normalizer.value_range)}
    return None


def _normalizer_from_record(record: dict | None):
    from ..normalize import ImageNormalizer

    if record is None:
        return None
    vr = record.get("value_range")
    return ImageNormalizer(record["mean"], record["std"], record["match_act"], None if vr is None else tuple(vr))


def _manifest(settings: InferenceSettings, volumes, plans, channels: int, dtype: str, block_shape, chunks,
              model_id: str, names) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "settings": {**_run_attrs(settings), "pad_mode": settings.pad_mode, "batch_size": settings.batch_size,
                     "output_size": None if settings.output_size is None else list(settings.output_size),
                     "do_2d": settings.do_2d},
        "model": str(model_id),
        "channels": int(channels),
        "dtype": str(dtype),
        "block_size": None if block_shape is None else [int(b) for b in block_shape],
        "chunks": None if chunks is None else [int(c) for c in chunks],
        "volumes": [{"name": n, "source": str(getattr(v, "path", "")), "shape": [int(s) for s in v.shape],
                     "dtype": np.dtype(v.dtype).name, "region": [int(s) for s in p.region_shape]}
                    for n, v, p in zip(names, volumes, plans)],
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _prepare_output(output: Path, manifest: dict, overwrite: bool) -> dict | None:
    """Refuse, resume or start: returns the stored manifest when resuming, else None."""
    progress = progress_dir(output)
    if overwrite:
        for p in (output, progress):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    record = progress / "run.json"
    old = json.loads(record.read_text()) if record.is_file() else None
    if output.exists():
        if old is None or not is_our_output(output):
            raise OutputError(
                f"{output} exists but was not written by a blockwise run ({record} is missing); refusing to "
                "overwrite it (pass --overwrite, or choose another INFERENCE.OUTPUT_PATH / OUTPUT_NAME)")
        stored = {k: v for k, v in old.items() if k != "normalizers"}
        diff = _differences(stored, manifest)
        if diff:
            raise OutputError(
                f"{output} was started by a blockwise run with other settings ({'; '.join(diff[:4])}); "
                "resume with the same settings, or pass --overwrite to start again")
        return old
    if progress.exists():  # markers without their output: stale, start again
        shutil.rmtree(progress)
    return None


def _create_output(output: Path, settings: InferenceSettings, volumes, plans, names, channels: int,
                   dtype, chunks, compression) -> None:
    """The empty output, created exactly as the single-process zarr output (same function, attrs, chunks)."""
    with prediction_file(output, "zarr", False, attrs=_run_attrs(settings)) as out:
        for name, volume, plan in zip(names, volumes, plans):
            attrs = {"source": str(getattr(volume, "path", ""))}
            sink = out.sink(name, chunks=chunks, attrs=attrs, compression=compression,
                            voxel_size=getattr(volume, "voxel_size", None))
            sink.open((int(channels), *plan.region_shape), dtype)
            sink.close()


def _failed_blocks(task, job: BlockwiseJob) -> list[FailedBlock]:
    out = []
    for block in task.failed_blocks():
        bid = int(block.block_id[1])
        error = ""
        record = job.tracking / "failed" / f"block_{bid}.json"
        if record.is_file():
            try:
                error = json.loads(record.read_text()).get("error", "")
            except (OSError, ValueError):
                pass
        out.append(FailedBlock(job.task_id, bid, _box(block.write_roi), error))
    return sorted(out, key=lambda f: tuple(f.box.start))


def predict_blockwise(
    engine_factory: EngineFactory,
    settings: InferenceSettings,
    volumes: Sequence,
    output: str | Path,
    channels: int,
    normalizer_fn: Callable | None = None,
    workers: int = 1,
    block_shape: Sequence[int] | None = None,
    chunks: Sequence[int] | None = None,
    threads: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    max_retries: int = 2,
    block_timeout: float | None = None,
    model_id: str = "",
    names: Sequence[str] | None = None,
    compression: str | None = "gzip",
    progress: bool | Callable[[str], object] = True,
    host: str | None = None,
    worker_command: str | None = None,
    scheduler_log: bool = False,
) -> BlockwiseResult:
    """Predict ``volumes`` block by block with daisy into one zarr at ``output`` (``vol0``, ...).

    The output equals ``predict_volumes_to_file(engine, volumes, output, 'zarr', normalizers)``
    byte for byte (same chunks, attributes and values, given the same threads per process).

    Args:
        engine_factory: ``(device) -> SlidingWindowInference``; picklable, called once per worker.
        settings: the engine's :class:`InferenceSettings` (the factory's must be equal).
        volumes: input volumes (picklable: volumes open their files lazily).
        output: the ``.zarr`` group to write.
        channels: prediction channels ``C`` (``MODEL.OUT_PLANES``).
        normalizer_fn: ``volume -> normalizer``; computed once here and stored for resumes.
        workers: local worker processes; ``0`` runs the blocks in this process (serial, no
            subprocesses: for debugging).
        block_shape: block write size (z, y, x), rounded up to whole output chunks; default
            :func:`default_block_shape`.
        chunks: output chunks (z, y, x) (default as the single-process output: up to 8 x 256 x 256).
        threads: torch threads per worker (default: CPU count // workers).
        device: 'auto' | 'cpu' | 'cuda' (worker ``k`` takes GPU ``k % visible GPUs``).
        overwrite: delete an existing output and its progress first.
        max_retries: attempts after a block's first failure (daisy ``max_retries``).
        block_timeout: seconds after which a block's worker is killed and the block retried
            (default: no limit).
        model_id: identifies the model in the manifest (e.g. the checkpoint path, size, mtime);
            a resume with another model id is refused.
        progress: True (bar on a terminal, else a line at most every 10 s on stderr), False, or a
            callable ``label -> observer`` (daisy observer with ``on_start/on_progress/on_finish``).
        host: the address workers connect to (daisy detects one; '127.0.0.1' keeps it local).
        worker_command: run each of the ``workers`` slots as this shell command instead of a
            local subprocess (see :class:`BlockwiseJob`); workers started by hand join with
            :func:`join_blockwise` either way.
        scheduler_log: send what daisy's scheduler prints on file descriptor 2 (a warning with
            a traceback per failed attempt) to ``<output>.blockwise/logs/scheduler.log``; the
            progress then goes to the real stderr (for command lines).

    Raises:
        OutputError: ``output`` exists and is not a blockwise output of the same run.
        BlockwiseError: workers kept failing to start (daisy abandoned the task).
        ConfigError: daisy is not installed.
    """
    _require_daisy()
    t_start = time.perf_counter()
    output = Path(output)
    names = list(names) if names is not None else [f"vol{i}" for i in range(len(volumes))]
    if len(names) != len(volumes) or not volumes:
        raise ValueError(f"{len(volumes)} volumes but {len(names)} dataset names")
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    dtype = check_output_dtype(settings.output_dtype)
    planner = SlidingWindowInference(lambda x: x, settings, device="cpu")
    plans = [planner.plan(v) for v in volumes]
    if block_shape is not None:
        aligned_block_shape(block_shape, (1, 1, 1))  # validates
    manifest = _manifest(settings, volumes, plans, channels, dtype.name, block_shape, chunks, model_id, names)
    progress_root = progress_dir(output)
    stored = _prepare_output(output, manifest, overwrite)
    if stored is not None and stored.get("normalizers"):
        normalizers = [_normalizer_from_record(r) for r in stored["normalizers"]]
    else:
        normalizers = [normalizer_fn(v) if normalizer_fn is not None else None for v in volumes]
    if stored is None:
        progress_root.mkdir(parents=True, exist_ok=True)
        manifest["normalizers"] = [_normalizer_record(n) for n in normalizers]
        with atomic_output(progress_root / "run.json") as tmp:
            tmp.write_text(json.dumps(manifest, indent=1))
        _create_output(output, settings, volumes, plans, names, channels, dtype, chunks, compression)

    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    from daisy import logging as daisy_logging

    daisy_logging.set_log_basedir(str(progress_root / "logs"))
    import zarr

    group = zarr.open_group(str(output), mode="r")
    blocks = []
    for name, plan in zip(names, plans):  # per volume: whole chunks of its array
        out_chunks = tuple(int(c) for c in group[name].chunks[1:])
        if block_shape is None:
            blocks.append(default_block_shape(plan.region_shape, out_chunks, settings))
        else:
            blocks.append(aligned_block_shape(block_shape, out_chunks))
    result = BlockwiseResult(output, block_shape=blocks[0])
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(_fd2_to(progress_root / "logs" / "scheduler.log")) if scheduler_log else None
        for i, (volume, plan, name) in enumerate(zip(volumes, plans, names)):
            _run_volume(result, engine_factory, settings, volume, plan, name, normalizers[i], output, channels,
                        progress_root, threads, device, worker_command, workers, blocks[i], max_retries,
                        block_timeout, progress, host, stream)
    result.seconds = time.perf_counter() - t_start
    return result


@contextlib.contextmanager
def _fd2_to(log: Path):
    """Point file descriptor 2 at ``log``; yield a line-buffered stream on the real stderr."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        with open(log, "a") as target:
            os.dup2(target.fileno(), 2)
            yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        real.close()


def _run_volume(result: BlockwiseResult, engine_factory, settings, volume, plan, name, normalizer, output: Path,
                channels, progress_root: Path, threads, device, worker_command, workers, block, max_retries,
                block_timeout, progress, host, stream) -> None:
    """One volume: one daisy task."""
    import daisy

    job = BlockwiseJob(engine_factory, settings, volume, normalizer, output, name, int(channels), name,
                       progress_root / name, threads, device, worker_command, os.getcwd())
    if workers > 0:
        _save_job(job)
    context = tuple(int(w) for w in settings.input_size)
    total = Box([-c for c in context], [n + c for n, c in zip(plan.region_shape, context)])
    write = Box.from_shape(block)
    read = Box([-c for c in context], [b + c for b, c in zip(block, context)])
    task = daisy.Task(
        name, _roi(total), _roi(read), _roi(write),
        process_function=BlockwiseWorker(job) if workers > 0 else BlockProcessor(job),
        read_write_conflict=False, fit="shrink", max_workers=max(1, workers), max_retries=int(max_retries),
        tracking_path=str(job.tracking), timeout=float("inf") if block_timeout is None else float(block_timeout),
        max_worker_restarts=max(3, 2 * workers),
    )
    if workers == 0:
        from daisy._runner import _run_serial

        states = _run_serial(task, summary=False)
    else:
        observer = None
        if progress is True:
            observer = BlockProgress(f"{output.name}/{name}", stream=stream)
        elif callable(progress):
            observer = progress(f"{output.name}/{name}")
        try:
            states = daisy.Server().run_blockwise(task, progress=observer or False, summary=False, host=host)
        finally:
            (progress_root / "scheduler.json").unlink(missing_ok=True)
    state = states[name]
    result.blocks += int(state.total_block_count)
    result.skipped += int(state.skipped_count)
    result.done += int(state.completed_count) - int(state.skipped_count)
    result.failed += _failed_blocks(task, job)
    if getattr(state, "abandoned", False):
        error = (state.last_worker_error or "").strip().splitlines()
        raise BlockwiseError(
            f"{output}/{name}: daisy gave up after workers failed repeatedly ({state.abandon_reason}); "
            f"last worker error: {error[-1] if error else 'unknown'}; worker logs in {progress_root / 'logs'}")


__all__ = [
    "BlockProcessor",
    "BlockProgress",
    "BlockwiseError",
    "BlockwiseJob",
    "BlockwiseResult",
    "BlockwiseWorker",
    "FailedBlock",
    "aligned_block_shape",
    "block_boxes",
    "default_block_shape",
    "format_box",
    "join_blockwise",
    "predict_blockwise",
    "progress_dir",
    "windows_per_block",
]

