"""Blending weights for stitching overlapping window predictions (PyTC v1 formulas).

Each window's prediction is multiplied by a weight map that is large in the centre and small at
the border, summed into an accumulator together with the weights, and divided by the summed
weights at the end, so window borders (where convolutions see padding) count less.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geometry import Box

BLENDING_MODES = ("gaussian", "bump")

_FLOOR = 1e-4  # keeps every weight positive, so each covered voxel gets a defined value
_SIGMA = 0.2


def _gaussian_axis(n: int) -> np.ndarray:
    """Squared normalised coordinate along one axis: ``linspace(-1, 1, n) ** 2``.

    An axis of one voxel (the z axis of a 2D window) has coordinate 0 (its centre). PyTC uses
    ``linspace(-1, 1, 1) == [-1]`` there, which scales the Gaussian by ``exp(-12.5)`` and lets the
    ``1e-4`` floor dominate, i.e. nearly uniform 2D blending; we keep the intended profile.
    """
    if n == 1:
        return np.zeros(1)
    return np.linspace(-1.0, 1.0, n) ** 2


def _bump_axis(n: int) -> np.ndarray:
    """``-(t (1 - t)) ** -1.5`` at the interior points ``t`` of ``linspace(0, 1, n + 2)``."""
    t = np.linspace(0.0, 1.0, n + 2)[1:-1]
    return -((t * (1.0 - t)) ** -1.5)


def blending_profiles(shape: Sequence[int], mode: str = "gaussian") -> list[np.ndarray]:
    """Per-axis float64 factors ``p_a`` with ``weights = 1e-4 + p_z (x) p_y (x) p_x``.

    Both PyTC maps separate: gaussian ``exp(-sum c_a^2 / 2 s^2) = prod exp(-c_a^2 / 2 s^2)``;
    bump ``exp(sum f_a - max sum f_a) = prod exp(f_a - max f_a)``.
    """
    shape = tuple(int(n) for n in shape)
    if any(n <= 0 for n in shape):
        raise ValueError(f"blending shape must be positive, got {list(shape)}")
    if mode not in BLENDING_MODES:
        raise ValueError(f"INFERENCE.BLENDING must be one of {BLENDING_MODES}, got {mode!r}")
    if mode == "gaussian":
        return [np.exp(-_gaussian_axis(n) / (2 * _SIGMA**2)) for n in shape]
    return [np.exp(f - f.max()) for f in (_bump_axis(n) for n in shape)]


def _outer(factors: Sequence[np.ndarray]) -> np.ndarray:
    out = np.ones((), dtype=np.float64)
    for f in factors:
        out = np.multiply.outer(out, f)
    return out


def blending_weights(shape: Sequence[int], mode: str = "gaussian") -> np.ndarray:
    """Weight map of ``shape`` (the window *output* size, (z, y, x)), float32, all > 0.

    * 'gaussian': ``1e-4 + exp(-d^2 / (2 * 0.2^2))`` with ``d`` the Euclidean norm of the
      per-axis ``linspace(-1, 1, n)`` coordinates.
    * 'bump': ``1e-4 + exp(dd - max(dd))`` with ``dd = sum_axes -(t (1 - t))^-1.5`` and ``t`` the
      interior points of ``linspace(0, 1, n + 2)``.
    """
    return (_FLOOR + _outer(blending_profiles(shape, mode))).astype(np.float32)


class WeightSum:
    """Closed-form sum of the blending weights of all windows, over an output region.

    The window output starts form a product grid (per-axis start lists), so at voxel ``v``
    ``sum_w w(v) = 1e-4 * prod_a N_a(v_a) + prod_a G_a(v_a)`` with ``N_a`` the number of windows
    covering coordinate ``v_a`` along axis ``a`` and ``G_a`` the sum of their profile values
    there. This replaces a whole weight accumulator by ``3`` vectors.

    Args:
        region_shape: output region (z, y, x).
        starts: per axis, the output start of every window (region coordinates, may be < 0).
        output_size: window output size (z, y, x).
        mode: 'gaussian' | 'bump'.
    """

    def __init__(self, region_shape: Sequence[int], starts: Sequence[np.ndarray], output_size: Sequence[int], mode: str):
        profiles = blending_profiles(output_size, mode)
        self.counts: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []
        for length, axis_starts, profile in zip(region_shape, starts, profiles):
            count = np.zeros(int(length), dtype=np.float64)
            total = np.zeros(int(length), dtype=np.float64)
            n = len(profile)
            for s in np.asarray(axis_starts, dtype=np.int64):
                a, b = max(int(s), 0), min(int(s) + n, int(length))
                if a < b:
                    count[a:b] += 1
                    total[a:b] += profile[a - s : b - s]
            self.counts.append(count)
            self.sums.append(total)

    def block(self, box: Box) -> np.ndarray:
        """``sum_w w`` over ``box`` (region coordinates), float32 ``box.shape``; 0 = uncovered."""
        nz, ny, nx = (c[s].astype(np.float32) for c, s in zip(self.counts, box.slices()))
        gz, gy, gx = (g[s].astype(np.float32) for g, s in zip(self.sums, box.slices()))
        count_yx = np.multiply.outer(ny, nx)
        sum_yx = np.multiply.outer(gy, gx)
        out = np.empty(box.shape, dtype=np.float32)
        for z in range(box.shape[0]):  # one plane at a time: no block-sized temporaries
            np.multiply(count_yx, np.float32(_FLOOR) * nz[z], out=out[z])
            out[z] += gz[z] * sum_yx
        return out

    def inverse(self, box: Box, scale: float = 1.0) -> np.ndarray:
        """``scale / sum_w w`` over ``box``, float32; 0 where no window covers a voxel."""
        out = self.block(box)
        covered = [c[s] > 0 for c, s in zip(self.counts, box.slices())]
        if all(c.all() for c in covered):
            return np.divide(np.float32(scale), out, out=out)  # every voxel has weight > 0
        mask = np.multiply.outer(np.multiply.outer(covered[0], covered[1]), covered[2])
        np.divide(np.float32(scale), out, out=out, where=mask)
        out[~mask] = 0.0
        return out
