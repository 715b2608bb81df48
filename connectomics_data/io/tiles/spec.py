"""Parse and validate a PyTC tile JSON into a :class:`TileSpec` (the mosaic's geometry).

Schema (PyTC v1, ``data_io.py::create_json``):

==============  ==========================  ===============================================
key             type                        meaning
==============  ==========================  ===============================================
``image``       list[str], one per z        a file holding the whole slice, or a pattern
                                            with ``{row}`` and ``{column}`` fields (format
                                            specs such as ``{row:02d}`` allowed), formatted
                                            with ``row + tile_st[0]``, ``column + tile_st[1]``
``height``      int > 0                     volume extent in y (voxels)
``width``       int > 0                     volume extent in x
``depth``       int > 0                     volume extent in z; must equal ``len(image)``
``tile_size``   int or [h, w], > 0          tile extent after ``tile_ratio``; tile (r, c)
                                            covers ``[r*h, r*h+h) x [c*w, c*w+w)``; the last
                                            row / column may be smaller
``tile_st``     [row0, col0], default [0,0] offset added to row / column in file names
``tile_ratio``  float > 0, default 1        zoom applied to every tile on read
``dtype``       'uint8'|'uint16'|'uint32'|  the volume dtype (default 'uint8', PyTC's image
                'uint64'                    default)
``ndim``, ``n_rows``, ``n_columns``         informational; accepted and unused (PyTC too)
==============  ==========================  ===============================================

Paths: an absolute path is used as is; a relative path is resolved against the directory that
holds the JSON file (not the current directory, unlike PyTC), then normalised lexically
(``a/../b`` -> ``b``). Every entry of ``image`` is a
``str.format`` template: literal braces are written ``{{`` and ``}}``. An entry with no
replacement field is a single file holding the whole ``(height, width)`` slice (then
``tile_size`` does not apply to that slice).
"""

from __future__ import annotations

import json
import math
import os
import string
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import TileJSONError, VolumeNotFoundError

ALLOWED_DTYPES = ("uint8", "uint16", "uint32", "uint64")
REQUIRED_KEYS = ("image", "height", "width", "depth", "tile_size")
OPTIONAL_KEYS = ("tile_st", "tile_ratio", "dtype")
INFORMATIONAL_KEYS = ("ndim", "n_rows", "n_columns")


def parse_image_entry(entry: str) -> bool:
    """Check one ``image`` entry; return True when it is a ``{row}``/``{column}`` pattern.

    Raises:
        ValueError: unbalanced braces, a field other than ``row``/``column`` (``{}``, ``{z}``,
            ``{row.x}``), a conversion (``!r``), a bad format spec, or only one of the two fields.
    """
    try:
        parsed = list(string.Formatter().parse(entry))
    except ValueError as err:
        raise ValueError(f"pattern {entry!r} has unbalanced braces ({err}); write literal "
                         "braces as '{{' and '}}'") from None
    fields = [f for _, f, _, _ in parsed if f is not None]
    if not fields:
        return False
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in ("row", "column"):
            raise ValueError(
                f"pattern {entry!r} has the field {{{name}}}; only {{row}} and {{column}} are "
                "allowed (write literal braces as '{{' and '}}')"
            )
        if conv is not None:
            raise ValueError(f"pattern {entry!r}: conversions like '!{conv}' are not allowed")
        try:
            format(0, spec or "")
        except ValueError:
            raise ValueError(f"pattern {entry!r}: bad format spec {spec!r} for {{{name}}}") from None
    missing = {"row", "column"} - set(fields)
    if missing:
        raise ValueError(
            f"pattern {entry!r} has {{{fields[0]}}} but no {{{missing.pop()}}}; a tile pattern "
            "needs both {row} and {column}"
        )
    return True


@dataclass(frozen=True)
class TileSpec:
    """Validated geometry of a tiled volume (shape ``(depth, height, width)``).

    Attributes:
        json_path: the JSON file (used in every error message).
        base_dir: directory relative ``image`` paths are resolved against.
        images: the raw ``image`` entries, one per z.
        is_pattern: per z, whether the entry is a ``{row}``/``{column}`` pattern.
        tile_shape: ``(h, w)`` tile extent in post-ratio voxels.
        tile_st: ``(row0, col0)`` offsets used in file names.
    """

    json_path: str
    base_dir: str
    images: tuple[str, ...]
    is_pattern: tuple[bool, ...]
    depth: int
    height: int
    width: int
    tile_shape: tuple[int, int]
    tile_st: tuple[int, int]
    tile_ratio: float
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.depth, self.height, self.width)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the tile grid of a patterned slice."""
        th, tw = self.tile_shape
        return (math.ceil(self.height / th), math.ceil(self.width / tw))

    def tile_extent(self, z: int, row: int, col: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` the tile covers inside the volume (whole slice if not a pattern)."""
        if not self.is_pattern[z]:
            return (0, self.height, 0, self.width)
        th, tw = self.tile_shape
        return (row * th, min((row + 1) * th, self.height), col * tw, min((col + 1) * tw, self.width))

    def tile_path(self, z: int, row: int = 0, col: int = 0) -> str:
        """Resolved file path of tile ``(row, col)`` (grid indices from 0) of slice ``z``."""
        entry = self.images[z]
        if self.is_pattern[z]:
            name = entry.format(row=row + self.tile_st[0], column=col + self.tile_st[1])
        else:
            name = entry.format()  # un-escapes '{{' / '}}'
        return os.path.normpath(os.path.join(self.base_dir, name))

    def tiles_of_slice(self, z: int) -> Iterator[tuple[int, int]]:
        """Grid indices ``(row, col)`` of every tile of slice ``z``."""
        if not self.is_pattern[z]:
            yield (0, 0)
            return
        rows, cols = self.grid_shape
        for r in range(rows):
            for c in range(cols):
                yield (r, c)

    def tiles_in_box(self, z: int, y0: int, y1: int, x0: int, x1: int) -> Iterator[tuple[int, int]]:
        """Grid indices of the tiles of slice ``z`` that overlap ``[y0, y1) x [x0, x1)`` (non-empty)."""
        if not self.is_pattern[z]:
            yield (0, 0)
            return
        th, tw = self.tile_shape
        for r in range(y0 // th, (y1 - 1) // th + 1):
            for c in range(x0 // tw, (x1 - 1) // tw + 1):
                yield (r, c)

    def all_tile_paths(self) -> Iterator[str]:
        """Every tile file of the volume, slice by slice."""
        for z in range(self.depth):
            for r, c in self.tiles_of_slice(z):
                yield self.tile_path(z, r, c)


def _err(path: str, msg: str) -> TileJSONError:
    return TileJSONError(f"tile JSON {path}: {msg}")


def _positive_int(path: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise _err(path, f"'{key}' must be a positive integer, got {value!r}")
    return int(value)


def _int(path: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _err(path, f"'{key}' must hold integers, got {value!r}")
    return int(value)


def spec_from_dict(data: Any, json_path: str | os.PathLike, base_dir: str | None = None) -> TileSpec:
    """Validate a decoded tile JSON object; ``base_dir`` defaults to the JSON's directory.

    Raises:
        TileJSONError: naming ``json_path``, for missing keys (all listed), a bad dtype (allowed
            ones listed), ``len(image) != depth``, non-positive sizes, or a bad pattern.
    """
    path = str(json_path)
    if not isinstance(data, dict):
        raise _err(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise _err(path, f"missing required field(s) {missing} (required: {list(REQUIRED_KEYS)})")
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS) - set(INFORMATIONAL_KEYS))
    if unknown:
        warnings.warn(f"tile JSON {path}: ignoring unknown field(s) {unknown}", stacklevel=3)

    dtype_name = data.get("dtype", "uint8")
    if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DTYPES:
        raise _err(path, f"'dtype' is {dtype_name!r}; allowed: {list(ALLOWED_DTYPES)}")
    height = _positive_int(path, "height", data["height"])
    width = _positive_int(path, "width", data["width"])
    depth = _positive_int(path, "depth", data["depth"])

    ts = data["tile_size"]
    if isinstance(ts, (list, tuple)):
        if len(ts) != 2:
            raise _err(path, f"'tile_size' must be an int or [h, w], got {ts!r}")
        tile_shape = (_positive_int(path, "tile_size", ts[0]), _positive_int(path, "tile_size", ts[1]))
    else:
        t = _positive_int(path, "tile_size", ts)
        tile_shape = (t, t)

    st = data.get("tile_st", [0, 0])
    if not isinstance(st, (list, tuple)) or len(st) != 2:
        raise _err(path, f"'tile_st' must be [row0, col0], got {st!r}")
    tile_st = (_int(path, "tile_st", st[0]), _int(path, "tile_st", st[1]))

    ratio = data.get("tile_ratio", 1)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0 or not math.isfinite(ratio):
        raise _err(path, f"'tile_ratio' must be a positive number, got {ratio!r}")

    images = data["image"]
    if not isinstance(images, list) or not all(isinstance(s, str) for s in images):
        raise _err(path, "'image' must be a list of path strings, one per z slice")
    if len(images) != depth:
        raise _err(path, f"'image' has {len(images)} entries but 'depth' is {depth}; need one per z")
    is_pattern = []
    for z, entry in enumerate(images):
        try:
            is_pattern.append(parse_image_entry(entry))
        except ValueError as err:
            raise _err(path, f"image[{z}]: {err}") from None

    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(path))
    return TileSpec(
        json_path=path,
        base_dir=base_dir,
        images=tuple(images),
        is_pattern=tuple(is_pattern),
        depth=depth,
        height=height,
        width=width,
        tile_shape=tile_shape,
        tile_st=tile_st,
        tile_ratio=float(ratio),
        dtype=np.dtype(dtype_name),
    )


def load_tile_json(path: str | os.PathLike) -> TileSpec:
    """Read and validate a tile JSON file.

    Raises:
        VolumeNotFoundError: the JSON file does not exist.
        TileJSONError: unreadable or malformed JSON (with line and column), or an invalid schema.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VolumeNotFoundError(f"tile JSON {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TileJSONError(f"tile JSON {p}: cannot read ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TileJSONError(
            f"tile JSON {p}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    except RecursionError:
        raise TileJSONError(f"tile JSON {p}: malformed JSON, nested too deeply") from None
    return spec_from_dict(data, p)


def find_missing(paths: list[str]) -> list[str]:
    """The entries of ``paths`` that are not existing files, in order.

    Lists each parent directory once (fast for thousands of tiles, also on network file
    systems) instead of one ``stat`` per file.
    """
    listing: dict[str, set[str] | None] = {}
    missing = []
    for p in paths:
        parent, name = os.path.split(p)
        if parent not in listing:
            try:
                with os.scandir(parent or ".") as it:
                    listing[parent] = {e.name for e in it if not e.is_dir()}
            except OSError:
                listing[parent] = None
        names = listing[parent]
        if names is None or name not in names:
            missing.append(p)
    return missing
