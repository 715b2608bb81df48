"""``.npy`` volumes, memory-mapped read-only (``np.load(mmap_mode='r')``) in the reading process."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...errors import VolumeError
from ..layout import layout_for_ndim, native_dtype
from ..lazy import READ_ERRORS, LazyArrayVolume, check_exists, wrap_error

NPY_EXTENSIONS = (".npy",)


NPY_MAGIC = b"\x93NUMPY"


def _load(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as err:
        raise wrap_error(path, "cannot open", err) from err
    if magic != NPY_MAGIC:
        raise VolumeError(f"{path}: not a .npy file (it does not start with {NPY_MAGIC!r})")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except READ_ERRORS as err:
        raise wrap_error(path, "cannot open as .npy", err) from err


class NpyVolume(LazyArrayVolume):
    """A ``.npy`` array ``(z, y, x)`` or ``(c, z, y, x)``, memory-mapped, dtype as stored.

    Only the pages of the requested box are touched; reads return copies (never views of the
    map). Pickling carries only the path, so workers map the file themselves.

    Args:
        path: the ``.npy`` file.
        allow_2d: accept a 2D ``(y, x)`` array as a ``(1, y, x)`` volume.
        drop_channel: average the channel axis of a 4D array to gray ``(z, y, x)``.
    """

    def __init__(
        self, path: str | os.PathLike, *, allow_2d: bool = False, drop_channel: bool = False
    ):
        self.path = check_exists(path)
        arr = _load(self.path)
        self.layout = layout_for_ndim(tuple(arr.shape), self.path, allow_2d, drop_channel)
        self._dtype = native_dtype(arr.dtype, self.path)
        del arr

    def _open(self) -> tuple[Any, Any]:
        return _load(self.path), None  # the map closes when the array is collected
