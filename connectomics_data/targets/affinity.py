"""Affinity targets ('2' and '2-z-y-x-ver').

An affinity channel for axis ``a`` and offset ``d`` is 1 at voxel ``p`` when two voxels ``d``
apart along ``a`` carry the same non-zero id, else 0. Channel order is (z, y, x); with
``do_2d`` only (y, x). Output ``(C, z, y, x)`` float32.

Border conventions (where the partner voxel falls outside the volume), each PyTC's own:

* '2' (``seg2aff_v0``, "replicate"): ``aff[p] = id(p) == id(p - 1) != 0``; on the first
  slice/row/column, where ``p - 1`` is outside, the channel equals the foreground ``id(p) != 0``.
* 'v1' (``seg2aff_v1``, 'edge' padding): ``aff[p] = id(p) == id(max(p - d, 0)) != 0``, i.e. the
  outside partner is the edge voxel. With ``d = 1`` this equals '2'.
* 'v2' (``seg2aff_v2``): centred, ``aff[p] = id(clamp(p - d)) == id(clamp(p + d)) != 0`` with
  indices clamped to the volume; ``p`` itself is not compared.
* 'pni' (``seg2aff_pni``): ``aff[p] = id(p) == id(p - d) != 0`` and 0 where ``p - d`` is outside
  (no border fill). PyTC asserts ``d < size``; here a larger ``d`` just gives a zero channel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["affinity"]


def _axis_affinity(seg: np.ndarray, axis: int, d: int, version: str, out: np.ndarray) -> None:
    """Write one affinity channel for ``axis`` / offset ``d >= 1`` into ``out`` (float32)."""
    n = seg.shape[axis]

    def sl(start: int | None, stop: int | None) -> tuple[slice, ...]:
        s = [slice(None)] * seg.ndim
        s[axis] = slice(start, stop)
        return tuple(s)

    if version == "v2":
        idx = np.arange(n)
        lo = np.take(seg, np.clip(idx - d, 0, n - 1), axis=axis)
        hi = np.take(seg, np.clip(idx + d, 0, n - 1), axis=axis)
        out[...] = (lo == hi) & (lo != 0)
        return
    k = min(d, n)  # voxels whose partner p - d lies outside
    if k < n:
        cur = seg[sl(d, None)]
        out[sl(d, None)] = (cur == seg[sl(None, n - d)]) & (cur != 0)
    head = seg[sl(None, k)]
    if version == "pni":
        out[sl(None, k)] = 0.0
    elif version == "nn" or version == "v1":
        edge = seg[sl(0, 1)]  # replicate: partner is the first voxel (for '2', p itself)
        out[sl(None, k)] = (head == edge) & (head != 0)
    else:  # pragma: no cover - versions are validated by the parser
        raise ValueError(f"unknown affinity version {version!r}")


def affinity(
    seg: np.ndarray,
    offsets: tuple[int, int, int] = (1, 1, 1),
    version: str = "nn",
    do_2d: bool = False,
) -> np.ndarray:
    """Affinity channels of an id volume.

    Args:
        seg: ``(z, y, x)`` integer ids.
        offsets: (dz, dy, dx), each >= 1 ('nn' uses (1, 1, 1)).
        version: 'nn' (code '2'), 'v1', 'v2' or 'pni'; see the module docstring.
        do_2d: only the in-plane channels (y, x); each slice is independent.

    Returns:
        ``(3, z, y, x)`` (or ``(2, z, y, x)`` with ``do_2d``) float32 of 0/1.
    """
    if seg.ndim != 3:
        raise ValueError(f"affinity expects (z, y, x), got shape {seg.shape}")
    axes = (1, 2) if do_2d else (0, 1, 2)
    out = np.empty((len(axes), *seg.shape), np.float32)
    for c, axis in enumerate(axes):
        d = 1 if version == "nn" else int(offsets[axis])
        _axis_affinity(seg, axis, d, version, out[c])
    return out
