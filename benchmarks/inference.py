"""Inference benchmark: throughput, where the time goes, and peak RSS against volume size.

Measures, on the CPU of this machine (or ``--device cuda``):

1. windows/s and voxels/s of :class:`SlidingWindowInference` writing an HDF5 prediction, with
   the identity model (pure pipeline cost) and with a small 3D conv net, on the real EM volume
   ``drosophila_vnc_sstem/test_image.h5`` (read lazily from HDF5), and the share of wall time
   spent outside the model: reading (background thread, overlapped), blending (weights,
   device-to-host copy, accumulation) and writing (normalise, convert, compress, write);
2. peak RSS (``VmHWM``, i.e. ``ru_maxrss`` of the process itself) of child processes predicting generated volumes of growing size
   through the on-disk (zarr) accumulator with a fixed memory budget, next to the in-memory
   accumulator for comparison: the former stays flat, the latter grows with the volume.

Goal checked: with the identity model, blending + writing cost at most as much as reading.

Usage: ``python benchmarks/inference.py [--quick] [--device cpu|cuda]``; the last line printed
is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectomics_data.geometry import Box  # noqa: E402
from connectomics_data.inference import (  # noqa: E402
    InferenceSettings,
    SlidingWindowInference,
    VolumeView,
    predict_volumes_to_file,
)
from connectomics_data.io.base import Volume  # noqa: E402
from connectomics_data.normalize import ImageNormalizer  # noqa: E402

DATA = Path("/work/shared/data/drosophila_vnc_sstem/test_image.h5")
NORM = ImageNormalizer(mean=0.5, std=0.5)


class GeneratedVolume(Volume):
    """uint8 values computed from coordinates on read: nothing of the volume is held in memory."""

    def __init__(self, shape):
        self._shape = tuple(int(n) for n in shape)
        self.path = f"<generated {list(self._shape)}>"

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return np.dtype(np.uint8)

    def _read_inside(self, box: Box) -> np.ndarray:
        z, y, x = np.ogrid[tuple(slice(a, b) for a, b in zip(box.start, box.stop))]
        return ((z * 7 + y * 3 + x * 5) % 256).astype(np.uint8)


def small_convnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(8, 2, 3, padding=1),
    ).eval()


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def open_input(quick: bool) -> Volume:
    if DATA.exists():
        from connectomics_data.io import open_volume

        vol = open_volume(str(DATA))
    else:  # no shared data: a generated stand-in of the same size
        vol = GeneratedVolume((20, 1024, 1024))
    if quick:
        vol = VolumeView(vol, Box((0, 0, 0), (20, 512, 512)))
    return vol


def run_throughput(name, model, volume, settings, device, out_dir: Path, compression="gzip") -> dict:
    engine = SlidingWindowInference(model, settings, device=device)
    t0 = time.perf_counter()
    predict_volumes_to_file(engine, [volume], out_dir / f"{name}.h5", normalizers=[NORM], compression=compression)
    wall = time.perf_counter() - t0
    s = engine.last_stats
    outside = s.wall - s.model
    return {
        "model": name,
        "volume": list(volume.spatial_shape),
        "windows": s.windows,
        "wall_s": round(wall, 3),
        "windows_per_s": round(s.windows / wall, 2),
        "input_voxels_per_s": round(s.voxels / wall),
        "output_voxels_per_s": round(s.output_voxels / wall),
        "model_s": round(s.model, 3),
        "read_s_in_thread": round(s.read, 3),
        "read_wait_s": round(s.extra.get("read_wait", 0.0), 3),
        "blend_s": round(s.blend, 3),
        "write_s": round(s.write, 3),
        "share_outside_model": round(outside / s.wall, 3),
        "accumulator": s.accumulator,
        "compression": compression,
    }


# ---------------------------------------------------------------------------------- RSS
def peak_rss_mb() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` on Linux (``ru_maxrss`` is inherited across
    fork + exec, so a child would report its parent's peak), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(shape, budget_mb: float, out_dir: str) -> None:
    """Run in a subprocess: predict a generated volume, print baseline and peak RSS (MiB)."""
    vol = GeneratedVolume(shape)
    settings = InferenceSettings(
        (8, 128, 128), (4, 96, 96), pad=(2, 16, 16), batch_size=4, memory_budget_mb=budget_mb
    )
    engine = SlidingWindowInference(lambda x: torch.cat([x, -x], 1), settings)
    # Warm up torch/h5py/zarr so the baseline includes the libraries, not the run.
    warm = SlidingWindowInference(identity, InferenceSettings((8, 32, 32), (8, 32, 32), memory_budget_mb=0.01))
    predict_volumes_to_file(warm, [GeneratedVolume((8, 64, 64))], Path(out_dir) / "warm.h5", normalizers=[NORM])
    base = peak_rss_mb()
    t0 = time.perf_counter()
    predict_volumes_to_file(engine, [vol], Path(out_dir) / "rss.h5", normalizers=[NORM])
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()
    s = engine.last_stats
    print(json.dumps({
        "shape": list(shape), "voxels": int(np.prod(shape)), "budget_mb": budget_mb,
        "accumulator": s.accumulator, "accumulator_mb": round(2 * 4 * int(np.prod(shape)) / 2**20, 1),
        "baseline_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
        "run_rss_mb": round(peak - base, 1), "wall_s": round(wall, 2),
        "disk_loads": s.extra.get("disk_loads", 0), "disk_stores": s.extra.get("disk_stores", 0),
    }))  # fmt: skip


def run_rss_series(sizes, budget_mb: float) -> list[dict]:
    rows = []
    for shape in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--rss-child", ",".join(map(str, shape)), str(budget_mb), tmp]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


# ---------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rss-child", nargs=3, metavar=("SHAPE", "BUDGET_MB", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        shape = tuple(int(v) for v in args.rss_child[0].split(","))
        rss_child(shape, float(args.rss_child[1]), args.rss_child[2])
        return

    device = torch.device(args.device)
    volume = open_input(args.quick)
    settings = InferenceSettings((8, 128, 128), (4, 64, 64), pad=(2, 16, 16), batch_size=4)
    results = {"device": str(device), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        ident = run_throughput("identity", identity, volume, settings, device, Path(tmp))
        print(f"identity: {ident}")
        conv_vol = VolumeView(volume, Box((0, 0, 0), (20, 256, 256)))
        net = small_convnet().to(device)
        conv = run_throughput("small_conv", net, conv_vol, settings, device, Path(tmp))
        print(f"small conv: {conv}")
    results["identity"] = ident
    results["small_conv"] = conv
    with tempfile.TemporaryDirectory() as tmp:  # the same without output compression
        raw = run_throughput("identity_uncompressed", identity, volume, settings, device, Path(tmp), None)
        print(f"identity, uncompressed output: {raw}")
    results["identity_uncompressed"] = raw
    for key, row in (("gzip", ident), ("uncompressed", raw)):
        results[f"goal_blend_plus_write_le_read_{key}"] = bool(row["blend_s"] + row["write_s"] <= row["read_s_in_thread"])

    budget = 32.0
    sizes = [(32, 512, 512), (64, 512, 512)] if args.quick else [(32, 512, 512), (64, 512, 512), (128, 512, 512)]
    streamed = run_rss_series(sizes, budget)
    in_memory = run_rss_series(sizes[:2], 1e6)
    for row in streamed + in_memory:
        print(f"rss: {row}")
    results["rss_streamed"] = streamed
    results["rss_in_memory"] = in_memory
    runs = [r["run_rss_mb"] for r in streamed]
    results["rss_streamed_growth_mb"] = round(max(runs) - min(runs), 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
