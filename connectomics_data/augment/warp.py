"""Apply a :class:`~.plan.WarpPlan` to numpy arrays (the default CPU path).

* :func:`warp_linear` (for 'img' targets): bilinear in-plane interpolation, float32 out.
* :func:`warp_nearest` (for 'mask' targets): integer gather of the nearest voxel; the output
  holds only values of the input, in the input dtype (uint64 ids above 2**53 included: no
  value ever passes through floating point).

Both read, per output slice, one sample slice (``plan.z_index``) through an in-plane map that
all slices of a group share up to an integer shift. So the flat source indices and the
bilinear weights are computed once per group (``Y * X`` values) and each slice only adds its
offset: the per-voxel cost is four gathers and a weighted sum (linear) or one gather (nearest).

Inputs are ``(*lead, Sz, Sy, Sx)`` arrays (3D, or channel-first 4D); leading axes are carried
through. The z-x transpose is left to :func:`finish_zx`. Memory: the output, plus one int64 index array of the output's spatial size.
"""

from __future__ import annotations

import numpy as np

from .plan import WarpPlan


def _lead_iter(src: np.ndarray, plan: WarpPlan) -> tuple[np.ndarray, tuple[int, ...]]:
    if tuple(src.shape[-3:]) != tuple(plan.src_shape):
        raise ValueError(
            f"array spatial shape {tuple(src.shape[-3:])} differs from the plan's {plan.src_shape}"
        )
    lead = tuple(src.shape[:-3])
    flat = np.ascontiguousarray(src).reshape((-1, int(np.prod(plan.src_shape))))
    return flat, lead


Layout = tuple[bool, bool, bool]
ROW_MAJOR: Layout = (False, False, False)


def _layout(m: np.ndarray) -> Layout:
    """Traversal of a ``(2, Y, X)`` map: ``(transposed, reverse rows, reverse columns)``.

    Gathers are fastest when consecutive entries read neighbouring sample voxels in
    ascending order (one cache line serves many, the prefetchers follow). So the tables walk
    the output along whichever axis moves the sample's x most (transposed when that is the
    output's y: quarter turns, transposes, rotations near 90 degrees), rows and columns in the
    direction of increasing sample y and x (reversed for flips); each slice is put back in
    order while it is in cache.
    """
    Y, X = m.shape[1:]
    x_along_x = float(m[1, Y // 2, -1] - m[1, Y // 2, 0])
    x_along_y = float(m[1, -1, X // 2] - m[1, 0, X // 2])
    y_along_x = float(m[0, Y // 2, -1] - m[0, Y // 2, 0])
    y_along_y = float(m[0, -1, X // 2] - m[0, 0, X // 2])
    if abs(x_along_x) >= abs(x_along_y):
        return False, y_along_y < 0, x_along_x < 0
    return True, y_along_x < 0, x_along_y < 0


def _traverse(plan: WarpPlan, group: int) -> tuple[np.ndarray, Layout]:
    """The group's map in traversal layout ``(2, A, B)`` and its layout."""
    m = plan.maps[group]
    layout = _layout(m)
    if layout == ROW_MAJOR:
        return m, layout
    return np.ascontiguousarray(_view(m, layout)), layout


def _view(a: np.ndarray, layout: Layout) -> np.ndarray:
    """``a`` ``(..., Y, X)`` seen in traversal layout (a strided view)."""
    v = a.swapaxes(-1, -2) if layout[0] else a
    if layout[1]:
        v = v[..., ::-1, :]
    if layout[2]:
        v = v[..., ::-1]
    return v


def _nearest_base(plan: WarpPlan, group: int) -> tuple[np.ndarray, Layout]:
    key = ("nearest", group)
    got = plan._cache.get(key)
    if got is None:
        _, Sy, Sx = plan.src_shape
        lo, hi = plan.shift_range(group)
        m, layout = _traverse(plan, group)
        half = np.float32(0.5)
        iy = np.floor(m[0] + half).astype(np.int64)
        ix = np.floor(m[1] + half).astype(np.int64)
        # defensive clip: the sample size bound keeps every coordinate inside already
        np.clip(iy, -lo[0], Sy - 1 - hi[0], out=iy)
        np.clip(ix, -lo[1], Sx - 1 - hi[1], out=ix)
        got = (iy * Sx + ix, layout)
        plan._cache[key] = got
    return got


def _linear_base(plan: WarpPlan, group: int, scale: float) -> tuple[np.ndarray, np.ndarray, Layout]:
    key = ("linear", group, scale)
    got = plan._cache.get(key)
    if got is None:
        _, Sy, Sx = plan.src_shape
        lo, hi = plan.shift_range(group)
        m, layout = _traverse(plan, group)
        iy = np.floor(m[0]).astype(np.int64)
        ix = np.floor(m[1]).astype(np.int64)
        # keep the 2x2 neighbourhood inside: a coordinate on the last row uses weight 1 on it
        np.clip(iy, -lo[0], max(Sy - 2 - hi[0], -lo[0]), out=iy)
        np.clip(ix, -lo[1], max(Sx - 2 - hi[1], -lo[1]), out=ix)
        wy = m[0] - iy.astype(np.float32)
        wx = m[1] - ix.astype(np.float32)
        s = np.float32(scale)
        w = np.empty((4,) + wy.shape, dtype=np.float32)
        w[0] = (1 - wy) * (1 - wx) * s
        w[1] = (1 - wy) * wx * s
        w[2] = wy * (1 - wx) * s
        w[3] = wy * wx * s
        got = (iy * Sx + ix, w, layout)
        plan._cache[key] = got
    return got


def warp_nearest(src: np.ndarray, plan: WarpPlan) -> np.ndarray:
    """Nearest-voxel warp of ``src`` ``(*lead, Sz, Sy, Sx)`` -> ``(*lead, Z, Y, X)``, same dtype.

    Exact: every output value is copied from the input (no arithmetic on values).
    """
    flat, lead = _lead_iter(src, plan)
    Z, Y, X = plan.out_shape
    out = np.empty((flat.shape[0], Z, Y, X), dtype=src.dtype)
    offsets = plan.slice_offsets()
    for z0, z1, g in plan.runs():
        base, layout = _nearest_base(plan, g)
        idx = np.empty(base.shape, dtype=np.int64)  # slice by slice: indices stay in cache
        got = np.empty(base.shape, dtype=flat.dtype)
        for z in range(z0, z1):
            np.add(base, offsets[z], out=idx)
            for c in range(flat.shape[0]):
                if layout == ROW_MAJOR:
                    np.take(flat[c], idx, out=out[c, z])
                else:
                    np.take(flat[c], idx, out=got)
                    np.copyto(_view(out[c, z], layout), got)
    return out.reshape(lead + (Z, Y, X))


def warp_linear(src: np.ndarray, plan: WarpPlan, scale: float = 1.0) -> np.ndarray:
    """Bilinear in-plane warp of ``src`` ``(*lead, Sz, Sy, Sx)`` -> float32 ``(*lead, Z, Y, X)``.

    Output values are ``scale * interpolated value`` (``scale = 1/255`` turns uint8 into
    [0, 1] in the same pass). When ``plan.integral`` the result is an exact gather.
    """
    flat, lead = _lead_iter(src, plan)
    Z, Y, X = plan.out_shape
    out = np.empty((flat.shape[0], Z, Y, X), dtype=np.float32)
    offsets = plan.slice_offsets()
    s = np.float32(scale)
    if plan.integral:
        for z0, z1, g in plan.runs():
            base, layout = _nearest_base(plan, g)
            idx = np.empty(base.shape, dtype=np.int64)
            got = np.empty(base.shape, dtype=flat.dtype)
            for z in range(z0, z1):
                np.add(base, offsets[z], out=idx)
                for c in range(flat.shape[0]):
                    np.take(flat[c], idx, out=got)
                    np.multiply(got, s, out=_view(out[c, z], layout))
        return out.reshape(lead + (Z, Y, X))
    Sx = plan.src_shape[2]
    for z0, z1, g in plan.runs():
        base, w, layout = _linear_base(plan, g, float(scale))
        # slice by slice: the index, gather and product buffers stay in cache
        idx = np.empty(base.shape, dtype=np.int64)
        got = np.empty(base.shape, dtype=flat.dtype)
        prod = np.empty(base.shape, dtype=np.float32)
        acc = None if layout == ROW_MAJOR else np.empty(base.shape, dtype=np.float32)
        for c in range(flat.shape[0]):
            f = flat[c]
            neighbours = (f[1:], f[Sx:], f[Sx + 1 :])
            for z in range(z0, z1):
                np.add(base, offsets[z], out=idx)
                o = out[c, z] if acc is None else acc
                np.take(f, idx, out=got)
                np.multiply(got, w[0], out=o)
                for k in range(3):
                    np.take(neighbours[k], idx, out=got)
                    np.multiply(got, w[k + 1], out=prod)
                    o += prod
                if acc is not None:
                    np.copyto(_view(out[c, z], layout), acc)
    return out.reshape(lead + (Z, Y, X))


def finish_zx(out: np.ndarray, plan: WarpPlan) -> np.ndarray:
    """Apply the plan's z-x transpose (``DO_ZTRANS``) to a warped ``(*lead, Z, Y, X)`` array.

    Kept apart from the warps so per-section transforms can run on true sections first.
    """
    if plan.zx_transpose:
        return np.ascontiguousarray(np.swapaxes(out, -3, -1))
    return out
