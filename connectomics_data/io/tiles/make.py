"""Build a PyTC tile JSON from image files on disk (the logic of ``scripts/make_tile_json.py``).

Accepted layouts (``images`` is a directory or a glob):

1. One file per slice: ``images`` is a directory (every ``.png/.tif/.tiff/.jpg/.jpeg/.bmp``
   file in it) or a glob such as ``'em/slice_*.png'``. Files are ordered naturally
   (``s2`` before ``s10``); each is one z slice.
2. Several tiles per slice, with ``pattern`` such as ``'{row}_{column}.png'`` (format specs
   like ``'r{row:02d}_c{column:02d}.tif'`` allowed, file names only, no ``/``):

   a. one sub-folder per slice: ``images/<slice>/{row}_{column}.png``; ``images`` may also be
      a glob that lists the slice folders (``'stack/z*'``);
   b. one file-name prefix per slice, all in one folder:
      ``images/<slice-prefix>{row}_{column}.png`` (e.g. ``s0003_2_1.png``).

   Rows and columns are read from the file names; ``tile_st`` is the smallest row and column
   found, and every slice must hold the full grid of rows x columns.

Geometry comes from image headers only (PIL / tifffile; pixels are not decoded): ``tile_size``
from the first tile, ``height``/``width`` from the first tile of the last row / column (so a
smaller last tile is measured exactly). ``check`` reads every header and verifies size and
dtype.
"""

from __future__ import annotations

import glob
import json
import os
import re
import string
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import TileJSONError
from ..atomic import atomic_output
from .decode import read_tile_header
from .spec import ALLOWED_DTYPES, parse_image_entry, spec_from_dict

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers by value (``'s2' < 's10'``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _escape(path: str) -> str:
    return path.replace("{", "{{").replace("}", "}}")


def _expand(images: str) -> list[str]:
    if any(ch in images for ch in "*?["):
        found = sorted(glob.glob(images), key=natural_key)
        if not found:
            raise TileJSONError(f"--images {images!r}: the glob matches nothing")
        return found
    if os.path.isdir(images):
        return [images]
    raise TileJSONError(f"--images {images!r}: not a directory and not a glob")


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching file names made from ``pattern``; groups ``prefix``, ``row``, ``column``."""
    if "/" in pattern or os.sep in pattern:
        raise TileJSONError(f"--tiles-per-slice {pattern!r}: must be a file name, without '/'")
    try:
        if not parse_image_entry(pattern):
            raise ValueError(f"pattern {pattern!r} has neither {{row}} nor {{column}}")
    except ValueError as err:
        raise TileJSONError(f"--tiles-per-slice: {err}") from None
    parts = []
    for literal, name, _, _ in string.Formatter().parse(pattern):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(rf"(?P<{name}>\d+)" if f"(?P<{name}>" not in "".join(parts) else rf"(?P={name})")
    return re.compile(r"(?P<prefix>.*?)" + "".join(parts) + r"\Z")


def _single_file_slices(images: str) -> list[str]:
    entries = _expand(images)
    if len(entries) == 1 and os.path.isdir(entries[0]):
        d = entries[0]
        entries = sorted(
            (os.path.join(d, n) for n in os.listdir(d) if n.lower().endswith(IMAGE_EXTS)),
            key=natural_key,
        )
    files = [e for e in entries if os.path.isfile(e)]
    if not files:
        raise TileJSONError(f"--images {images!r}: no image files ({', '.join(IMAGE_EXTS)}) found")
    return files


def _multi_tile_slices(images: str, pattern: str) -> list[tuple[str, str, set[tuple[int, int]]]]:
    """Per slice, in order: ``(folder, file-name prefix, {(row, column) found})``."""
    rx = pattern_regex(pattern)
    entries = _expand(images)

    def grid_in(names: Iterable[str]) -> dict[str, set[tuple[int, int]]]:
        by_prefix: dict[str, set[tuple[int, int]]] = {}
        for n in names:
            m = rx.match(n)
            if m:
                by_prefix.setdefault(m["prefix"], set()).add((int(m["row"]), int(m["column"])))
        return by_prefix

    def by_prefix(folder: str, names: Iterable[str]) -> list[tuple[str, str, set[tuple[int, int]]]]:
        groups = sorted(grid_in(names).items(), key=lambda kv: natural_key(kv[0]))
        return [(folder, prefix, found) for prefix, found in groups]

    slices: list[tuple[str, str, set[tuple[int, int]]]] = []
    dirs = [e for e in entries if os.path.isdir(e)]
    if len(entries) == 1 and dirs:
        root = dirs[0]
        subdirs = sorted((e.path for e in os.scandir(root) if e.is_dir()), key=natural_key)
        for sd in subdirs:
            found = grid_in(os.listdir(sd)).get("", set())
            if found:
                slices.append((sd, "", found))
        if not slices:  # prefix layout in one folder
            slices = by_prefix(root, os.listdir(root))
    elif dirs:
        for sd in dirs:
            found = grid_in(os.listdir(sd)).get("", set())
            if not found:
                raise TileJSONError(f"slice folder {sd} holds no file matching {pattern!r}")
            slices.append((sd, "", found))
    else:
        by_dir: dict[str, list[str]] = {}
        for f in entries:
            by_dir.setdefault(os.path.dirname(f), []).append(os.path.basename(f))
        for d, names in by_dir.items():
            slices.extend(by_prefix(d, names))
    if not slices:
        raise TileJSONError(f"--images {images!r}: no file matches the tile pattern {pattern!r}")
    return slices


def _volume_dtype(dtype: np.dtype, label_vast: bool, path: str) -> str:
    if label_vast:
        return "uint32"
    if dtype == np.bool_:
        return "uint8"
    if dtype.name in ALLOWED_DTYPES:
        return dtype.name
    raise TileJSONError(
        f"tile file {path} has dtype {dtype.name}; tile volumes hold {list(ALLOWED_DTYPES)} "
        "(pass --dtype to override)"
    )


def _format_missing(missing: list[str], total: int, what: str) -> str:
    shown = "\n  ".join(missing[:5])
    more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} of {total} {what}:\n  {shown}{more}"


def build_tile_json(
    images: str,
    out: str | os.PathLike,
    tiles_per_slice: str | None = None,
    label_vast: bool = False,
    dtype: str | None = None,
    relative: bool = False,
) -> dict[str, Any]:
    """Infer the tile JSON dict for ``images`` (see the module docstring for layouts).

    Paths are absolute, or relative to ``out``'s directory when ``relative``.

    Raises:
        TileJSONError: nothing matches, a slice lacks tiles of the grid, or a dtype is unusable.
    """
    out_dir = os.path.dirname(os.path.abspath(out))

    def place(entry: str) -> str:
        absolute = os.path.abspath(entry)
        return os.path.relpath(absolute, out_dir) if relative else absolute

    if tiles_per_slice is None:
        files = _single_file_slices(images)
        shape, dt = read_tile_header(files[0])
        height, width = int(shape[0]), int(shape[1])
        entries = [_escape(place(f)) for f in files]
        tile_size: int | list[int] = max(height, width)
        tile_st, n_rows, n_cols = [0, 0], 1, 1
        first = files[0]
    else:
        slices = _multi_tile_slices(images, tiles_per_slice)
        all_rc = set().union(*(found for _, _, found in slices))
        r0 = min(r for r, _ in all_rc)
        c0 = min(c for _, c in all_rc)
        n_rows = max(r for r, _ in all_rc) - r0 + 1
        n_cols = max(c for _, c in all_rc) - c0 + 1
        want = {(r0 + r, c0 + c) for r in range(n_rows) for c in range(n_cols)}

        def tile_file(z: int, row: int, col: int) -> str:
            folder, prefix, _ = slices[z]
            return os.path.join(folder, prefix + tiles_per_slice.format(row=row, column=col))

        missing = [
            tile_file(z, r, c) for z in range(len(slices)) for r, c in sorted(want - slices[z][2])
        ]
        if missing:
            total = len(slices) * n_rows * n_cols
            raise TileJSONError(
                f"--images {images!r}: the tile grid is rows {r0}..{r0 + n_rows - 1} x columns "
                f"{c0}..{c0 + n_cols - 1}, but " + _format_missing(missing, total, "tiles are missing")
            )
        for z in range(len(slices)):  # names must round-trip through the pattern (zero padding)
            for r, c in ((r0, c0), (r0 + n_rows - 1, c0 + n_cols - 1)):
                p = tile_file(z, r, c)
                if not os.path.isfile(p):
                    raise TileJSONError(
                        f"tile {p} (from pattern {tiles_per_slice!r}) does not exist; do the file "
                        "names use different zero padding? e.g. '{row:02d}_{column:02d}.png'"
                    )
        first = tile_file(0, r0, c0)
        shape, dt = read_tile_header(first)
        th, tw = int(shape[0]), int(shape[1])
        last_row_h = read_tile_header(tile_file(0, r0 + n_rows - 1, c0))[0][0]
        last_col_w = read_tile_header(tile_file(0, r0, c0 + n_cols - 1))[0][1]
        height = (n_rows - 1) * th + int(last_row_h)
        width = (n_cols - 1) * tw + int(last_col_w)
        entries = [
            os.path.join(_escape(place(folder)), _escape(prefix) + tiles_per_slice)
            for folder, prefix, _ in slices
        ]
        tile_size = th if th == tw else [th, tw]
        tile_st = [r0, c0]
    vol_dtype = dtype or _volume_dtype(dt, label_vast, first)
    data = {
        "ndim": 1,
        "dtype": vol_dtype,
        "image": entries,
        "height": height,
        "width": width,
        "depth": len(entries),
        "tile_size": tile_size,
        "tile_st": tile_st,
        "tile_ratio": 1,
        "n_rows": n_rows,
        "n_columns": n_cols,
    }
    spec_from_dict(data, out, base_dir=out_dir)  # our own output must validate
    return data


def check_tiles(
    data: dict[str, Any],
    json_path: str | os.PathLike,
    label_vast: bool = False,
    threads: int = 8,
    progress: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Verify that every tile of ``data`` exists with the size and a dtype the volume can hold.

    Headers are read in ``threads`` threads with a tqdm bar. Returns the number of files checked.

    Raises:
        TileJSONError: listing the first 5 bad files and the count.
    """
    from tqdm import tqdm

    spec = spec_from_dict(data, json_path, base_dir=os.path.dirname(os.path.abspath(json_path)))
    jobs = []
    for z in range(spec.depth):
        for r, c in spec.tiles_of_slice(z):
            y0, y1, x0, x1 = spec.tile_extent(z, r, c)
            jobs.append((spec.tile_path(z, r, c), (y1 - y0, x1 - x0)))

    def check(job: tuple[str, tuple[int, int]]) -> str | None:
        path, (eh, ew) = job
        try:
            shape, dt = read_tile_header(path)
        except FileNotFoundError:
            return f"{path}: missing"
        except (OSError, ValueError, SyntaxError) as err:
            return f"{path}: unreadable ({err})"
        if tuple(shape[:2]) != (eh, ew):
            return f"{path}: shape {tuple(shape[:2])}, expected ({eh}, {ew})"
        chans = shape[2] if len(shape) == 3 else 1
        if label_vast:
            ok = dt == np.uint8 and (chans >= 3 or chans == 1)
        else:
            ok = np.can_cast(dt, spec.dtype, "safe")
        if not ok:
            return f"{path}: {dt.name} with {chans} channel(s) does not fit the volume dtype {spec.dtype.name}"
        return None

    bad = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = pool.map(check, jobs)
        for msg in tqdm(results, total=len(jobs), desc="check tiles", unit="file", disable=not progress):
            if msg is not None:
                bad.append(msg)
            if on_progress is not None:
                on_progress(1)
    if bad:
        raise TileJSONError(f"tile JSON {json_path}: " + _format_missing(bad, len(jobs), "tile files are bad"))
    return len(jobs)


def make_tile_json(
    images: str,
    out: str | os.PathLike,
    tiles_per_slice: str | None = None,
    check: bool = False,
    label_vast: bool = False,
    dtype: str | None = None,
    relative: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Infer the tile JSON for ``images``, optionally check every tile, write it atomically."""
    if dtype is not None and dtype not in ALLOWED_DTYPES:
        raise TileJSONError(f"--dtype {dtype!r}: allowed {list(ALLOWED_DTYPES)}")
    data = build_tile_json(images, out, tiles_per_slice, label_vast, dtype, relative)
    if check:
        check_tiles(data, out, label_vast=label_vast, progress=progress)
    with atomic_output(out) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data
