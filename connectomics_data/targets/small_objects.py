"""Small-object target ('3-size_thres-zratio-x'), PyTC's ``seg_to_small_seg``.

A voxel is marked when, in at least one of its three axis-aligned planes, its 2D connected
component (same id, 8-connectivity) is small: fewer than ``size_thres`` voxels in its xy plane,
or fewer than ``size_thres // zratio`` voxels in its xz or yz plane (z is coarser, so those
planes hold fewer voxels per object).

All planes of one orientation are labelled in a single ``cc3d`` call: the planes are stacked
with an all-zero plane between neighbours, so 26-connectivity in 3D is exactly 8-connectivity
within each plane. Output ``(1, z, y, x)`` float32 of 0/1.
"""

from __future__ import annotations

import cc3d
import numpy as np

__all__ = ["small_objects"]


def _small_in_planes(seg: np.ndarray, axis: int, thres: int) -> np.ndarray:
    """Bool ``(z, y, x)``: voxels whose CC in the planes normal to ``axis`` has < thres voxels."""
    if thres <= 1:
        return np.zeros(seg.shape, bool)  # every component has >= 1 voxel
    planes = np.moveaxis(seg, axis, 0)
    n = planes.shape[0]
    stacked = np.zeros((2 * n - 1, *planes.shape[1:]), seg.dtype)
    stacked[::2] = planes
    cc = cc3d.connected_components(stacked, connectivity=26)[::2]
    counts = np.bincount(cc.ravel())
    small = counts < thres
    small[0] = False
    return np.moveaxis(small[cc], 0, axis)


def small_objects(seg: np.ndarray, size_thres: int, zratio: int, do_2d: bool = False) -> np.ndarray:
    """Small-object mask of an id volume ``(z, y, x)``; returns ``(1, z, y, x)`` float32.

    With ``do_2d`` the slices are independent 2D samples and only the xy planes count.
    """
    if seg.ndim != 3:
        raise ValueError(f"small_objects expects (z, y, x), got shape {seg.shape}")
    mask = _small_in_planes(seg, 0, size_thres)
    if do_2d:
        return mask[None].astype(np.float32)
    thres_z = size_thres // zratio
    mask |= _small_in_planes(seg, 1, thres_z)
    mask |= _small_in_planes(seg, 2, thres_z)
    return mask[None].astype(np.float32)
