"""Random 17x257x257 box reads per second from each on-disk format, against HDF5.

Data: the real ssTEM stack (/work/shared/data/drosophila_vnc_sstem/image.h5, uint8,
20 x 1024 x 1024) when present, else a synthetic uint8 volume of that shape. It is written
once per format into a temporary directory, each by the format's own library, chunks of
4 x 128 x 128 voxels (z, y, x) everywhere:

* hdf5: h5py, gzip level 4 (read by :class:`~connectomics_data.io.Hdf5Volume`, h5py);
* zarr3 / zarr3_sharded: zarr-python, zstd (zarr's default), shards of 20 x 512 x 512; read by
  :class:`~connectomics_data.io.ZarrVolume` (zarr-python) *and* by TensorStore's zarr3 driver;
* n5: TensorStore, gzip (read by :class:`~connectomics_data.io.N5Volume`, TensorStore);
* precomputed raw / sharded (gzip): TensorStore (read by
  :class:`~connectomics_data.io.PrecomputedVolume`).

Chunk caches are off by default (``--cache-mb 0``: the whole volume would fit in the default
caches, and training reads of a large volume rarely hit them), so every read decodes its
chunks. For each reader: ``--reads`` boxes at seeded random positions inside the volume, read one
after the other in one thread, then the same boxes spread over ``--threads`` threads. Reported:
reads per second (wall), CPU seconds per read (``time.process_time``, all threads of the
process: the number to trust on a loaded machine), and the ratio to HDF5. Every read is checked
against the HDF5 read of the same box. Usage: ``python benchmarks/formats.py [--reads 30]
[--threads 4] [--cache-mb 0]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectomics_data.geometry import Box  # noqa: E402
from connectomics_data.io import Volume, open_volume  # noqa: E402
from connectomics_data.io.formats.tensorstore_array import TensorStoreVolume  # noqa: E402

DATA = Path("/work/shared/data/drosophila_vnc_sstem/image.h5")
BOX = (17, 257, 257)
CHUNK = (4, 128, 128)


def load_data() -> np.ndarray:
    if DATA.is_file():
        import h5py

        with h5py.File(DATA, "r") as f:
            return f["main"][:]
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (20, 1024, 1024), dtype=np.uint8)


def write_all(data: np.ndarray, root: Path, cache: int) -> dict[str, Volume]:
    import h5py
    import tensorstore as ts
    import zarr

    with h5py.File(root / "v.h5", "w") as f:
        f.create_dataset("main", data=data, chunks=CHUNK, compression="gzip", compression_opts=4)
    zarr.create_array(str(root / "v.zarr"), data=data, chunks=CHUNK)
    zarr.create_array(str(root / "s.zarr"), data=data, chunks=CHUNK, shards=(20, 512, 512))
    n5 = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(root / "v.n5" / "raw")},
                  "metadata": {"dimensions": list(data.shape[::-1]), "blockSize": list(CHUNK[::-1]),
                               "dataType": "uint8", "compression": {"type": "gzip"}}}, create=True).result()
    n5[...].write(data.T).result()
    for name, sharding in (("pc", None), ("pcs", {
        "@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0, "hash": "identity",
        "minishard_bits": 2, "shard_bits": 2, "minishard_index_encoding": "gzip", "data_encoding": "gzip"})):
        scale = {"size": list(data.shape[::-1]), "resolution": [4, 4, 40], "encoding": "raw",
                 "chunk_size": list(CHUNK[::-1])}
        if sharding:
            scale["sharding"] = sharding
        pc = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(root / name) + "/"},
                      "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
                      "scale_metadata": scale}, create=True).result()
        pc[...].write(data.T[..., None]).result()

    def ts_zarr(path: Path) -> Volume:
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path) + "/"}}
        return TensorStoreVolume(str(path), spec, "zyx", data.shape, data.dtype, None, reverse=False,
                                 cache_bytes=cache)

    return {
        "hdf5 (h5py)": open_volume(root / "v.h5", cache_bytes=cache),
        "zarr3 (zarr-python)": open_volume(root / "v.zarr"),
        "zarr3 (tensorstore)": ts_zarr(root / "v.zarr"),
        "zarr3_sharded (zarr-python)": open_volume(root / "s.zarr"),
        "zarr3_sharded (tensorstore)": ts_zarr(root / "s.zarr"),
        "n5 (tensorstore)": open_volume(root / "v.n5" / "raw", cache_bytes=cache),
        "precomputed raw (tensorstore)": open_volume(root / "pc", cache_bytes=cache),
        "precomputed sharded gzip (tensorstore)": open_volume(root / "pcs", cache_bytes=cache),
    }


def boxes(shape, n: int, seed: int = 0) -> list[Box]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, BOX)]
        out.append(Box(start, [a + b for a, b in zip(start, BOX)]))
    return out


def measure(volume: Volume, todo: list[Box], threads: int) -> tuple[float, float]:
    """(reads per second wall, CPU seconds per read)."""
    cpu, wall = time.process_time(), time.perf_counter()
    if threads == 1:
        for box in todo:
            volume.read(box)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(volume.read, todo))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(todo) / wall, cpu / len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cache-mb", type=int, default=0,
                        help="decoded-chunk cache of the HDF5 and TensorStore readers (0: every read decodes)")
    args = parser.parse_args(argv)
    data = load_data()
    with tempfile.TemporaryDirectory(prefix="formats_bench_") as tmp:
        volumes = write_all(data, Path(tmp), args.cache_mb << 20)
        todo = boxes(data.shape, args.reads)
        for box in todo[:3]:  # correctness, and warm every reader (open, first chunk)
            for vol in volumes.values():
                np.testing.assert_array_equal(vol.read(box), data[box.slices()])
        results = {}
        for name, vol in volumes.items():
            one = measure(vol, todo, 1)
            many = measure(vol, todo, args.threads)
            results[name] = {"reads_per_s_1": one[0], "cpu_s_per_read_1": one[1],
                             f"reads_per_s_{args.threads}": many[0], f"cpu_s_per_read_{args.threads}": many[1]}
    base = results["hdf5 (h5py)"]
    print(f"{'reader':40s} {'1 thread':>10s} {'cpu/read':>9s} {'x hdf5':>7s} "
          f"{f'{args.threads} threads':>11s} {'x hdf5':>7s}")
    for name, r in results.items():
        print(f"{name:40s} {r['reads_per_s_1']:8.1f}/s {1000 * r['cpu_s_per_read_1']:7.1f}ms "
              f"{base['cpu_s_per_read_1'] / r['cpu_s_per_read_1']:6.2f}x "
              f"{r[f'reads_per_s_{args.threads}']:9.1f}/s "
              f"{r[f'reads_per_s_{args.threads}'] / base[f'reads_per_s_{args.threads}']:6.2f}x")
    print(json.dumps({"box": list(BOX), "chunk": list(CHUNK), "reads": args.reads, "threads": args.threads,
                      "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
