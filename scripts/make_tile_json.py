#!/usr/bin/env python
"""Write a PyTC tile JSON (tile_dataset.json) for a stack of image files.

Thin wrapper: the logic is in connectomics_data.io.tiles.make (see its docstring).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path as _Path  # noqa: E402

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from a clone without installing

from connectomics_data.errors import ConnectomicsDataError  # noqa: E402
from connectomics_data.io.tiles.make import make_tile_json  # noqa: E402
from connectomics_data.io.tiles.spec import ALLOWED_DTYPES  # noqa: E402

EPILOG = """\
accepted layouts:
  one file per slice (no --tiles-per-slice):
    --images em/                 every .png/.tif/.tiff/.jpg/.jpeg/.bmp in em/, natural order
    --images 'em/slice_*.png'    a glob (quote it), natural order (s2 before s10)
  several tiles per slice (--tiles-per-slice '{row}_{column}.png'):
    --images stack/              stack/<slice folder>/{row}_{column}.png, one folder per slice
    --images 'stack/z*'          a glob listing the slice folders
    --images tiles/              tiles/<slice prefix>{row}_{column}.png, e.g. s0003_0_1.png
  rows/columns come from the file names (tile_st = smallest row and column found); every
  slice must hold the full grid. Zero-padded names need a format spec:
  '{row:02d}_{column:02d}.png'. Literal braces in names are written '{{' and '}}'.

geometry comes from image headers (pixels are not decoded): tile_size from the first tile,
height/width from the last row/column tiles (which may be smaller). --check reads every
header and verifies size and dtype. Paths are written absolute (PyTC-compatible) unless
--relative (then relative to the JSON's folder, as connectomics_data resolves them).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, help="folder or quoted glob (see layouts below)")
    p.add_argument("--tiles-per-slice", metavar="PATTERN", help="tile file-name pattern, e.g. '{row}_{column}.png'")
    p.add_argument("--out", default="tile_dataset.json", help="output JSON (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="verify every file's size and dtype")
    p.add_argument("--label-vast", action="store_true", help="RGB VAST label tiles: dtype uint32")
    p.add_argument("--dtype", choices=ALLOWED_DTYPES, help="override the volume dtype")
    p.add_argument("--relative", action="store_true", help="write paths relative to the JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data = make_tile_json(
            args.images,
            args.out,
            tiles_per_slice=args.tiles_per_slice,
            check=args.check,
            label_vast=args.label_vast,
            dtype=args.dtype,
            relative=args.relative,
            progress=not args.quiet,
        )
    except ConnectomicsDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"wrote {args.out}: depth {data['depth']}, {data['height']} x {data['width']}, "
            f"{data['n_rows']} x {data['n_columns']} tiles of {data['tile_size']}, {data['dtype']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
