"""Label preprocessing: validation, id reduction (REDUCE_LABEL), erosion and dilation.

Labels are integer id volumes ``(z, y, x)`` (or ``(y, x)`` slices for 2D models); 0 is
background. Erosion and dilation work in-plane (each z slice on its own), as in PyTC.
"""

from __future__ import annotations

import fastremap
import numpy as np
from scipy import ndimage

__all__ = ["as_label_volume", "compact_ids", "dilate_label", "erode_label", "reduce_label"]


def _integer_ids(arr: np.ndarray, name: str) -> np.ndarray:
    """bool -> uint8 view; integral floats -> int64; non-native byte order -> native.

    Raises ValueError for other dtypes, non-integral floats and negative ids.
    """
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} of dtype {arr.dtype} holds non-integral values; ids expected")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if not arr.dtype.isnative:  # e.g. big-endian TIFF data; the C extensions need native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds negative values (min {arr.min()}); ids must be >= 0")
    return arr


def as_label_volume(label: np.ndarray, name: str = "label") -> np.ndarray:
    """Validate an id label and return it as a 3D integer array ``(z, y, x)``.

    A 2D label ``(y, x)`` becomes a ``(1, y, x)`` view. Native integer labels are returned as
    they are (no copy); bool is viewed as uint8; float labels (PyTC casts crops to float32) must
    hold integral values and are cast to int64; non-native byte order is converted.

    Raises:
        ValueError: wrong ndim, non-numeric dtype, non-integral float values or negative ids.
    """
    arr = np.asarray(label)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be (z, y, x) or (y, x), got shape {arr.shape}")
    arr = _integer_ids(arr, name)
    return arr[None] if arr.ndim == 2 else arr


def reduce_label(label: np.ndarray) -> np.ndarray:
    """Relabel the non-zero ids to 1..N in **ascending id order**; 0 stays 0.

    Sorted order (PyTC's ``relabel``) makes the result independent of the crop's orientation,
    unlike first-appearance order. The output has the smallest unsigned dtype that holds N
    (uint8 up to 255 ids), so a float32 cast later is exact; PyTC sized it by the original
    maximum id instead. Any shape; unchanged. Cost: one ``fastremap.renumber`` pass plus one
    table lookup on the small dtype.
    """
    arr = _integer_ids(np.asarray(label), "label")
    if arr.size == 0:
        return np.zeros(arr.shape, np.uint8)
    renum, mapping = fastremap.renumber(arr, preserve_zero=True, in_place=False)
    old = np.fromiter(mapping.keys(), dtype=np.int64 if arr.dtype.kind == "i" else np.uint64)
    new = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
    keep = old != 0
    old, new = old[keep], new[keep]
    n = len(old)
    if n == 0:
        return np.zeros(arr.shape, np.uint8)
    out_dtype = np.min_scalar_type(n)
    table = np.zeros(int(new.max()) + 1, dtype=out_dtype)
    table[new[np.argsort(old, kind="stable")]] = np.arange(1, n + 1, dtype=out_dtype)
    return table[renum]


def _window(r: int, ndim: int) -> tuple[int, ...]:
    t = 2 * r + 1
    return (1, t, t) if ndim == 3 else (t, t)


def compact_ids(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Ids safe for scipy.ndimage filters, which run on float64 line buffers (so 64-bit ids
    above 2**53 would round). 1- to 4-byte ids are returned as they are with ``None``;
    8-byte ids are renumbered in ascending order to 1..N (:func:`reduce_label`, <= uint32 for
    any realistic N) and returned with the table ``ids`` such that ``ids[compact] == seg``.
    Ascending order keeps "larger id wins" comparisons unchanged.
    """
    if seg.dtype.itemsize < 8:
        return seg, None
    ids = fastremap.unique(seg)  # sorted
    return reduce_label(seg), np.concatenate([np.zeros(1, seg.dtype), ids[ids != 0]])


def nonzero_range(seg: np.ndarray, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(max, min over non-zero ids) in each reflect-padded window; min is the dtype's maximum
    where the window holds no id. ``seg`` must hold ids < 2**53 (see :func:`compact_ids`)."""
    hi = ndimage.maximum_filter(seg, size=size, mode="mirror")
    top = np.iinfo(seg.dtype).max  # >= every id, so it never wins the minimum over ids
    lo = ndimage.minimum_filter(np.where(seg == 0, top, seg), size=size, mode="mirror")
    return hi, lo


def erode_label(label: np.ndarray, radius: int) -> np.ndarray:
    """PyTC ``seg_widen_border`` (Kisuk Lee's thesis A.1.4): set to 0 every voxel whose
    ``(2r+1) x (2r+1)`` in-plane window holds more than one *non-zero* id.

    The window is reflect-padded at the borders (``np.pad`` 'reflect'), as in PyTC. Zero
    inside the window does not count as an id, so instance/background borders are untouched.
    Input ``(z, y, x)`` or ``(y, x)`` integer ids; returns a new array of the same dtype.
    ``radius`` 0 returns a copy.
    """
    arr = _integer_ids(np.asarray(label), "label")
    if radius <= 0:
        return arr.copy()
    hi, lo = nonzero_range(compact_ids(arr)[0], _window(radius, arr.ndim))
    return np.where(hi == lo, arr, 0).astype(arr.dtype, copy=False)


def dilate_label(label: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation (maximum filter) of the ids with a ``(1, 2r+1, 2r+1)`` window.

    Where instances meet, the larger id wins, as in PyTC (skimage ``dilation``). Voxels
    outside the volume are ignored. Returns a new array of the same dtype; ``radius`` 0 copies.
    """
    arr = _integer_ids(np.asarray(label), "label")
    if radius <= 0:
        return arr.copy()
    compact, ids = compact_ids(arr)
    out = ndimage.maximum_filter(compact, size=_window(radius, arr.ndim), mode="nearest")
    return out if ids is None else ids[out]
