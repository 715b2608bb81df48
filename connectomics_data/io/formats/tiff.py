"""TIFF stacks (tifffile): memory-mapped when possible, else read page by page, else loaded.

A multi-page TIFF is a ``(z, y, x)`` stack. Multi-channel stacks follow PyTC's reading of
``imageio.volread`` output, ``(z, c, y, x) -> (c, z, y, x)``, using the axes tifffile reports:
``CZYX`` stays, ``ZCYX`` (ImageJ hyperstacks) and unlabelled 4D (``QQYX``, as imageio writes)
are transposed, ``ZYXS`` (RGB pages) moves the samples first. 16- and 32-bit data keep their dtype.

Strategies, chosen from the file's metadata:

* ``memmap``: uncompressed contiguous data (``tifffile.memmap``); reads touch only the box.
* ``pages``: one page per (z[, c]) index, e.g. compressed stacks; a read decodes only the
  pages of the box's z range (whole pages: TIFF compression is per page or tile).
* ``load``: anything else; the whole series is decoded on the first read in each process.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import tifffile

from ...errors import ConnectomicsDataError, VolumeError
from ..layout import AxisLayout, native_dtype, raise_2d
from ..lazy import READ_ERRORS, LazyArrayVolume, check_exists, wrap_error

TIFF_EXTENSIONS = (".tif", ".tiff")
TIFF_STRATEGIES = ("auto", "memmap", "pages", "load")


def layout_axes_from_tiff(axes: str, path: str) -> str:
    """Our axis letters (``c z y x``) for tifffile's series axes (e.g. ``'ZCYX'`` -> ``'zcyx'``).

    The last two non-sample axes are y and x. 'S' (samples, e.g. RGB) and 'C' are channels;
    any other leading axis ('Z', 'Q', 'I', 'T', ...) is z. A 3D series is a z-stack unless its
    samples come last ('YXS'); an unlabelled 4D series is read as ``(z, c, y, x)`` like PyTC.
    """
    n = len(axes)
    if n == 2:
        return "yx"
    if n == 3:
        # Planar 'SYX' is how tifffile stores any (3|4, y, x) array written without
        # photometric='minisblack'; like PyTC (imageio) we read it as a 3- or 4-slice stack.
        return "yxc" if axes[2] == "S" else "zyx"
    if n == 4:
        if axes[3] == "S":
            return "zyxc"
        if axes[0] in "CS" and axes[1] not in "CS":
            return "czyx"
        return "zcyx"
    raise VolumeError(
        f"{path}: TIFF series has {n} axes {axes!r}; expected (z, y, x), (c, z, y, x) or "
        f"(z, c, y, x)"
    )


def open_tiff(path: str) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except READ_ERRORS as err:
        raise wrap_error(path, "cannot open as TIFF", err) from err


class TiffPageReader:
    """Array-like view of a TIFF series stored as one page per leading index.

    ``reader[index]`` (a tuple of slices over the series axes) decodes only the pages the
    leading slices select and crops each page with the trailing slices.
    """

    def __init__(self, tif: tifffile.TiffFile, path: str, shape: tuple[int, ...], page_ndim: int):
        self.tif = tif
        self.path = path
        self.pages = tif.series[0].pages
        self.shape = shape
        self.lead_shape = shape[: len(shape) - page_ndim]
        self.page_shape = shape[len(shape) - page_ndim :]
        self.dtype = tif.series[0].dtype

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        nlead = len(self.lead_shape)
        lead, trail = index[:nlead], index[nlead:]
        ranges = [range(*s.indices(n)) for s, n in zip(lead, self.lead_shape)]
        trail_shape = tuple(len(range(*s.indices(n))) for s, n in zip(trail, self.page_shape))
        out = np.empty(tuple(len(r) for r in ranges) + trail_shape, dtype=self.dtype)
        if out.size == 0:
            return out
        flat = out.reshape((-1,) + trail_shape)
        for i, key in enumerate(itertools.product(*ranges)):
            k = int(np.ravel_multi_index(key, self.lead_shape))
            page = self.pages[k].asarray()
            if page.shape != self.page_shape:
                raise VolumeError(
                    f"{self.path}: page {k} has shape {list(page.shape)}, expected "
                    f"{list(self.page_shape)}"
                )
            flat[i] = page[trail]
        return out


class TiffVolume(LazyArrayVolume):
    """A TIFF stack ``(z, y, x)`` or ``(c, z, y, x)`` (see the module doc for axis rules).

    Args:
        path: the ``.tif``/``.tiff`` file.
        allow_2d: accept a single 2D image as a ``(1, y, x)`` volume (RGB: ``(3, 1, y, x)``).
        drop_channel: average the channels (RGB samples or C) to gray.
        strategy: 'auto' (best the file allows), 'memmap', 'pages' or 'load'.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        allow_2d: bool = False,
        drop_channel: bool = False,
        strategy: str = "auto",
    ):
        self.path = check_exists(path)
        if strategy not in TIFF_STRATEGIES:
            raise ValueError(f"strategy must be one of {TIFF_STRATEGIES}, got {strategy!r}")
        with open_tiff(self.path) as tif:
            try:
                if not tif.series:
                    raise VolumeError(f"{self.path}: the TIFF file holds no images")
                series = tif.series[0]
                axes, shape, dtype = series.axes, tuple(series.shape), series.dtype
                contiguous = series.dataoffset is not None
                page_shape = tuple(series.keyframe.shape)
                npages = len(series.pages)
            except ConnectomicsDataError:
                raise
            except READ_ERRORS as err:
                raise wrap_error(self.path, "cannot read the TIFF metadata", err) from err
        letters = layout_axes_from_tiff(axes, self.path)
        if "z" not in letters and not allow_2d:
            raise_2d(self.path, shape)
        self.layout = AxisLayout(letters, shape, drop_channel)
        self._dtype = native_dtype(dtype, self.path)
        self.tiff_axes = axes
        nlead = len(shape) - len(page_shape)
        pages_ok = (
            nlead >= 0
            and shape[nlead:] == page_shape
            and npages == int(np.prod(shape[:nlead], dtype=np.int64))
        )
        possible = {"memmap": contiguous, "pages": pages_ok, "load": True}
        if strategy == "auto":
            strategy = next(s for s in ("memmap", "pages", "load") if possible[s])
        elif not possible[strategy]:
            raise VolumeError(
                f"{self.path}: TIFF strategy {strategy!r} is not possible for this file"
            )
        self.strategy = strategy
        self._page_ndim = len(page_shape)

    def _open(self) -> tuple[Any, Any]:
        if self.strategy == "memmap":
            try:
                return tifffile.memmap(self.path, mode="r", series=0), None
            except READ_ERRORS as err:
                raise wrap_error(self.path, "cannot memory-map the TIFF", err) from err
        tif = open_tiff(self.path)
        if self.strategy == "pages":
            tif.filehandle.set_lock(True)  # page reads seek a shared handle: serialise threads
            return TiffPageReader(tif, self.path, self.layout.stored_shape, self._page_ndim), tif
        with tif:
            try:
                return tif.series[0].asarray(), None
            except READ_ERRORS as err:
                raise wrap_error(self.path, "cannot decode the TIFF", err) from err

    def __repr__(self) -> str:
        return (
            f"TiffVolume(path={self.path!r}, axes={self.tiff_axes!r}, strategy={self.strategy!r}, "
            f"shape={list(self.shape)}, dtype={self.dtype.name})"
        )
