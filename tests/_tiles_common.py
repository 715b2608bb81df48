"""Shared helpers for the tests/test_tiles_*.py files: write a volume as tiles plus its JSON.

(No tests here; the other test_tiles_* files import these helpers.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from connectomics_data.geometry import Box


def vast_encode(ids: np.ndarray) -> np.ndarray:
    """(y, x) ids < 2**24 -> (y, x, 3) uint8 RGB, R*65536 + G*256 + B == id."""
    ids = ids.astype(np.uint32)
    return np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], axis=-1).astype(np.uint8)


def save_image(path: str | Path, arr: np.ndarray) -> None:
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if path.endswith((".tif", ".tiff")):
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)


def em_like(rng: np.random.Generator, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """Random test volume using the dtype's range (uint16 values well above 255)."""
    hi = {"uint8": 256, "uint16": 65536}[dtype]
    return rng.integers(0, hi, size=shape, dtype=np.int64).astype(dtype)


def write_tiles(
    root: Path,
    vol: np.ndarray,
    tile: tuple[int, int] | None,
    tile_st: tuple[int, int] = (0, 0),
    ext: str = "png",
    vast: bool = False,
    pattern: str = "{row}_{column}",
    pad_last: bool = False,
    dtype: str | None = None,
    relative: bool = True,
    json_name: str = "tiles.json",
    extra: dict | None = None,
) -> Path:
    """Write ``vol`` (z, y, x) under ``root`` and return the tile JSON path.

    ``tile=None``: one file per slice ``im{z:03d}.ext``; else tiles ``s{z}/<pattern>.ext`` with
    (row, column) offset by ``tile_st``. ``pad_last`` writes full-size (zero-padded) last
    row/column tiles. ``vast`` encodes ids as RGB.
    """
    root.mkdir(parents=True, exist_ok=True)
    depth, height, width = vol.shape
    entries = []
    for z in range(depth):
        sl = vol[z]
        if tile is None:
            name = f"im{z:03d}.{ext}"
            save_image(root / name, vast_encode(sl) if vast else sl)
            entries.append(name)
            continue
        th, tw = tile
        for r in range(-(-height // th)):
            for c in range(-(-width // tw)):
                t = sl[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
                if pad_last:
                    t = np.pad(t, ((0, th - t.shape[0]), (0, tw - t.shape[1])))
                name = f"s{z}/" + pattern.format(row=r + tile_st[0], column=c + tile_st[1]) + f".{ext}"
                save_image(root / name, vast_encode(t) if vast else t)
        entries.append(f"s{z}/{pattern}.{ext}")
    if not relative:
        entries = [str(root / e) for e in entries]
    ts = [height, width] if tile is None else list(tile)
    data = {
        "ndim": 1,
        "dtype": dtype or ("uint32" if vast else vol.dtype.name),
        "image": entries,
        "height": height,
        "width": width,
        "depth": depth,
        "tile_size": ts,
        "tile_st": list(tile_st),
        "tile_ratio": 1,
        "n_rows": 1,
        "n_columns": 1,
    }
    data.update(extra or {})
    path = root / json_name
    path.write_text(json.dumps(data))
    return path


def reference_read(full: np.ndarray, box: Box, mode: str, cval: float = 0) -> np.ndarray:
    """``np.pad(full, widths, mode)[box]``: the plain numpy answer for any box."""
    widths = box.padding_in(full.shape)
    kwargs = {"constant_values": cval} if mode == "constant" else {}
    padded = np.pad(full, widths, mode=mode, **kwargs)
    shifted = box.shift([w[0] for w in widths])
    # a box wholly outside on an axis: widths are measured from the nearest edge
    start = [max(0, s) for s in shifted.start]
    return padded[tuple(slice(a, a + n) for a, n in zip(start, box.shape))]
