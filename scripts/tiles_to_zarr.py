#!/usr/bin/env python
"""Convert a tiled volume (PyTC tile JSON) to a chunked zarr array, in parallel and resumably.

Thin wrapper: the logic is in connectomics_data.io.tiles.to_zarr. Rerunning the same command
after an interruption skips the z-slabs already written (recorded in <out>/.tiles_to_zarr.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path as _Path  # noqa: E402

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from a clone without installing

from connectomics_data.errors import ConnectomicsDataError  # noqa: E402
from connectomics_data.io.tiles.to_zarr import DEFAULT_CHUNKS, volume_to_zarr  # noqa: E402
from connectomics_data.io.tiles.volume import DEFAULT_CACHE_BYTES, open_tiled_volume  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="tile JSON (tile_dataset.json)")
    p.add_argument("out", help="output zarr store (directory)")
    p.add_argument("--chunks", type=int, nargs=3, default=list(DEFAULT_CHUNKS), metavar=("Z", "Y", "X"),
                   help="zarr chunk shape (default: %(default)s)")
    p.add_argument("--zarr-format", type=int, choices=(2, 3), default=3, help="default: %(default)s")
    p.add_argument("--workers", type=int, default=2, help="slabs converted at once (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="tile decode threads per slab")
    p.add_argument("--slab-chunks", type=int, default=1, help="zarr chunks along z per slab")
    p.add_argument("--processes", action="store_true", help="worker processes instead of threads")
    p.add_argument("--label-vast", action="store_true", help="decode RGB tiles as VAST 24-bit ids")
    p.add_argument("--fill-value", type=float, default=None, help="value for missing tiles (default: error)")
    p.add_argument("--cache-mib", type=int, default=DEFAULT_CACHE_BYTES // 2**20,
                   help="decoded-tile cache in MiB (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        volume = open_tiled_volume(
            args.json,
            label_vast=args.label_vast,
            cache_bytes=args.cache_mib * 2**20,
            fill_value=args.fill_value,
            threads=args.threads,
        )
        report = volume_to_zarr(
            volume,
            args.out,
            chunks=args.chunks,
            zarr_format=args.zarr_format,
            workers=args.workers,
            slab_chunks=args.slab_chunks,
            processes=args.processes,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except ConnectomicsDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"wrote {args.out}: shape {list(volume.shape)} {volume.dtype.name}; slabs written "
            f"{len(report.written)}, already done {len(report.skipped)}, total {report.n_slabs}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
