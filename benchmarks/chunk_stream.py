"""Chunk streaming of TileDataset: how long the training loop waits for data at chunk switches.

Data: a 64 x 2048 x 2048 uint8 EM-like volume written as one PNG per slice (a 2 x 2 mosaic of
flipped copies of the ssTEM stacks in /work/shared/data/drosophila_vnc_sstem when present, else
smoothed noise), plus (``--label``, default on) a uint32 label volume as one TIFF per slice,
each described by a PyTC tile JSON.

Training: ``DATA_CHUNK_NUM [2, 2, 2]`` (50 % overlap: 8 chunks of about 43 x 1365 x 1365, grown
by the halo ``PAD_SIZE [2, 64, 64]``), ``DATA_CHUNK_ITER`` iterations per chunk, a DataLoader
with persistent workers, and a fake training step (``sleep(step_ms)`` per batch). The decoded
tile cache is off (``--cache-mb 0``) so every chunk is really decoded, as on a volume far larger
than RAM.

The fake training step is CPU work (``--step cpu``, default: torch matrix products on all
torch threads, calibrated to ``--step-ms`` on an idle machine) or ``sleep`` (a GPU-bound loop
that leaves the CPU free). With CPU work the background read competes with training for cores,
which is its real cost on a CPU-bound run.

Reports, with and without background prefetch of the next chunk (``prefetch_next``):
  * ``switch_wait_s``: time the loop waited for the first batch of each chunk after the first;
  * ``read_s``: how long each chunk took to read into shared memory (decode + halo + write);
  * ``first_wait_s`` (the unavoidable first load), ``steady_wait_ms_median`` (other batches),
    ``total_wait_s`` and ``wall_s``;
  * the background read's cost: ``read_cpu_s`` per chunk (CPU seconds of the loader thread and
    its decode threads), ``iter_ms_while_reading`` / ``iter_ms_otherwise`` (median iteration
    time, data wait + step, while a read ran or not; first iterations of a chunk excluded) and
    ``slowdown_while_reading`` (their ratio - 1).

Defaults: 50 iterations of 150 ms per chunk (7.5 s of training per chunk, longer than a chunk
read on 2 cores, so prefetching should hide every switch); ``--chunk-iter 20 --step-ms 60``
shows the regime where reading is slower than training (the wait shrinks by the training time).

Usage: ``python benchmarks/chunk_stream.py [--out-dir DIR] [--chunk-iter 50] [--step-ms 150]
[--step cpu|sleep] [--read-threads 2] [--read-nice 10] [--slots 6] [--workers 2] [--no-label]
[--only-prefetch] [--mode thread|process]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch.utils.data

from connectomics_data.datasets import TileDataset
from connectomics_data.io import open_tiled_volume
from connectomics_data.loader import collate_samples
from connectomics_data.loader.finish import finish_batch
from connectomics_data.loader.threads import ThreadLoader

DEPTH, SIZE = 64, 2048
EM_DIR = Path("/work/shared/data/drosophila_vnc_sstem")


def em_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(64, 2048, 2048) uint8 image, uint32 label, and where they came from."""
    if (EM_DIR / "image.h5").exists():
        import h5py

        with h5py.File(EM_DIR / "image.h5", "r") as f:
            a = f["main"][:]
        with h5py.File(EM_DIR / "test_image.h5", "r") as f:
            b = f["main"][:]
        with h5py.File(EM_DIR / "label.h5", "r") as f:
            lab = f["main"][:].astype(np.uint32)
        half = SIZE // 2
        em = np.concatenate([a, b, a[::-1], b[::-1]])[:DEPTH, :half, :half]  # (64, 1024, 1024)
        lab = np.concatenate([lab, lab[::-1]] * 2)[:DEPTH, :half, :half]
        source = str(EM_DIR)
    else:
        from scipy.ndimage import gaussian_filter

        em = gaussian_filter(rng.normal(128, 40, (DEPTH, SIZE // 2, SIZE // 2)), (0, 2, 2))
        em = np.clip(em, 0, 255).astype(np.uint8)
        lab = (em > 128).astype(np.uint32)
        source = "synthetic"

    def mosaic(v: np.ndarray, ids: bool) -> np.ndarray:
        parts = [v, v[:, :, ::-1], v[:, ::-1], v[:, ::-1, ::-1]]
        if ids:  # different ids per quadrant, above 2**16
            parts = [p + np.uint32(k << 17) * (p > 0) for k, p in enumerate(parts)]
        top = np.concatenate(parts[:2], axis=2)
        return np.ascontiguousarray(np.concatenate([top, np.concatenate(parts[2:], axis=2)], axis=1))

    return mosaic(em, False), mosaic(lab, True), source


def write_json(root: Path, name: str, files: list[str], dtype: str) -> Path:
    spec = {"image": files, "height": SIZE, "width": SIZE, "depth": DEPTH, "tile_size": SIZE,
            "tile_st": [0, 0], "tile_ratio": 1, "dtype": dtype, "ndim": 1}
    path = root / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def write_dataset(root: Path, with_label: bool) -> tuple[Path, Path | None, str]:
    from PIL import Image

    image_json = root / "image.json"
    label_json = root / "label.json"
    if image_json.exists() and (label_json.exists() or not with_label):
        return image_json, label_json if with_label else None, "cached in " + str(root)
    import tifffile

    img, lab, source = em_like(np.random.default_rng(0))
    names = []
    for z in range(DEPTH):
        Image.fromarray(img[z]).save(root / f"im{z:04d}.png")
        names.append(f"im{z:04d}.png")
    write_json(root, "image", names, "uint8")
    if not with_label:
        return image_json, None, source
    names = []
    for z in range(DEPTH):
        tifffile.imwrite(root / f"seg{z:04d}.tif", lab[z])
        names.append(f"seg{z:04d}.tif")
    write_json(root, "label", names, "uint32")
    return image_json, label_json, source


def cpu_step(reps: int) -> None:
    """CPU-bound fake training step: ``reps`` products of 384 x 384 float32 matrices (torch
    threads)."""
    a = torch.ones(384, 384)
    for _ in range(reps):
        a = torch.mm(a, a).clamp_(0, 1)


def calibrate(step_ms: float) -> int:
    """Repetitions of :func:`cpu_step` that take about ``step_ms`` now."""
    cpu_step(2)
    t0 = time.perf_counter()
    cpu_step(20)
    per = (time.perf_counter() - t0) / 20
    return max(1, round(step_ms / 1000 / per))


def run(image_json: Path, label_json: Path | None, prefetch: bool, args: argparse.Namespace) -> dict:
    cache = args.cache_mb << 20
    image = open_tiled_volume(image_json, cache_bytes=cache, threads=args.tile_threads)
    label = open_tiled_volume(label_json, cache_bytes=cache, threads=args.tile_threads) if label_json else None
    slots = args.slots
    ds = TileDataset(
        [image], [label], sample_size=tuple(args.sample), chunk_num=(2, 2, 2), chunk_iter=args.chunk_iter,
        batch_size=args.batch, length=args.chunk_iter * args.batch * slots, halo=(2, 64, 64), seed=0,
        prefetch_next=prefetch, read_threads=args.read_threads or args.tile_threads, read_nice=args.read_nice,
        stop_index=args.chunk_iter * args.batch * slots,
    )
    if args.mode == "thread":  # SYSTEM.LOADER_MODE 'thread': what build_dataloader makes
        loader = ThreadLoader(ds, args.batch, ds.sampler(0, args.workers, 2), num_threads=args.workers,
                              in_flight=args.workers + 1, finish=finish_batch)
    else:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=args.batch, sampler=ds.sampler(0, args.workers, 2), num_workers=args.workers,
            collate_fn=collate_samples, persistent_workers=args.workers > 0,
            prefetch_factor=2 if args.workers > 0 else None,
        )
    waits: list[float] = []
    iters: list[tuple[float, bool]] = []
    shm_peak = 0
    t_start = time.perf_counter()
    it = iter(loader)
    for _ in range(args.chunk_iter * slots):
        t0 = time.perf_counter()
        reading = ds.reading()
        next(it).to("cpu")
        waits.append(time.perf_counter() - t0)
        if args.step == "cpu":  # the fake training step
            cpu_step(args.reps)
        else:
            time.sleep(args.step_ms / 1000)
        iters.append((time.perf_counter() - t0, reading or ds.reading()))
        shm_peak = max(shm_peak, ds.shm_bytes())
    wall = time.perf_counter() - t_start
    history = {h.slot: h for h in ds.load_history}
    firsts = [waits[s * args.chunk_iter] for s in range(slots)]
    others = [w for k, w in enumerate(waits) if k % args.chunk_iter]
    busy = [t for k, (t, r) in enumerate(iters) if k % args.chunk_iter and r]
    idle = [t for k, (t, r) in enumerate(iters) if k % args.chunk_iter and not r]
    med_busy = statistics.median(busy) if busy else float("nan")
    med_idle = statistics.median(idle) if idle else float("nan")
    chunk_mb = ds._store.chunk_bytes(history[0].chunk) / 2**20 if ds._store else 0.0
    if hasattr(loader, "close"):
        loader.close()
    ds.close()
    del it, loader
    return {
        "prefetch_next": prefetch,
        "chunk_mb_with_halo": round(chunk_mb, 1),
        "chunks": [history[s].chunk for s in range(slots)],
        "read_s": [round(history[s].read_s, 3) for s in range(slots)],
        "first_wait_s": round(firsts[0], 3),
        "switch_wait_s": [round(w, 3) for w in firsts[1:]],
        "mean_switch_wait_s": round(statistics.mean(firsts[1:]), 3),
        "max_switch_wait_s": round(max(firsts[1:]), 3),
        "mean_read_s": round(statistics.mean(history[s].read_s for s in range(1, slots)), 3),
        "steady_wait_ms_median": round(1000 * statistics.median(others), 2),
        "total_wait_s": round(sum(waits), 3),
        "wall_s": round(wall, 2),
        "train_time_per_chunk_s": round(args.chunk_iter * args.step_ms / 1000, 2),
        "read_cpu_s": [round(history[s].cpu_s, 3) for s in range(slots)],
        "shm_mb_peak": round(shm_peak / 2**20, 1),
        "max_rss_mb_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "iterations_while_reading": len(busy),
        "iter_ms_while_reading": round(1000 * med_busy, 1),
        "iter_ms_otherwise": round(1000 * med_idle, 1),
        "slowdown_while_reading": round(med_busy / med_idle - 1, 3) if busy and idle else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", help="where to write (and reuse) the tiles (default: a temp dir)")
    ap.add_argument("--chunk-iter", type=int, default=50, help="DATA_CHUNK_ITER")
    ap.add_argument("--step-ms", type=float, default=150.0, help="fake training step per batch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--slots", type=int, default=6, help="chunks to train on (8 = one cycle)")
    ap.add_argument("--sample", type=int, nargs=3, default=[17, 257, 257])
    ap.add_argument("--tile-threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--cache-mb", type=int, default=0)
    ap.add_argument("--no-label", action="store_true")
    ap.add_argument("--step", choices=("cpu", "sleep"), default="cpu", help="fake training step")
    ap.add_argument("--read-threads", type=int, default=2, help="DATASET.CHUNK_READ_THREADS (0: --tile-threads)")
    ap.add_argument("--read-nice", type=int, default=10, help="DATASET.CHUNK_READ_NICE")
    ap.add_argument("--only-prefetch", action="store_true", help="skip the run without prefetch")
    ap.add_argument("--depth", type=int, default=DEPTH, help="slices (a quick run: 32)")
    ap.add_argument("--size", type=int, default=SIZE, help="slice height = width, even (a quick run: 1024)")
    ap.add_argument("--mode", choices=["thread", "process"], default="thread",
                    help="SYSTEM.LOADER_MODE: loader threads (batches finished there) or worker processes")
    args = ap.parse_args(argv)
    globals().update(DEPTH=args.depth, SIZE=args.size)
    args.reps = calibrate(args.step_ms) if args.step == "cpu" else 0

    tmp = tempfile.TemporaryDirectory() if args.out_dir is None else None
    root = Path(args.out_dir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    image_json, label_json, source = write_dataset(root, not args.no_label)
    print(f"data ready in {time.perf_counter() - t0:.1f} s ({source})", file=sys.stderr)
    res: dict = {"source": source, "shape": [DEPTH, SIZE, SIZE], "chunk_num": [2, 2, 2], "halo": [2, 64, 64],
                 "label": label_json is not None, "chunk_iter": args.chunk_iter, "step_ms": args.step_ms,
                 "workers": args.workers, "mode": args.mode, "batch": args.batch, "sample": args.sample,
                 "tile_threads": args.tile_threads, "cache_mb": args.cache_mb, "cpus": os.cpu_count(),
                 "step": args.step, "read_threads": args.read_threads, "read_nice": args.read_nice,
                 "load_average_1min": round(os.getloadavg()[0], 2)}
    for prefetch in (True,) if args.only_prefetch else (True, False):
        key = "prefetch" if prefetch else "no_prefetch"
        res[key] = run(image_json, label_json, prefetch, args)
        print(key, res[key], file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
