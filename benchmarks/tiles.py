"""Tile decode throughput and cache benefit of TiledVolume on EM-like PNG tiles.

Data: 20 slices of 2048 x 2048 uint8, written (a) as one PNG per slice and (b) as 4 tiles of
1024 x 1024 per slice. The slices are a 2 x 2 mosaic of flipped copies of the real ssTEM stack
in /work/shared/data/drosophila_vnc_sstem/image.h5 when present (PNG compresses real EM very
differently from noise), else smoothed noise with membrane-like lines.

Measures (MB/s of decoded voxels, best of ``--repeats``):
  * decoders alone on the same files: PIL (``np.asarray(Image.open)``), imageio.v3.imread;
  * TiledVolume full-volume reads without cache, with 1, 2 (and cpu_count, at most 8) threads;
  * a PyTC-style pass (imageio, sequential, every chunk re-decodes its tiles) vs TiledVolume
    with a cold and a warm cache over overlapping neighbouring boxes (50% overlap).

Usage: ``python benchmarks/tiles.py [--out-dir DIR] [--repeats 3]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from connectomics_data.geometry import Box
from connectomics_data.io.tiles.volume import open_tiled_volume

DEPTH, SIZE, TILE = 20, 2048, 1024
THREADS = sorted({1, 2, min(8, os.cpu_count() or 1)})
EM_H5 = Path("/work/shared/data/drosophila_vnc_sstem/image.h5")


def em_like_stack(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(20, 2048, 2048) uint8 EM-like volume and where it came from."""
    if EM_H5.exists():
        import h5py

        with h5py.File(EM_H5, "r") as f:
            em = f["main"][:DEPTH]  # (20, 1024, 1024)
        top = np.concatenate([em, em[:, :, ::-1]], axis=2)
        return np.ascontiguousarray(np.concatenate([top, top[:, ::-1]], axis=1)), str(EM_H5)
    from scipy.ndimage import gaussian_filter

    vol = gaussian_filter(rng.normal(128, 40, (DEPTH, SIZE, SIZE)), (0, 2, 2))
    vol[:, ::97] -= 60
    vol[:, :, ::131] -= 60
    return np.clip(vol + rng.normal(0, 8, vol.shape), 0, 255).astype(np.uint8), "synthetic"


def write_dataset(root: Path, vol: np.ndarray) -> tuple[Path, Path]:
    from PIL import Image

    single = {"image": [], "height": SIZE, "width": SIZE, "depth": DEPTH, "tile_size": SIZE, "dtype": "uint8"}
    multi = {**single, "tile_size": TILE, "image": []}
    for z in range(DEPTH):
        Image.fromarray(vol[z]).save(root / f"im{z:04d}.png")
        single["image"].append(f"im{z:04d}.png")
        (root / f"s{z:04d}").mkdir(exist_ok=True)
        for r in range(SIZE // TILE):
            for c in range(SIZE // TILE):
                Image.fromarray(vol[z, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]).save(
                    root / f"s{z:04d}" / f"{r}_{c}.png"
                )
        multi["image"].append(f"s{z:04d}/{{row}}_{{column}}.png")
    (root / "single.json").write_text(json.dumps(single))
    (root / "multi.json").write_text(json.dumps(multi))
    return root / "single.json", root / "multi.json"


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def mbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", help="where to write the PNGs (default: a temp dir)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import imageio.v3 as iio
    from PIL import Image

    rng = np.random.default_rng(0)
    vol, source = em_like_stack(rng)
    tmp = tempfile.TemporaryDirectory() if args.out_dir is None else None
    root = Path(args.out_dir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    single_json, multi_json = write_dataset(root, vol)
    nbytes = vol.nbytes
    png_bytes = sum(os.path.getsize(root / f"im{z:04d}.png") for z in range(DEPTH))
    res: dict = {"source": source, "shape": list(vol.shape), "png_ratio": round(png_bytes / nbytes, 3),
                 "cpus": os.cpu_count()}

    for name, jpath in (("single_2048", single_json), ("tiles_4x1024", multi_json)):
        v = open_tiled_volume(jpath, cache_bytes=0, threads=1)
        files = list(v.spec.all_tile_paths())
        r = {
            "pil_alone": mbps(nbytes, best(lambda fs=files: [np.asarray(Image.open(f)) for f in fs], args.repeats)),
            "imageio_alone": mbps(nbytes, best(lambda fs=files: [iio.imread(f) for f in fs], args.repeats)),
        }
        for threads in THREADS:
            vt = open_tiled_volume(jpath, cache_bytes=0, threads=threads)
            assert np.array_equal(vt.read(), vol)
            r[f"tiledvolume_{threads}thread"] = mbps(nbytes, best(vt.read, args.repeats))
        res[name] = r
        print(name, r, file=sys.stderr)

    # Neighbouring boxes: (20, 768, 768) windows at stride 384 (50% overlap) over the 4-tile layout.
    boxes = [Box((0, y, x), (DEPTH, y + 768, x + 768)) for y in range(0, SIZE - 767, 384)
             for x in range(0, SIZE - 767, 384)]
    box_bytes = sum(b.size for b in boxes)

    def pytc_style() -> None:  # sequential imageio, every box re-decodes its tiles
        for b in boxes:
            out = np.empty(b.shape, np.uint8)
            for z in range(b.start[0], b.stop[0]):
                for r in range(b.start[1] // TILE, (b.stop[1] - 1) // TILE + 1):
                    for c in range(b.start[2] // TILE, (b.stop[2] - 1) // TILE + 1):
                        t = iio.imread(root / f"s{z:04d}" / f"{r}_{c}.png")
                        y0, y1 = max(b.start[1], r * TILE), min(b.stop[1], (r + 1) * TILE)
                        x0, x1 = max(b.start[2], c * TILE), min(b.stop[2], (c + 1) * TILE)
                        out[z, y0 - b.start[1] : y1 - b.start[1], x0 - b.start[2] : x1 - b.start[2]] = t[
                            y0 - r * TILE : y1 - r * TILE, x0 - c * TILE : x1 - c * TILE
                        ]

    cache = {"boxes": len(boxes), "box_mb": round(box_bytes / 1e6, 1)}
    cache["pytc_style_s"] = round(best(pytc_style, 1), 3)
    for threads in (1, 2):
        nocache = open_tiled_volume(multi_json, cache_bytes=0, threads=threads)
        cache[f"no_cache_{threads}t_s"] = round(best(lambda v=nocache: [v.read(b) for b in boxes], 1), 3)
        v = open_tiled_volume(multi_json, threads=threads, cache_bytes=2 * nbytes)
        t0 = time.perf_counter()
        for b in boxes:
            v.read(b)
        cache[f"cold_{threads}t_s"] = round(time.perf_counter() - t0, 3)
        cache[f"cold_{threads}t_decodes"] = v.cache_info()["misses"]
        t0 = time.perf_counter()
        for b in boxes:
            v.read(b)
        cache[f"warm_{threads}t_s"] = round(time.perf_counter() - t0, 3)
    res["neighbouring_boxes"] = cache
    print("neighbouring boxes", cache, file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
