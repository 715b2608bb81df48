"""Cellpose diffusion flows (target '7'): for every instance, the direction of steepest ascent
of a heat diffusion from its centre.

Per z slice and per instance (Stringer et al., Nature Methods 2021; PyTC's ``seg2diffgrads``):

1. The centre is the instance pixel nearest to the median (y, x) of its pixels (the first in
   row-major order on ties), so it always lies inside the instance, even for a ring.
2. Diffusion: ``T = 0``; ``n = 2 * (h + 1 + w + 1)`` times (h, w: the instance's bounding-box
   size), add 1 at the centre, then replace every instance pixel by the mean over its 3 x 3
   window (9 values) of ``T``, where pixels outside the instance count as 0.
3. ``T = log(1 + T)``; the flow is the central difference ``(T[y+1, x] - T[y-1, x],
   T[y, x+1] - T[y, x-1])`` (outside pixels 0), divided by its length: a unit vector pointing
   towards the centre, or (0, 0) where the difference vanishes (a 1-pixel instance, a centre
   on a symmetry axis). Background is (0, 0).

Difference from PyTC v1: PyTC runs the diffusion of all instances of a slice together for the
iteration count of the largest one and reads the neighbouring instance's density at borders.
Here each instance diffuses on its own for its own count (as Cellpose's CPU code does) and
sees only itself, so the flows of touching instances do not depend on each other.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["diffusion_flows", "slice_flows"]

# (dy, dx) of the 3 x 3 window, centre first
_WINDOW = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def _instance_flow(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flows of one instance given as a boolean crop ``(h, w)`` (its bounding box).

    Returns ``(ys, xs, dy, dx)``: the instance's pixels in the crop and their unit flows.
    """
    h, w = mask.shape
    padded = np.pad(mask, 1)
    ys, xs = np.nonzero(padded)  # row-major order
    ymed, xmed = np.median(ys), np.median(xs)
    c = int(np.argmin((xs - xmed) ** 2 + (ys - ymed) ** 2))
    width = w + 2
    flat = ys * width + xs
    nb = np.stack([(ys + dy) * width + (xs + dx) for dy, dx in _WINDOW])  # (9, npix)
    inside = padded.ravel()[nb]
    t = np.zeros(padded.size, np.float64)
    centre = flat[c]
    for _ in range(2 * ((h + 1) + (w + 1))):
        t[centre] += 1.0
        t[flat] = np.where(inside, t[nb], 0.0).sum(axis=0) / 9.0
    t = np.log1p(t)
    dy = t[nb[2]] - t[nb[1]]
    dx = t[nb[4]] - t[nb[3]]
    norm = 1e-20 + np.sqrt(dy * dy + dx * dx)
    return ys - 1, xs - 1, dy / norm, dx / norm


def slice_flows(seg2d: np.ndarray) -> np.ndarray:
    """Flows ``(2, y, x)`` float32 (dy, dx) of a 2D id image ``(y, x)`` (0 = background)."""
    out = np.zeros((2, *seg2d.shape), np.float32)
    if not seg2d.any():
        return out
    _, compact = np.unique(seg2d, return_inverse=True)  # 0 stays 0: background is the minimum
    compact = compact.reshape(seg2d.shape)
    for i, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is None:
            continue
        ys, xs, dy, dx = _instance_flow(compact[box] == i)
        ys = ys + box[0].start
        xs = xs + box[1].start
        out[0, ys, xs] = dy
        out[1, ys, xs] = dx
    return out


def diffusion_flows(seg: np.ndarray, with_mask: bool = False) -> np.ndarray:
    """Target '7' of an id volume ``(z, y, x)``, computed slice by slice.

    Returns ``(2, z, y, x)`` float32 (dy, dx), or ``(3, z, y, x)`` with the binary foreground
    ``seg > 0`` as the third channel when ``with_mask`` ('7-0').
    """
    if seg.ndim != 3:
        raise ValueError(f"diffusion_flows expects (z, y, x), got shape {seg.shape}")
    if seg.size and seg.min() < 0:
        raise ValueError("diffusion_flows expects non-negative ids")
    flows = np.stack([slice_flows(s) for s in seg], axis=1) if seg.shape[0] else np.zeros(
        (2, *seg.shape), np.float32
    )
    if with_mask:
        return np.concatenate([flows, (seg > 0)[None].astype(np.float32)])
    return flows
