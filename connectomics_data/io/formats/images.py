"""2D images: single PNG/JPEG/TIFF images and stacks of 2D slices (one file per z).

A slice stack is a ``(z, y, x)`` volume (``(c, z, y, x)`` for RGB slices). Every slice's
shape and dtype are checked from the file headers up front (no decoding), and a read decodes
only the slices its box touches. PNG/JPEG go through Pillow (palette images are expanded to
RGB/RGBA as imageio does); TIFF slices through tifffile. 16- and 32-bit data keep their dtype.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConnectomicsDataError, VolumeError, VolumeNotFoundError
from ..layout import AxisLayout, native_dtype, raise_2d
from ..lazy import READ_ERRORS, LazyArrayVolume, check_exists, wrap_error
from .tiff import TIFF_EXTENSIONS, layout_axes_from_tiff, open_tiff

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SLICE_EXTENSIONS = IMAGE_EXTENSIONS + TIFF_EXTENSIONS

IMAGE_ERRORS = READ_ERRORS + (SyntaxError, Image.DecompressionBombError)
"""Pillow raises SyntaxError for broken PNG chunks and DecompressionBombError for huge images."""

# Pillow mode -> (channels, dtype) of np.asarray(image); 'P' is expanded before decoding.
_PIL_MODES: dict[str, tuple[int | None, type]] = {
    "1": (None, np.bool_),
    "L": (None, np.uint8),
    "LA": (2, np.uint8),
    "RGB": (3, np.uint8),
    "RGBA": (4, np.uint8),
    "CMYK": (4, np.uint8),
    "YCbCr": (3, np.uint8),
    "I": (None, np.int32),
    "F": (None, np.float32),
    "I;16": (None, np.uint16),
    "I;16L": (None, np.uint16),
    "I;16B": (None, np.uint16),
    "I;16N": (None, np.uint16),
}


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _pil_target_mode(image: Image.Image) -> str:
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    return image.mode


def read_image_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape ``(y, x)`` or ``(y, x, c)`` and dtype of a 2D image, from its header only."""
    if _extension(path) in TIFF_EXTENSIONS:
        with open_tiff(path) as tif:
            try:
                series = tif.series[0]
                axes, shape, dtype = series.axes, tuple(series.shape), series.dtype
            except READ_ERRORS as err:
                raise wrap_error(path, "cannot read the TIFF metadata", err) from err
        planar = axes == "SYX"  # a planar RGB(A) slice
        letters = "cyx" if planar else layout_axes_from_tiff(axes, path)
        if "z" in letters:
            raise VolumeError(
                f"{path}: a slice must be a 2D image, but this TIFF holds a stack of shape "
                f"{list(shape)} (axes {axes!r})"
            )
        if letters == "cyx":
            shape = shape[1:] + shape[:1]
        return shape, native_dtype(dtype, path)
    if _extension(path) not in IMAGE_EXTENSIONS:
        raise VolumeError(
            f"{path}: unsupported 2D image extension; supported: {list(SLICE_EXTENSIONS)}"
        )
    try:
        with Image.open(path) as image:
            mode = _pil_target_mode(image)
            width, height = image.size
    except IMAGE_ERRORS as err:
        raise wrap_error(path, "cannot open as an image", err) from err
    if mode not in _PIL_MODES:
        raise VolumeError(f"{path}: unsupported image mode {mode!r}; supported: {list(_PIL_MODES)}")
    channels, dtype = _PIL_MODES[mode]
    shape = (height, width) if channels is None else (height, width, channels)
    return shape, np.dtype(dtype)


def decode_image(path: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Decode a whole 2D image to ``(y, x)`` or ``(y, x, c)``; it must match ``shape``/``dtype``."""
    try:
        if _extension(path) in TIFF_EXTENSIONS:
            with open_tiff(path) as tif:
                series = tif.series[0]
                data = series.asarray()
                if series.axes == "SYX":
                    data = np.moveaxis(data, 0, -1)
        else:
            with Image.open(path) as image:
                mode = _pil_target_mode(image)
                if mode != image.mode:
                    image = image.convert(mode)
                data = np.asarray(image)
    except ConnectomicsDataError:
        raise
    except IMAGE_ERRORS as err:
        raise wrap_error(path, "cannot decode the image", err) from err
    if data.shape != tuple(shape) or native_dtype(data.dtype, path) != np.dtype(dtype):
        raise VolumeError(
            f"{path}: decoded to shape {list(data.shape)} and dtype {data.dtype}, but the header "
            f"said shape {list(shape)} and dtype {np.dtype(dtype)}"
        )
    return data.astype(dtype, copy=False)


class ImageVolume(LazyArrayVolume):
    """A single 2D PNG/JPEG image as a ``(1, y, x)`` volume (``(c, 1, y, x)`` when RGB).

    Only with ``allow_2d=True`` (PyTC's ``DATASET.LOAD_2D``); ``drop_channel`` averages RGB to
    gray. The image is decoded on the first read in each process and kept.
    """

    def __init__(
        self, path: str | os.PathLike, *, allow_2d: bool = False, drop_channel: bool = False
    ):
        self.path = check_exists(path)
        shape, dtype = read_image_header(self.path)
        if not allow_2d:
            raise_2d(self.path, shape)
        self.layout = AxisLayout("yx" if len(shape) == 2 else "yxc", shape, drop_channel)
        self._dtype = dtype

    def _open(self) -> tuple[Any, Any]:
        return decode_image(self.path, self.layout.stored_shape, self._dtype), None


class SliceStackReader:
    """Array-like ``(z, y, x[, c])`` over one 2D image file per z; decodes only indexed slices."""

    def __init__(self, paths: Sequence[str], shape: tuple[int, ...], dtype: np.dtype, threads: int):
        self.paths = list(paths)
        self.shape = shape
        self.dtype = dtype
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _decode(self, z: int, crop: tuple[slice, ...]) -> np.ndarray:
        return decode_image(self.paths[z], self.shape[1:], self.dtype)[crop]

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        zs = range(*index[0].indices(self.shape[0]))
        crop = index[1:]
        crop_shape = tuple(len(range(*s.indices(n))) for s, n in zip(crop, self.shape[1:]))
        out = np.empty((len(zs),) + crop_shape, dtype=self.dtype)
        if self.threads > 1 and len(zs) > 1:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.threads, thread_name_prefix="slice-decode"
                    )
            blocks = self._executor.map(lambda z: self._decode(z, crop), zs)
        else:
            blocks = (self._decode(z, crop) for z in zs)
        for i, block in enumerate(blocks):
            out[i] = block
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


def check_slices(paths: Sequence[str], name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Check that every slice exists and has the first slice's shape and dtype (headers only)."""
    if len(paths) == 0:
        raise VolumeNotFoundError(f"{name}: the slice stack lists no files")
    first_shape, first_dtype = None, None
    for path in paths:
        check_exists(path)
        shape, dtype = read_image_header(path)
        if first_shape is None:
            first_shape, first_dtype = shape, dtype
        elif shape != first_shape or dtype != first_dtype:
            raise VolumeError(
                f"{name}: slice {path} has shape {list(shape)} and dtype {dtype}, but the first "
                f"slice {paths[0]} has shape {list(first_shape)} and dtype {first_dtype}; all "
                f"slices of a stack must match"
            )
    return first_shape, first_dtype


def _describe_stack(paths: Sequence[str]) -> str:
    if len(paths) <= 1:
        return paths[0] if paths else "<empty stack>"
    return f"{paths[0]} (+{len(paths) - 1} more slices)"


class ImageStackVolume(LazyArrayVolume):
    """2D slices, one file per z, as a ``(z, y, x)`` volume (``(c, z, y, x)`` for RGB slices).

    Args:
        paths: the slice files in z order (PNG, JPEG or TIFF; all the same shape and dtype).
        drop_channel: average RGB slices to gray.
        threads: decode the slices of one read in this many threads; 1 decodes serially.
            (Pillow's PNG decoder holds the GIL for much of its work: measured gain is ~10%
            with 2 threads; TIFF/zlib decoding gains more.)
        name: description used in messages (e.g. the glob pattern).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        drop_channel: bool = False,
        threads: int = 1,
        name: str | None = None,
    ):
        self.paths = [os.fspath(p) for p in paths]
        if name is None:
            name = _describe_stack(self.paths)
        self.path = name
        shape, dtype = check_slices(self.paths, name)
        stored = (len(self.paths),) + shape
        self.layout = AxisLayout("zyx" if len(shape) == 2 else "zyxc", stored, drop_channel)
        self._dtype = dtype
        self.threads = max(1, int(threads))

    def _open(self) -> tuple[Any, Any]:
        reader = SliceStackReader(self.paths, self.layout.stored_shape, self._dtype, self.threads)
        return reader, reader
