"""Decode one 2D image tile, or read its header (shape, dtype) without decoding pixels.

Backends: PIL for PNG/JPEG/BMP/GIF (fastest for PNG: PIL decodes in C with the GIL released;
see ``benchmarks/tiles.py``), tifffile for ``.tif``/``.tiff``, ``imageio.v3`` for anything else.
A decoded tile is ``(y, x)`` or ``(y, x, channels)``, in the file's own dtype (16-bit PNGs stay
uint16).
"""

from __future__ import annotations

import os

import numpy as np

_PIL_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_TIFF_EXTS = {".tif", ".tiff"}

# PIL mode -> (numpy dtype, channels); channels 0 means a 2D (y, x) array.
_PIL_MODES: dict[str, tuple[str, int]] = {
    "1": ("bool", 0),
    "L": ("uint8", 0),
    "P": ("uint8", 0),
    "LA": ("uint8", 2),
    "RGB": ("uint8", 3),
    "RGBA": ("uint8", 4),
    "I;16": ("uint16", 0),
    "I;16L": ("uint16", 0),
    "I;16B": ("uint16", 0),
    "I": ("int32", 0),
    "F": ("float32", 0),
}


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def decode_tile(path: str, palette_indices: bool = True) -> np.ndarray:
    """Decode the image at ``path`` to ``(y, x)`` or ``(y, x, c)`` in its stored dtype.

    Args:
        path: image file.
        palette_indices: for a palette ('P') PNG, return the indices (label ids drawn with a
            palette) when True, else the RGB colours.

    Raises:
        FileNotFoundError: no such file.
        OSError / ValueError: the file is not a decodable image (callers add context).
    """
    ext = _ext(path)
    if ext in _PIL_EXTS:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                return np.asarray(im if palette_indices else im.convert("RGB"))
            if im.mode not in _PIL_MODES:
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            return np.asarray(im)
    if ext in _TIFF_EXTS:
        import tifffile

        arr = tifffile.imread(path)
    else:
        import imageio.v3 as iio

        arr = iio.imread(path)
    return np.asarray(arr)


def read_tile_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape ``(y, x)`` or ``(y, x, c)`` and dtype of the image at ``path``, pixels not decoded.

    Falls back to decoding for formats without a cheap header reader.
    """
    ext = _ext(path)
    if ext in _PIL_EXTS:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            dtype, ch = _PIL_MODES.get(im.mode, ("uint8", 4 if "A" in im.mode else 3))
            return ((h, w) if ch == 0 else (h, w, ch)), np.dtype(dtype)
    if ext in _TIFF_EXTS:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            return tuple(int(s) for s in series.shape), np.dtype(series.dtype)
    arr = decode_tile(path)
    return tuple(arr.shape), arr.dtype
