"""Instance contour target ('4-bd_sz-do_bg'), computed in-plane for each z slice.

* ``do_bg = 1`` (PyTC's convolution path, e.g. '4-1-1' for MitoEM U-Net-BC): a voxel is an edge
  voxel when its two neighbours along y, or its two neighbours along x, carry different ids
  (PyTC convolves with [1, 0, -1] using symmetric borders, so on the first row the neighbours
  are row 0 and row 1). The edge map is then dilated with a ``(2*bd_sz+1)^2`` square. This
  marks instance/instance and instance/background borders. Note the edge is two voxels wide,
  so '4-1-1' gives four-voxel-wide contours.
* ``do_bg = 0`` (PyTC's im2col path): a voxel is contour when its ``(2*bd_sz+1)^2`` window
  (reflect-padded) holds two or more different *non-zero* ids: only borders between touching
  instances.

Output ``(1, z, y, x)`` float32 of 0/1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import compact_ids, nonzero_range

__all__ = ["instance_contour"]


def _edges_symmetric(seg: np.ndarray) -> np.ndarray:
    """Bool ``(z, y, x)``: neighbours along y or along x differ (symmetric borders)."""
    edge = np.zeros(seg.shape, bool)
    for axis in (1, 2):
        n = seg.shape[axis]
        if n < 2:
            continue  # both neighbours are the voxel itself
        a = np.moveaxis(seg, axis, 0)
        e = np.moveaxis(edge, axis, 0)
        e[1:-1] |= a[:-2] != a[2:]
        e[0] |= a[0] != a[1]
        e[-1] |= a[-2] != a[-1]
    return edge


def instance_contour(seg: np.ndarray, bd_sz: int = 1, do_bg: bool = True) -> np.ndarray:
    """Contour map of an id volume ``(z, y, x)``; see the module docstring.

    Returns ``(1, z, y, x)`` float32.
    """
    if seg.ndim != 3:
        raise ValueError(f"instance_contour expects (z, y, x), got shape {seg.shape}")
    t = 2 * bd_sz + 1
    if do_bg:
        edge = _edges_symmetric(seg).view(np.uint8)
        if bd_sz > 0:
            edge = ndimage.maximum_filter1d(edge, t, axis=1, mode="constant")
            edge = ndimage.maximum_filter1d(edge, t, axis=2, mode="constant")
        return edge[None].astype(np.float32)
    hi, lo = nonzero_range(compact_ids(seg)[0], (1, t, t))
    return ((hi != 0) & (hi != lo))[None].astype(np.float32)
