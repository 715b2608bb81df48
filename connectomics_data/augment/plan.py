"""The fused coordinate map: every geometric transform of one call, as one map.

Coordinate chain (fixed order, whatever the order of the Compose list). An output voxel
``(z, y, x)`` of the ``input_size`` crop, with in-plane centred coordinates
``p = (y - (Y-1)/2, x - (X-1)/2)``, reads the sample at

1. ``p1 = P p``: flips, y-x transpose and multiples of 90 degrees (an exact permutation;
   ``P`` is a 2x2 matrix of 0 and +-1);
2. ``p2 = diag(s) R(theta) p1``: arbitrary-angle rotation and rescale about the centre
   (``s`` = sample voxels per output voxel, in [0.8, 1.25]);
3. ``p3 = p2 + d(p)``: elastic displacement, a smooth field defined on the output grid, in
   sample voxels, ``|d| <= Elastic.bound`` per component;
4. ``p4 = M_w p3 + t_w``: misalignment of sample slice ``w`` (a rotation ``M_w`` about the
   centre, or an integer translation ``t_w``);
5. sample voxel ``(z_index[z], c_y + p4_y, c_x + p4_x)``: ``z_index`` is an integer z map
   (central slices, minus the deleted sections of a missing-section draw, reversed by a
   z flip) and ``c`` the sample centre, aligned to the voxel grid of the permuted output.

In data terms (what PyTC's reverse-order application does): misalign, delete sections,
rescale, rotate, elastic, crop, flip. The z-x transpose (``DO_ZTRANS``) is applied to the
output afterwards, because it mixes z into the plane.

Every output slice reads one sample slice through one in-plane map, and all slices share the
map up to an integer translation, except for rotated misaligned slices (a second map). So a
:class:`WarpPlan` stores at most two ``(2, Y, X)`` maps, one integer translation and one source
slice per output slice; the dense ``(Z, Y, X, 2)`` map is :meth:`WarpPlan.coordinates`.

Map coordinates are rounded to multiples of ``2**-10`` voxel, so ``map + shift`` is exact in
float32 and every backend rounds to the same integer voxels (bit-identical masks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: coordinates are multiples of 1/QUANT voxel (exact in float32 for sample sizes below 8192)
QUANT = 1024.0


def rotation_matrix(theta: float) -> np.ndarray:
    """2x2 rotation of ``(y, x)`` vectors by ``theta`` radians (float64)."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]], dtype=np.float64)


#: y-x permutation matrices acting on centred ``(y, x)`` coordinates
FLIP_Y = np.array([[-1, 0], [0, 1]], dtype=np.int64)
FLIP_X = np.array([[1, 0], [0, -1]], dtype=np.int64)
TRANSPOSE = np.array([[0, 1], [1, 0]], dtype=np.int64)
ROT90 = np.array([[0, 1], [-1, 0]], dtype=np.int64)


@dataclass
class Misalign:
    """Misalignment of sample slices (window indices ``w``, the sample's z order).

    ``mode`` 'slip' affects slice ``idx`` only, 'translation' every slice ``>= idx``.
    Translation kind: affected slices move by ``shift1``, the others by ``shift0`` (integer
    ``(dy, dx)``). Rotation kind (``angle`` not None): affected slices rotate by ``angle``
    radians about the centre, the others stay.
    """

    idx: int
    mode: str
    shift0: tuple[int, int] = (0, 0)
    shift1: tuple[int, int] = (0, 0)
    angle: float | None = None

    def affected(self, w: np.ndarray) -> np.ndarray:
        return w == self.idx if self.mode == "slip" else w >= self.idx


@dataclass
class MapBuilder:
    """Collects the contributions of the geometric transforms of one call.

    ``out_shape`` is the output size ``(Z, Y, X)``; ``window_z`` the sample slices the chain
    spans (``Compose.sample_size[0]``).
    """

    out_shape: tuple[int, int, int]
    window_z: int
    perm: np.ndarray = field(default_factory=lambda: np.eye(2, dtype=np.int64))
    z_flip: bool = False
    zx_transpose: bool = False
    angle: float | None = None
    scale: tuple[float, float] | None = None
    field: np.ndarray | None = None  # (2, Y, X) float32, sample voxels
    deleted: tuple[int, ...] | None = None  # window indices of deleted sections
    misalign: Misalign | None = None

    def permute(self, matrix: np.ndarray) -> None:
        """Compose a y-x permutation applied to the output (``P <- P @ matrix``)."""
        self.perm = self.perm @ matrix

    def build(self, src_shape: tuple[int, int, int]) -> WarpPlan:
        """The plan for a sample of spatial shape ``src_shape`` (centred on it)."""
        Z, Y, X = self.out_shape
        Sz, Sy, Sx = (int(s) for s in src_shape)
        wz = self.window_z
        # ---- z map (window indices, then sample indices)
        if self.deleted:
            keep = np.setdiff1d(np.arange(wz), np.asarray(self.deleted, dtype=np.int64))
        else:
            k0 = (wz - Z) // 2
            keep = np.arange(k0, k0 + Z)
        if keep.size != Z:
            raise ValueError(f"z map has {keep.size} slices, expected {Z}")
        if self.z_flip:
            keep = keep[::-1]
        z_index = (Sz - wz) // 2 + keep
        # ---- misalignment per output slice
        shifts = np.zeros((Z, 2), dtype=np.int64)
        groups = np.zeros(Z, dtype=np.int64)
        mis_mats = [np.eye(2)]
        if self.misalign is not None:
            hit = self.misalign.affected(keep)
            if self.misalign.angle is None:
                shifts[:] = np.where(hit[:, None], self.misalign.shift1, self.misalign.shift0)
            elif hit.any():
                groups = hit.astype(np.int64)
                mis_mats.append(rotation_matrix(self.misalign.angle))
        # ---- in-plane maps
        P = self.perm
        swap = P[0, 1] != 0
        yp, xp = (X, Y) if swap else (Y, X)  # extent of the permuted window in sample y, x
        cy = (Sy - yp) // 2 + (yp - 1) / 2.0
        cx = (Sx - xp) // 2 + (xp - 1) / 2.0
        lin = np.eye(2)
        if self.angle is not None:
            lin = rotation_matrix(self.angle)
        if self.scale is not None:
            lin = np.diag(self.scale) @ lin
        A = lin @ P
        py = (np.arange(Y, dtype=np.float32) - np.float32((Y - 1) / 2.0))[:, None]
        px = (np.arange(X, dtype=np.float32) - np.float32((X - 1) / 2.0))[None, :]
        integral = (
            self.angle is None and self.scale is None and self.field is None and len(mis_mats) == 1
        )
        maps = []
        for M in mis_mats:
            MA = (M @ A).astype(np.float32)
            m = np.empty((2, Y, X), dtype=np.float32)
            for r, c in ((0, cy), (1, cx)):  # float32 is ample: the map is rounded to 2**-10
                np.add(np.float32(c) + MA[r, 0] * py, MA[r, 1] * px, out=m[r])
                if self.field is not None:
                    for k in (0, 1):
                        if M[r, k] == 1:
                            m[r] += self.field[k]
                        elif M[r, k] != 0:
                            m[r] += np.float32(M[r, k]) * self.field[k]
            if not integral:
                m *= np.float32(QUANT)
            np.rint(m, out=m)
            if not integral:
                m *= np.float32(1.0 / QUANT)  # a power of two: exact
            maps.append(m)
        return WarpPlan(
            src_shape=(Sz, Sy, Sx),
            out_shape=(Z, Y, X),
            z_index=z_index.astype(np.int64),
            shifts=shifts,
            groups=groups,
            maps=maps,
            integral=integral,
            zx_transpose=self.zx_transpose,
        )


@dataclass
class WarpPlan:
    """One call's fused map from output voxels to sample voxels.

    Attributes:
        src_shape: spatial sample shape ``(Sz, Sy, Sx)`` the plan reads.
        out_shape: spatial output shape ``(Z, Y, X)`` (before the z-x transpose).
        z_index: ``(Z,)`` int64, sample slice read by each output slice.
        shifts: ``(Z, 2)`` int64, integer ``(dy, dx)`` added to the map of each output slice.
        groups: ``(Z,)`` int64, which entry of ``maps`` each output slice uses.
        maps: list of ``(2, Y, X)`` float32 arrays: sample ``(y, x)`` of each output pixel,
            before the slice's shift (multiples of ``2**-10``; integers when ``integral``).
        integral: every coordinate is an integer (flips, 90 degree turns, shifts, z maps
            only): no interpolation, images are gathered exactly like masks.
        zx_transpose: swap the z and x axes of the output afterwards.
    """

    src_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    z_index: np.ndarray
    shifts: np.ndarray
    groups: np.ndarray
    maps: list[np.ndarray]
    integral: bool
    zx_transpose: bool = False
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def runs(self) -> list[tuple[int, int, int]]:
        """Maximal runs ``(z0, z1, group)`` of consecutive output slices sharing a map."""
        out = []
        z0 = 0
        Z = self.out_shape[0]
        for z in range(1, Z + 1):
            if z == Z or self.groups[z] != self.groups[z0]:
                out.append((z0, z, int(self.groups[z0])))
                z0 = z
        return out

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense form: ``z_index`` ``(Z,)`` int64 and ``coords`` ``(Z, Y, X, 2)`` float32
        (sample ``(y, x)`` per output voxel, shifts included). Memory: ``8 * Z * Y * X`` bytes."""
        Z, Y, X = self.out_shape
        coords = np.empty((Z, Y, X, 2), dtype=np.float32)
        for z in range(Z):
            m = self.maps[self.groups[z]]
            coords[z, ..., 0] = m[0] + np.float32(self.shifts[z, 0])
            coords[z, ..., 1] = m[1] + np.float32(self.shifts[z, 1])
        return self.z_index.copy(), coords

    def slice_offsets(self) -> np.ndarray:
        """``(Z,)`` int64 flat offsets of each output slice: sample slice plus integer shift."""
        _, Sy, Sx = self.src_shape
        return (self.z_index * Sy + self.shifts[:, 0]) * Sx + self.shifts[:, 1]

    def shift_range(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """Min and max ``(dy, dx)`` shift over the slices using map ``group``."""
        s = self.shifts[self.groups == group]
        if s.size == 0:
            return np.zeros(2, np.int64), np.zeros(2, np.int64)
        return s.min(axis=0), s.max(axis=0)
