"""Per-sample cost of the default training augmentor against the floor of one warp.

Data: ``sample_size`` crops of the real ssTEM stack (/work/shared/data/drosophila_vnc_sstem,
uint8 image; the mitochondria mask split into connected components as a uint16 instance label)
when present, else synthetic EM-like crops. Single thread (BLAS / OpenMP / torch threads = 1).

For input sizes [17, 225, 225] (MitoEM) and [17, 257, 257] (SNEMI) it measures:

* chain: ``compose(sample, rng)`` with PyTC v1's default AUGMENTOR config (every random
  branch as drawn: rotation by quarter turns, rescale, flips, elastic, misalignment, missing
  sections, cut-noise, cut-blur, motion blur, missing parts, grayscale);
* floor: one linear warp of the uint8 image plus one nearest warp of the uint16 label from the
  sample-size crop to the output (index and weight tables included), through a precomputed map
  of the chain's own kind (quarter turn, flips, rescale, elastic field): the work no augmentor
  of this kind can skip.

Chain and floor calls are interleaved, so both see the same machine load; times are medians
(and means) over ``--iters`` calls. PyTC v1's default augmentor costs about 0.17 s per
17x257x257 sample on one core (the goal is at most 34 ms, i.e. 5x faster, and at most 2x the
floor). Usage: ``python benchmarks/augment.py [--iters 300]``; the last line is JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from connectomics_data.augment import MapBuilder, build_train_augmentor, warp_linear, warp_nearest  # noqa: E402
from connectomics_data.config import get_cfg_defaults  # noqa: E402

DATA = Path("/work/shared/data/drosophila_vnc_sstem")
SIZES = ([17, 225, 225], [17, 257, 257])
PYTC_S = 0.17  # PyTC v1 default augmentor, 17x257x257, one core


def set_torch_threads() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def load_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(image uint8, label uint16) z-y-x volumes and their origin."""
    if (DATA / "image.h5").exists() and (DATA / "label.h5").exists():
        import h5py
        from scipy import ndimage

        with h5py.File(DATA / "image.h5", "r") as f:
            image = f["main"][:]
        with h5py.File(DATA / "label.h5", "r") as f:
            mito = f["main"][:]
        label, n = ndimage.label(mito > 0)
        return image, label.astype(np.uint16), f"{DATA} ({n} mitochondria)"
    from scipy import ndimage

    shape = (20, 1024, 1024)
    image = ndimage.gaussian_filter(rng.normal(128, 40, shape), (0, 2, 2))
    image = np.clip(image + rng.normal(0, 8, shape), 0, 255).astype(np.uint8)
    label, _ = ndimage.label(ndimage.gaussian_filter(rng.random(shape), (0, 8, 8)) > 0.52)
    return image, label.astype(np.uint16), "synthetic"


def crops(image, label, size, n, rng):
    out = []
    for _ in range(n):
        start = [int(rng.integers(0, s - c + 1)) for s, c in zip(image.shape, size)]
        sl = tuple(slice(a, a + c) for a, c in zip(start, size))
        out.append(
            {"image": np.ascontiguousarray(image[sl]), "label": np.ascontiguousarray(label[sl])}
        )
    return out


def floor_plans(comp, n, rng):
    """Maps of the default chain's own warp when it resamples: a quarter turn and flips, a
    rescale and an elastic field (drawn by the chain's transforms, with probability 1)."""
    geometric = {type(t).__name__: t for t in comp.geometric}
    ctx = comp.context()
    plans = []
    for _ in range(n):
        b = MapBuilder(comp.input_size, comp.sample_size[0])
        for name in ("Rotate", "Flip", "Rescale", "Elastic"):
            t = geometric[name]
            t.contribute(t.randomize(rng, ctx), b)
        plans.append(b.build(comp.sample_size))
    return plans


def bench_size(size, image, label, iters, rng):
    cfg = get_cfg_defaults()
    cfg.defrost()
    cfg.MODEL.INPUT_SIZE = list(size)
    comp = build_train_augmentor(cfg)
    samples = crops(image, label, comp.sample_size, 16, rng)
    plans = floor_plans(comp, 16, rng)
    for i in range(10):  # warm up
        comp(samples[i % 16], np.random.default_rng(i))
    chain, floor, chain_cpu, floor_cpu = [], [], [], []
    for i in range(iters):
        s = samples[i % 16]
        t0, c0 = time.perf_counter(), time.thread_time()
        comp(s, np.random.default_rng(10_000 + i))
        t1, c1 = time.perf_counter(), time.thread_time()
        p = plans[i % 16]
        p._cache.clear()  # the per-map index/weight tables are part of the floor's work
        warp_linear(s["image"], p, 1 / 255)
        warp_nearest(s["label"], p)
        t2, c2 = time.perf_counter(), time.thread_time()
        chain.append(t1 - t0)
        floor.append(t2 - t1)
        chain_cpu.append(c1 - c0)
        floor_cpu.append(c2 - c1)
    chain_ms, floor_ms = np.array(chain) * 1e3, np.array(floor) * 1e3
    cpu_chain, cpu_floor = np.array(chain_cpu) * 1e3, np.array(floor_cpu) * 1e3
    return {
        "input_size": list(size),
        "sample_size": list(comp.sample_size),
        "chain_ms_median": float(np.median(chain_ms)),
        "chain_ms_mean": float(chain_ms.mean()),
        "floor_ms_median": float(np.median(floor_ms)),
        "floor_ms_mean": float(floor_ms.mean()),
        "ratio_median": float(np.median(chain_ms) / np.median(floor_ms)),
        "ratio_mean": float(chain_ms.mean() / floor_ms.mean()),
        "chain_cpu_ms_mean": float(cpu_chain.mean()),
        "floor_cpu_ms_mean": float(cpu_floor.mean()),
        "ratio_cpu_mean": float(cpu_chain.mean() / cpu_floor.mean()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="augmentor cost vs the one-warp floor")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    set_torch_threads()
    rng = np.random.default_rng(args.seed)
    image, label, origin = load_volume(rng)
    print(
        f"data: {origin}; image {image.shape} {image.dtype}, label {label.dtype}; 1 thread; {args.iters} calls each"
    )
    print(
        f"{'input':>14} {'sample':>14} {'chain ms':>17} {'floor ms':>17} {'chain/floor':>12} {'vs PyTC 0.17 s':>15}"
    )
    print(
        f"{'':>14} {'':>14} {'median / mean':>17} {'median / mean':>17} {'med / mean':>12} {'(median)':>15}"
    )
    results = []
    for size in SIZES:
        r = bench_size(size, image, label, args.iters, rng)
        r["speedup_vs_pytc_median"] = PYTC_S * 1e3 / r["chain_ms_median"]
        results.append(r)
        print(
            f"{str(r['input_size']):>14} {str(r['sample_size']):>14} "
            f"{r['chain_ms_median']:8.2f} / {r['chain_ms_mean']:6.2f} "
            f"{r['floor_ms_median']:8.2f} / {r['floor_ms_mean']:6.2f} "
            f"{r['ratio_median']:5.2f} / {r['ratio_mean']:4.2f} "
            f"{r['speedup_vs_pytc_median']:14.1f}x"
        )
    print("thread CPU time (less sensitive to other processes on the machine), mean ms:")
    for r in results:
        print(
            f"{str(r['input_size']):>14} chain {r['chain_cpu_ms_mean']:6.2f}  floor "
            f"{r['floor_cpu_ms_mean']:6.2f}  chain/floor {r['ratio_cpu_mean']:4.2f}"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-minute load average {load:.2f} on {os.cpu_count()} CPUs (wall times grow with it)")
    print(
        json.dumps(
            {
                "benchmark": "augment",
                "data": origin,
                "threads": 1,
                "iters": args.iters,
                "load_1min": load,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
