"""Sliding-window inference over one volume: read, predict (TTA), blend, finalise, write.

Data flow per batch of windows (z-major order):

1. :class:`~.reader.WindowBatchReader` reads the windows lazily from the volume (padding on
   read) in a background thread, one batch ahead, and normalises them to float32.
2. The batch is moved to the device once; :class:`~.tta.TestTimeAugmentation` runs the model
   once per variant, applies the activation, inverts the variant and reduces on the device; the
   result is multiplied by the blending weights (on a GPU on the device, on the CPU with numpy)
   and moved to the CPU once.
3. An accumulator (in memory within ``memory_budget_mb``, else a temporary zarr next to the
   output behind a bounded chunk cache) adds the weighted outputs. The summed weights are not
   accumulated: :class:`~.blending.WeightSum` has them in closed form.
4. As soon as no later window reaches below some z (windows are processed row by row in z),
   the finished z-slab, rounded down to the sink's chunk boundaries, is normalised
   (``sum / weight``), converted to the output dtype, written to the sink and released.

Peak memory is one window batch, one finalisation block and the accumulator (in memory) or
its chunk cache (on disk, half the budget): independent of the volume size on the zarr path.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..geometry import Box
from ..io.base import PAD_MODES
from ..progress import Progress
from .accumulate import Accumulator, MemoryAccumulator, ZarrAccumulator, accumulator_bytes
from .blending import BLENDING_MODES, WeightSum, blending_weights
from .plan import SubregionPlan, WindowPlan
from .reader import WindowBatchReader
from .resample import (
    ScaleGeometry,
    StreamingResampler,
    check_output_scale,
    is_identity,
    output_voxel_size,
)
from .sinks import ArraySink, Sink, check_output_dtype, convert_scaled, output_scale
from .tta import TestTimeAugmentation

Activation = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferenceSettings:
    """Explicit settings of a sliding-window run (the PyTC keys they come from in brackets).

    Attributes:
        input_size: model window (z, y, x) [INFERENCE.INPUT_SIZE or MODEL.INPUT_SIZE];
            ``[1, y, x]`` with ``do_2d``.
        stride: window stride (z, y, x) [INFERENCE.STRIDE].
        output_size: model output (z, y, x) [INFERENCE.OUTPUT_SIZE or MODEL.OUTPUT_SIZE];
            ``None``: taken from the model's first output. Smaller outputs are placed centred.
        pad: PAD_SIZE (int, 3 or 6 ints) [DATASET.PAD_SIZE].
        pad_mode: ``Volume.read`` pad mode for the padding [DATASET.PAD_MODE].
        unpad: crop the padding from the result [INFERENCE.UNPAD].
        blending: 'gaussian' | 'bump' [INFERENCE.BLENDING].
        aug_num, aug_mode: test-time augmentation [INFERENCE.AUG_NUM, AUG_MODE].
        batch_size: windows per forward pass [INFERENCE.SAMPLES_PER_BATCH].
        do_2d: 2D model, windows ``[1, y, x]`` fed as ``(B, C, y, x)`` [DATASET.DO_2D].
        output_dtype: 'uint8' (x255, clipped, rounded) | 'float16' | 'float32'.
        memory_budget_mb: in-memory accumulator limit; larger outputs accumulate in a
            temporary chunked zarr [INFERENCE.MEMORY_BUDGET_MB].
        prefetch: read the next batch in a background thread.
        output_scale: resample the prediction by these factors (z, y, x), output shape
            ``ceil(shape * scale)`` (see :mod:`.resample`) [INFERENCE.OUTPUT_SCALE].
    """

    input_size: tuple[int, ...]
    stride: tuple[int, ...]
    output_size: tuple[int, ...] | None = None
    pad: int | tuple[int, ...] = 0
    pad_mode: str = "reflect"
    unpad: bool = True
    blending: str = "gaussian"
    aug_num: int | None = None
    aug_mode: str = "mean"
    batch_size: int = 4
    do_2d: bool = False
    output_dtype: str = "uint8"
    memory_budget_mb: float = 2048.0
    prefetch: bool = True
    output_scale: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "output_scale", check_output_scale(self.output_scale))
        set_(self, "input_size", tuple(int(v) for v in self.input_size))
        set_(self, "stride", tuple(int(v) for v in self.stride))
        if self.output_size is not None:
            set_(self, "output_size", tuple(int(v) for v in self.output_size))
        if not isinstance(self.pad, int):
            set_(self, "pad", tuple(int(v) for v in self.pad))
        for key, value in (("INFERENCE.INPUT_SIZE", self.input_size), ("INFERENCE.STRIDE", self.stride)):
            if len(value) != 3 or any(v <= 0 for v in value):
                raise ConfigError(f"{key} must be 3 positive ints (z, y, x), got {list(value)}")
        if self.output_size is not None and (
            len(self.output_size) != 3
            or any(not 0 < o <= i for o, i in zip(self.output_size, self.input_size))
        ):
            raise ConfigError(
                f"INFERENCE.OUTPUT_SIZE {list(self.output_size)} must be 3 positive ints no larger "
                f"than the input size {list(self.input_size)}"
            )
        if self.do_2d and self.input_size[0] != 1:
            raise ConfigError(
                f"DATASET.DO_2D needs a window one slice thick: INPUT_SIZE [1, y, x], got "
                f"{list(self.input_size)}"
            )
        if self.pad_mode not in PAD_MODES:
            raise ConfigError(f"DATASET.PAD_MODE must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.blending not in BLENDING_MODES:
            raise ConfigError(f"INFERENCE.BLENDING must be one of {BLENDING_MODES}, got {self.blending!r}")
        if self.batch_size <= 0:
            raise ConfigError(f"INFERENCE.SAMPLES_PER_BATCH must be positive, got {self.batch_size}")
        if self.memory_budget_mb <= 0:
            raise ConfigError(f"INFERENCE.MEMORY_BUDGET_MB must be positive, got {self.memory_budget_mb}")
        check_output_dtype(self.output_dtype)
        tta = TestTimeAugmentation(self.aug_num, self.aug_mode, self.do_2d)  # validates both
        if tta.uses_transpose and self.input_size[1] != self.input_size[2]:
            raise ConfigError(
                f"INFERENCE.AUG_NUM {self.aug_num} transposes y and x, which needs a square "
                f"window, got INPUT_SIZE {list(self.input_size)}"
            )

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_mb * (1 << 20))


@dataclass
class RunStats:
    """Timings (seconds) and counts of the last run; ``read`` overlaps the rest (thread)."""

    windows: int = 0
    voxels: int = 0  # input voxels fed to the model (windows x window size)
    output_voxels: int = 0
    read: float = 0.0
    model: float = 0.0
    blend: float = 0.0
    write: float = 0.0
    wall: float = 0.0
    accumulator: str = ""
    extra: dict = field(default_factory=dict)


def _axis_blocks(start: int, stop: int, chunk: int, phase: int, per_block: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` at chunk boundaries ``phase + k chunk``, ``per_block`` chunks a block."""
    cuts = [start]
    first = phase + ((start - phase) // chunk + 1) * chunk
    cuts.extend(range(first, stop, chunk))
    cuts.append(stop)
    cuts = sorted(set(cuts))
    return [(cuts[i], cuts[min(i + per_block, len(cuts) - 1)]) for i in range(0, len(cuts) - 1, per_block)]


def _divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of ``n`` that is ``<= cap``."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _aligned_down(z: int, end: int, chunk: int, phase: int) -> int:
    """The largest chunk boundary ``<= z`` (``end`` counts as a boundary)."""
    if z >= end:
        return end
    k = (z - phase) // chunk
    return max(0, phase + k * chunk)


class SlidingWindowInference:
    """Predict volumes with a model, window by window.

    Args:
        model: ``(B, C_in, z, y, x)`` (or ``(B, C_in, y, x)`` with ``do_2d``) -> same layout with
            ``C`` channels and the output size; already on ``device``.
        settings: :class:`InferenceSettings`.
        activation: applied to each TTA variant's output before reduction (``OUTPUT_ACT``);
            ``None`` keeps raw outputs.
        device: where the model runs; default: the device of the model's first parameter.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        settings: InferenceSettings,
        activation: Activation | None = None,
        device: torch.device | str | None = None,
    ):
        self.model = model
        self.settings = settings
        self.activation = activation
        if device is None:
            params = getattr(model, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.tta = TestTimeAugmentation(settings.aug_num, settings.aug_mode, settings.do_2d)
        self.last_stats = RunStats()
        self.show_progress = True  # windows done / total per volume (see connectomics_data.progress)

    # ------------------------------------------------------------------ public
    def plan(self, volume, pad=None, unpad: bool | None = None) -> WindowPlan:
        s = self.settings
        return WindowPlan(
            volume.spatial_shape,
            s.input_size,
            s.stride,
            s.pad if pad is None else pad,
            s.unpad if unpad is None else unpad,
            path=getattr(volume, "path", "<memory>"),
        )

    def predict(
        self,
        volume,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        sink: Sink | None = None,
        work_dir: str | Path | None = None,
        pad=None,
        unpad: bool | None = None,
        scale_geometry: ScaleGeometry | None = None,
        progress_desc: str | None = None,
    ) -> np.ndarray | None:
        """Predict one volume.

        Args:
            volume: a ``Volume`` (z, y, x) or (c, z, y, x); read lazily.
            normalizer: raw crop -> float32 input (e.g. ``ImageNormalizer``); None: float cast.
            sink: where the ``(C, z, y, x)`` prediction goes; ``None`` returns it as an array.
            work_dir: directory for the temporary zarr accumulator (default: system temp).
            pad, unpad: override the settings (chunked inference passes the halo).
            scale_geometry: with ``output_scale``, where this region sits in the resampled
                whole (chunked inference); default: the region is the whole.
            progress_desc: label of the progress report (default: 'predict <file name>').

        Returns:
            The prediction ``(C, z, y, x)`` in ``output_dtype`` when ``sink`` is None, else None.
            z, y, x is the volume's shape when ``unpad``, else the padded shape; times
            ``output_scale`` (rounded up) when it is not 1.
        """
        own_sink = sink is None
        if own_sink:
            sink = ArraySink()
        plan = self.plan(volume, pad, unpad)
        stats = RunStats()
        t_start = time.perf_counter()
        try:
            with torch.inference_mode():
                self._run(volume, plan, normalizer, sink, work_dir, stats, scale_geometry, progress_desc)
            t_close = time.perf_counter()
            sink.close()
            stats.write += time.perf_counter() - t_close
        except BaseException:
            sink.abort()
            raise
        finally:
            stats.wall = time.perf_counter() - t_start
            self.last_stats = stats
        return sink.array if own_sink else None  # type: ignore[union-attr]

    # ------------------------------------------------------------------ internals
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        cuda = self.device.type == "cuda"
        x = batch.to(self.device, non_blocking=cuda)
        y = self.tta(self.model, x, self.activation)
        if self.settings.do_2d:
            y = y.unsqueeze(-3)  # (B, C, y, x) -> (B, C, 1, y, x)
        return y

    def _output_size(self, y: torch.Tensor) -> tuple[int, ...]:
        if y.ndim != 5:
            raise ValueError(
                f"the model returned shape {list(y.shape)}; expected (B, C, "
                f"{'y, x' if self.settings.do_2d else 'z, y, x'})"
            )
        got = tuple(int(n) for n in y.shape[2:])
        want = self.settings.output_size
        if want is not None and got != want:
            raise ConfigError(
                f"the model output {list(got)} differs from INFERENCE.OUTPUT_SIZE / "
                f"MODEL.OUTPUT_SIZE {list(want)}"
            )
        if any(o > i for o, i in zip(got, self.settings.input_size)):
            raise ValueError(f"model output {list(got)} is larger than its input {list(self.settings.input_size)}")
        flipped = {3 + d for d in self.tta.flipped_dims}  # -1 (x) -> 2, -2 (y) -> 1, -3 (z) -> 0
        for axis in sorted(flipped):
            if (self.settings.input_size[axis] - got[axis]) % 2:
                raise ConfigError(
                    f"test-time flips need an even input-output difference on flipped axes to "
                    f"keep the centred output aligned, got input {list(self.settings.input_size)} "
                    f"and output {list(got)}"
                )
        return got

    def _make_accumulator(self, shape, channels, sink: Sink, work_dir, stats: RunStats) -> Accumulator:
        if accumulator_bytes(shape, channels) <= self.settings.memory_budget_bytes:
            stats.accumulator = "memory"
            return MemoryAccumulator(shape, channels)
        stats.accumulator = "zarr"
        directory = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
        # Half the budget caches accumulator chunks; finalisation blocks take most of the rest.
        # Chunks: the sink's z (finalisation is z-aligned to it), y and x divisors <= 64 (small
        # chunks keep the cached band of window rows small; rows are stored in one call).
        chunks = (sink.chunks[0], *(_divisor_at_most(c, 64) for c in sink.chunks[1:]))
        cache = self.settings.memory_budget_bytes // 2
        return ZarrAccumulator(shape, channels, directory, chunks, cache_bytes=cache)

    def _run(self, volume, plan: WindowPlan, normalizer, sink: Sink, work_dir, stats: RunStats,
             scale_geometry: ScaleGeometry | None = None, progress_desc: str | None = None) -> None:
        s = self.settings
        resampler: StreamingResampler | None = None
        if scale_geometry is None and not is_identity(s.output_scale):
            scale_geometry = ScaleGeometry.whole(plan.region.shape, s.output_scale)
        region = plan.region
        region_shape = region.shape
        out_size = s.output_size
        indices = list(plan.windows(out_size))
        reader = WindowBatchReader(
            volume,
            indices,
            plan.input_box,
            s.batch_size,
            normalizer,
            s.pad_mode,
            squeeze_z=s.do_2d,
            pin_memory=self.device.type == "cuda" and torch.cuda.is_available(),
            prefetch=s.prefetch,
        )
        batches = iter(reader)
        name = Path(str(getattr(volume, "path", "") or "volume")).name
        bar = Progress(len(indices), progress_desc or f"predict {name}", "window", enabled=self.show_progress,
                       leave=False)
        acc: Accumulator | None = None
        weight_sum: WeightSum | None = None
        weights = weights_dev = None
        finalised_z = 0
        done = 0
        try:
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                t_got = time.perf_counter()
                stats.extra["read_wait"] = stats.extra.get("read_wait", 0.0) + t_got - t0
                y = self._forward(batch.data)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)  # attribute GPU time to the model
                t1 = time.perf_counter()
                if acc is None:
                    out_size = self._output_size(y)
                    weights = blending_weights(out_size, s.blending)
                    weights_dev = torch.from_numpy(weights).to(self.device)
                    weight_sum = WeightSum(region_shape, plan.output_starts(out_size), out_size, s.blending)
                    channels = int(y.shape[1])
                    out_shape = region_shape if scale_geometry is None else scale_geometry.out_box.shape
                    sink.open((channels, *out_shape), check_output_dtype(s.output_dtype))
                    acc = self._make_accumulator(region_shape, channels, sink, work_dir, stats)
                    if scale_geometry is not None:
                        resampler = StreamingResampler(scale_geometry, region_shape, sink, s.output_dtype,
                                                       self.settings.memory_budget_bytes // 8)
                elif tuple(y.shape[2:]) != out_size:
                    raise ValueError(f"model output size changed from {list(out_size)} to {list(y.shape[2:])}")
                if self.device.type == "cpu":
                    # numpy, not torch: torch's OpenMP pool stalls while the reader thread
                    # holds the other core (7x slower on 2 cores)
                    weighted = np.multiply(y.numpy(), weights)
                else:  # weight on the device, one device-to-host copy per batch
                    weighted = (y * weights_dev).cpu().numpy()
                boxes = [plan.output_box(i, out_size) for i in batch.indices]
                acc.add(boxes, weighted)
                t2 = time.perf_counter()
                stats.model += t1 - t_got
                stats.blend += t2 - t1
                done += len(batch.indices)
                stats.windows += len(batch.indices)
                bar.update(len(batch.indices))
                if done < len(indices):
                    next_z = plan.output_box(indices[done], out_size).start[0]
                else:
                    next_z = region_shape[0]
                if resampler is not None:
                    t3 = time.perf_counter()
                    resampler.advance(acc, weight_sum, min(max(next_z, 0), region_shape[0]))
                    stats.write += time.perf_counter() - t3
                else:
                    ready = _aligned_down(min(max(next_z, 0), region_shape[0]), region_shape[0], sink.chunks[0], sink.phase[0])
                    if ready > finalised_z:
                        self._finalise(acc, weight_sum, sink, finalised_z, ready, region_shape, stats)
                        finalised_z = ready
            if acc is None:
                raise ValueError(f"{plan.path}: no window reaches the output region")
            if resampler is not None:
                t3 = time.perf_counter()
                resampler.advance(acc, weight_sum, region_shape[0], final=True)
                stats.write += time.perf_counter() - t3
            elif finalised_z < region_shape[0]:
                self._finalise(acc, weight_sum, sink, finalised_z, region_shape[0], region_shape, stats)
        finally:
            bar.close()
            batches.close()  # stops and joins the reader thread, also after an error
            stats.read = reader.read_seconds
            if acc is not None:
                if isinstance(acc, ZarrAccumulator):
                    stats.extra.update(disk_loads=acc.loads, disk_stores=acc.stores)
                acc.close()
        window_voxels = int(np.prod(s.input_size))
        stats.voxels = stats.windows * window_voxels
        stats.output_voxels = int(np.prod(region_shape))

    def _finalise(self, acc: Accumulator, weight_sum: WeightSum, sink: Sink, z0: int, z1: int, shape, stats: RunStats) -> None:
        """Normalise, convert, write and release region z-slab ``[z0, z1)`` block by block."""
        t0 = time.perf_counter()
        chunks, phase = sink.chunks, sink.phase
        scale = output_scale(self.settings.output_dtype)
        # Block size: within an eighth of the budget (the block exists ~3 times: read, result,
        # converted), but at least one chunk.
        budget_voxels = max(1, self.settings.memory_budget_bytes // (8 * 4 * (acc.channels + 1) * 2))
        chunk_voxels = int(np.prod(chunks))
        n_chunks = max(1, budget_voxels // chunk_voxels)
        nx = -(-shape[2] // chunks[2]) + 1
        kx = min(nx, n_chunks)
        ky = max(1, n_chunks // kx)
        kz = max(1, n_chunks // (kx * ky))
        for za, zb in _axis_blocks(z0, z1, chunks[0], phase[0], kz):
            for ya, yb in _axis_blocks(0, shape[1], chunks[1], phase[1], ky):
                for xa, xb in _axis_blocks(0, shape[2], chunks[2], phase[2], kx):
                    box = Box((za, ya, xa), (zb, yb, xb))
                    pred = acc.read(box)
                    pred *= weight_sum.inverse(box, scale)  # 0 where no window reaches
                    sink.write(box, convert_scaled(pred, self.settings.output_dtype))
                    acc.release(box)
        stats.write += time.perf_counter() - t0


class SubregionInference(SlidingWindowInference):
    """The engine of ``base`` (same model, settings, activation, device) predicting one sub-box.

    ``box`` is in the region coordinates of ``base``'s plan of the volume; the result covers
    ``box`` only and is byte for byte that part of ``base``'s whole prediction (the plan is a
    :class:`~.plan.SubregionPlan`: same windows, same order, same batches). Relies on
    :meth:`SlidingWindowInference.predict` taking its geometry from :meth:`plan`.
    """

    def __init__(self, base: SlidingWindowInference, box: Box | None):
        super().__init__(base.model, base.settings, base.activation, base.device)
        self.box = box

    def plan(self, volume, pad=None, unpad: bool | None = None) -> WindowPlan:
        return SubregionPlan(super().plan(volume, pad, unpad), self.box, batch_size=self.settings.batch_size)


def predict_volumes_to_file(
    inference: SlidingWindowInference,
    volumes: Sequence,
    path: str | Path,
    fmt: str = "h5",
    normalizers: Sequence | None = None,
    overwrite: bool = False,
    names: Sequence[str] | None = None,
    compression: str | None = "gzip",
    chunks: Sequence[int] | None = None,
    progress_desc: str | None = None,
) -> Path:
    """Predict several volumes into one file: datasets ``vol0``, ``vol1``, ... (PyTC layout).

    The file appears atomically at ``path`` once every volume is done. Temporary zarr
    accumulators (outputs above the memory budget) live in the output directory. ``chunks``:
    spatial chunk shape of the datasets (default up to 8 x 256 x 256); finalisation blocks are
    whole chunks, so very large chunks raise the memory floor.
    """
    from .outputs import prediction_file

    names = list(names) if names is not None else [f"vol{i}" for i in range(len(volumes))]
    if len(names) != len(volumes):
        raise ValueError(f"{len(volumes)} volumes but {len(names)} dataset names")
    with prediction_file(path, fmt, overwrite, attrs=_run_attrs(inference.settings)) as out:
        for i, volume in enumerate(volumes):
            normalizer = normalizers[i] if normalizers is not None else None
            attrs = {"source": str(getattr(volume, "path", ""))}
            sink = out.sink(names[i], chunks=chunks, attrs=attrs, compression=compression,
                            voxel_size=output_voxel_size(getattr(volume, "voxel_size", None),
                                                         volume.spatial_shape,
                                                         inference.settings.output_scale))
            desc = progress_desc or f"predict {Path(str(getattr(volume, 'path', '') or 'volume')).name}"
            if len(volumes) > 1:
                desc = f"{desc} (volume {i + 1}/{len(volumes)})"
            inference.predict(volume, normalizer, sink=sink, work_dir=out.work_dir, progress_desc=desc)
    return Path(path)


def _run_attrs(s: InferenceSettings) -> dict:
    return {
        "input_size": list(s.input_size),
        "stride": list(s.stride),
        "pad": list(s.pad) if not isinstance(s.pad, int) else [s.pad] * 3,
        "unpad": bool(s.unpad),
        "blending": s.blending,
        "aug_num": int(s.aug_num or 0),
        "aug_mode": s.aug_mode,
        "output_dtype": s.output_dtype,
        **({} if is_identity(s.output_scale) else {"output_scale": list(s.output_scale)}),
    }
