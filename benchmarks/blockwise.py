"""Blockwise inference benchmark: voxels/s with 1 and 2 daisy workers against one process.

Measures, on the CPU of this machine (or ``--device cuda``), on the same input and model:

1. the single-process run (``predict_volumes_to_file`` into a zarr, ``--threads`` torch
   threads) and blockwise runs with 1 and 2 worker processes (``--threads`` per worker for 1,
   half each for 2): wall time, output voxels per second, CPU seconds of the process tree, and
   whether the output is byte-identical (it is, when the threads per process match);
2. the windows the blocks compute against the single run (a window whose output straddles
   blocks is computed by each, widened to the single run's batches): the recompute overhead of
   the chosen ``--block`` shape;
3. daisy's own cost per block: 2 workers that acquire and release blocks without work, the
   median milliseconds per block over ``--overhead-blocks`` blocks (the scheduler round trip),
   and the rest of that run's wall time (starting the server and the 2 worker processes).

Input: the real EM volume ``drosophila_vnc_sstem/test_image.h5`` (first ``--shape`` voxels)
when present, else a generated one. Model: a small 3D conv net (1 -> 8 -> 1 channels).

Usage: ``python benchmarks/blockwise.py [--shape 16 512 512] [--block 16 256 256] [--threads 2]``;
the last line printed is a JSON summary. Worker start-up (a Python process importing torch)
dominates small inputs: it is reported separately.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from connectomics_data.inference import (  # noqa: E402
    InferenceSettings,
    SlidingWindowInference,
    predict_volumes_to_file,
)
from connectomics_data.inference.blockwise import (  # noqa: E402
    block_boxes,
    predict_blockwise,
    windows_per_block,
)
from connectomics_data.io import open_volume  # noqa: E402
from connectomics_data.normalize import ImageNormalizer  # noqa: E402

DATA = Path("/work/shared/data/drosophila_vnc_sstem/test_image.h5")


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(8, 1, 3, padding=1)).eval()


def engine_factory(device, settings: InferenceSettings) -> SlidingWindowInference:
    return SlidingWindowInference(small_net().to(device), settings, activation=torch.sigmoid, device=device)


def normalizer(volume):
    return ImageNormalizer()


def _input(root: Path, shape) -> Path:
    import zarr

    if DATA.exists():
        import h5py

        with h5py.File(DATA, "r") as f:
            name = next(iter(f))
            data = f[name][tuple(slice(0, n) for n in shape)]
    else:
        rng = np.random.default_rng(0)
        data = rng.integers(0, 256, shape, dtype=np.uint8)
    path = root / "input.zarr"
    zarr.create_array(str(path), shape=data.shape, chunks=(8, 128, 128), dtype=data.dtype)[:] = data
    return path


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _overhead_worker(log: str, *, context=None) -> None:
    import daisy

    client = daisy.Client(context)
    times = []
    t0 = time.perf_counter()
    while True:
        with client.acquire_block() as block:
            if block is None:
                break
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    Path(log).write_text(json.dumps(times))


def scheduler_overhead(root: Path, blocks: int, workers: int) -> dict:
    """daisy alone: workers acquiring and releasing ``blocks`` blocks without work."""
    import daisy
    from funlib.geometry import Roi

    side = int(np.ceil(blocks ** 0.5))
    t0 = time.perf_counter()
    task = daisy.Task("overhead", Roi((0, 0), (side, side)), Roi((0, 0), (1, 1)), Roi((0, 0), (1, 1)),
                      process_function=functools.partial(_overhead_worker, str(root / "overhead.json")),
                      read_write_conflict=False, max_workers=workers, tracking_path=False)
    daisy.logging.set_log_basedir(str(root / "daisy_logs"))
    daisy.Server().run_blockwise(task, progress=False, summary=False, host="127.0.0.1")
    wall = time.perf_counter() - t0
    times = json.loads((root / "overhead.json").read_text())
    return {"blocks": side * side, "workers": workers, "wall_s": round(wall, 3),
            "startup_s": round(wall - sum(times), 3),
            "per_block_ms": round(1000 * float(np.median(times[1:])), 3) if len(times) > 1 else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[16, 512, 512])
    p.add_argument("--block", type=int, nargs=3, default=[16, 256, 256])
    p.add_argument("--chunks", type=int, nargs=3, default=[8, 64, 64], help="output chunks")
    p.add_argument("--window", type=int, nargs=3, default=[8, 128, 128])
    p.add_argument("--stride", type=int, nargs=3, default=[4, 96, 96])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overhead-blocks", type=int, default=400)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="blockwise_bench_"))
    try:
        path = _input(root, args.shape)
        volume = open_volume(path)
        settings = InferenceSettings(tuple(args.window), tuple(args.stride), pad=(2, 16, 16), batch_size=4,
                                     output_dtype="uint8")
        chunks = tuple(args.chunks)
        voxels = int(np.prod(volume.spatial_shape))
        runs = {}
        torch.set_num_threads(args.threads)
        engine = engine_factory(torch.device(args.device), settings)
        c0, t0 = _cpu(), time.perf_counter()
        predict_volumes_to_file(engine, [volume], root / "single.zarr", "zarr", [normalizer(volume)], chunks=chunks)
        wall = time.perf_counter() - t0
        runs["single"] = {"wall_s": round(wall, 3), "voxels_per_s": round(voxels / wall), "cpu_s": round(_cpu() - c0, 2),
                          "windows": engine.last_stats.windows}
        reference = _tree(root / "single.zarr")
        factory = functools.partial(engine_factory, settings=settings)
        for workers in (1, 2):
            out = root / f"bw{workers}.zarr"
            threads = max(1, args.threads // workers)
            c0, t0 = _cpu(), time.perf_counter()
            result = predict_blockwise(factory, settings, [volume], out, channels=1, normalizer_fn=normalizer,
                                       workers=workers, block_shape=args.block, chunks=chunks, threads=threads,
                                       device=args.device, progress=False, host="127.0.0.1")
            wall = time.perf_counter() - t0
            runs[f"blockwise_{workers}"] = {
                "wall_s": round(wall, 3), "voxels_per_s": round(voxels / wall), "cpu_s": round(_cpu() - c0, 2),
                "blocks": result.blocks, "threads_per_worker": threads,
                "identical_to_single": _tree(out) == reference if threads == args.threads else None}
        plan = engine.plan(volume)
        recompute = {}
        for scale in (1, 2):
            block = [b * scale if a else b for a, b in zip((0, 1, 1), args.block)]
            boxes = block_boxes(plan.region_shape, block)
            per_block = windows_per_block(plan, boxes, settings.output_size, settings.batch_size)
            recompute["x".join(map(str, block))] = round(sum(per_block) / runs["single"]["windows"], 3)
        overhead = scheduler_overhead(root, args.overhead_blocks, 2)
        load = os.getloadavg()[0]
        print(json.dumps({"input": str(DATA) if DATA.exists() else "generated", "shape": list(volume.spatial_shape),
                          "block": list(args.block), "window": list(args.window), "stride": list(args.stride),
                          "threads": args.threads, "runs": runs, "windows_recomputed_factor": recompute,
                          "scheduler": overhead, "load_avg_1min": round(load, 2)}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
