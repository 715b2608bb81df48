"""Geometric transforms: they only contribute to the fused map of :mod:`.plan`.

Each transform declares how far it can move a point (:meth:`GeometricTransform.reach`), so
:class:`~.compose.Compose` can compute the sample size that keeps every coordinate of the map
inside the sample (no padding is ever sampled). The bounds, per in-plane axis, for a point at
most ``(hy, hx)`` voxels from the centre:

* Flip / Rotate(rot90): a y-x swap is possible, so both extents become ``max(hy, hx)``.
* Rotate (any angle): ``max_theta |cos| hy + |sin| hx = sqrt(hy^2 + hx^2)`` on both axes.
* Rescale: times ``1 / low`` (= 1.25): the sample voxels per output voxel.
* Elastic: plus :attr:`Elastic.bound` (the field is clipped to it).
* MisAlignment: plus ``DISPLACEMENT / 2`` (integer shifts of at most ``DISPLACEMENT // 2``; the
  rotation angle is limited so no point moves further than ``DISPLACEMENT / 2``).
* MissingSection: ``NUM_SECTION`` extra slices in z.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft

from ..errors import ConfigError
from .base import ChainContext, GeometricTransform
from .plan import FLIP_X, FLIP_Y, ROT90, TRANSPOSE, MapBuilder, Misalign

# ----------------------------------------------------------------------------- stages
STAGE_ROT90, STAGE_FLIP, STAGE_AFFINE, STAGE_ELASTIC, STAGE_MISALIGN, STAGE_ZMAP = range(6)


# ----------------------------------------------------------------------------- rotate
@dataclass(frozen=True)
class RotateParams:
    """``k`` quarter turns (rot90 mode) or ``angle`` in radians (any-angle mode)."""

    k: int = 0
    angle: float | None = None


class Rotate(GeometricTransform):
    """Rotation in the y-x plane about the centre.

    ``rot90=True``: ``k`` quarter turns, ``k`` uniform in {0, 1, 2, 3}; an exact index
    permutation (no interpolation), also for non-square y-x (the sample window is taken
    transposed). ``rot90=False``: an angle uniform in [0, 2 pi), resampled in the fused warp;
    the sample grows by ``sqrt(hy^2 + hx^2)`` (PyTC: a fixed 1.42 ratio, and only correct for
    square inputs).
    """

    name = "ROTATE"

    def __init__(self, rot90: bool = True, p: float = 1.0, skip: Iterable[str] = ()):
        super().__init__(p, skip)
        self.rot90 = bool(rot90)

    @property
    def stage(self) -> int:  # type: ignore[override]
        return STAGE_ROT90 if self.rot90 else STAGE_AFFINE

    @property
    def swaps_yx(self) -> bool:  # type: ignore[override]
        return self.rot90

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> RotateParams:
        if self.rot90:
            return RotateParams(k=int(rng.integers(0, 4)))
        return RotateParams(angle=float(rng.uniform(0.0, 2.0 * math.pi)))

    def reach(self, half, ctx):
        if self.rot90:
            return half
        r = math.hypot(*half)
        return (r, r)

    def contribute(self, params: RotateParams, builder: MapBuilder) -> None:
        if params.angle is not None:
            builder.angle = params.angle
        elif params.k % 4:
            builder.permute(np.linalg.matrix_power(ROT90, params.k % 4))


# ----------------------------------------------------------------------------- rescale
@dataclass(frozen=True)
class RescaleParams:
    """Sample voxels per output voxel along y and x (>1 zooms out, <1 zooms in)."""

    sy: float
    sx: float


class Rescale(GeometricTransform):
    """Zoom in y-x about the centre by ``1 / U(low, high)`` per axis (PyTC: 0.8, 1.25).

    ``fix_aspect`` uses one factor for both axes. Resampled in the fused warp without an
    anti-aliasing prefilter (PyTC smooths the zoomed-out image first).
    """

    name = "RESCALE"
    stage = STAGE_AFFINE

    def __init__(
        self,
        low: float = 0.8,
        high: float = 1.25,
        fix_aspect: bool = False,
        p: float = 0.5,
        skip: Iterable[str] = (),
    ):
        super().__init__(p, skip)
        if not 0.0 < low <= high:
            raise ConfigError(f"RESCALE needs 0 < low <= high, got low={low}, high={high}")
        self.low = float(low)
        self.high = float(high)
        self.fix_aspect = bool(fix_aspect)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> RescaleParams:
        sx = 1.0 / rng.uniform(self.low, self.high)
        sy = sx if self.fix_aspect else 1.0 / rng.uniform(self.low, self.high)
        return RescaleParams(sy=float(sy), sx=float(sx))

    def reach(self, half, ctx):
        f = 1.0 / self.low
        return (half[0] * f, half[1] * f)

    def contribute(self, params: RescaleParams, builder: MapBuilder) -> None:
        builder.scale = (params.sy, params.sx)


# ----------------------------------------------------------------------------- flip
@dataclass(frozen=True)
class FlipParams:
    """Flip z, y, x; transpose y-x; transpose z-x (only with ``do_ztrans``)."""

    z: bool
    y: bool
    x: bool
    yx: bool
    zx: bool = False


class Flip(GeometricTransform):
    """Random flips of z, y, x and a y-x transpose (each with probability 1/2); with
    ``do_ztrans`` also a z-x transpose (needs ``input_size`` z == x).

    All are index permutations: y/x flips and the transpose are folded into the fused map
    (exact integer coordinates), the z flip into the z map, the z-x transpose is applied to the
    output last. A y-x transpose of a non-square crop reads a transposed window of the sample.
    """

    name = "FLIP"
    stage = STAGE_FLIP
    swaps_yx = True

    def __init__(self, do_ztrans: bool | int = False, p: float = 1.0, skip: Iterable[str] = ()):
        super().__init__(p, skip)
        self.do_ztrans = bool(do_ztrans)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> FlipParams:
        bits = rng.integers(0, 2, size=5 if self.do_ztrans else 4).astype(bool)
        return FlipParams(
            *(bool(b) for b in bits[:4]), zx=bool(bits[4]) if self.do_ztrans else False
        )

    def contribute(self, params: FlipParams, builder: MapBuilder) -> None:
        m = np.eye(2, dtype=np.int64)
        if params.y:
            m = m @ FLIP_Y
        if params.x:
            m = m @ FLIP_X
        if params.yx:
            m = m @ TRANSPOSE
        builder.permute(m)
        builder.z_flip ^= params.z
        builder.zx_transpose ^= params.zx


# ----------------------------------------------------------------------------- elastic
#: the elastic field is clipped at this many standard deviations (probability of a clip
#: about 2e-9 per value); the clip is what makes the declared margin a proof, not a hope
ELASTIC_CLIP_SIGMAS = 6.0
ELASTIC_TRUNCATE = 4.0


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1D kernel of scipy's ``gaussian_filter1d`` (``truncate=4``), float64."""
    radius = int(ELASTIC_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def wrapped_kernel(w: np.ndarray, n: int) -> np.ndarray:
    """Kernel ``w`` (centred) folded onto a period-``n`` grid, tap 0 at index 0."""
    folded = np.zeros(n)
    r = w.size // 2
    np.add.at(folded, (np.arange(w.size) - r) % n, w)
    return folded


def smoothing_grid(n: int) -> int:
    """Period of the noise grid for an output extent ``n`` (a fast FFT length >= n)."""
    return int(fft.next_fast_len(n, real=True))


@dataclass(frozen=True)
class ElasticParams:
    """``field``: (2, Y, X) float32 displacement (dy, dx) in sample voxels, on the output grid."""

    field: np.ndarray


class Elastic(GeometricTransform):
    """Elastic deformation in the y-x plane, one field shared by all slices (PyTC semantics).

    Each component is ``alpha * gaussian_filter(U(-1, 1), sigma)``: uniform noise on a periodic
    grid of a fast FFT length ``F >= Y`` (resp. X), filtered with the Gaussian kernel wrapped
    onto that period (exactly ``correlate1d(mode='wrap')``, done as one real FFT product), then
    cropped to ``(Y, X)``. The field is stationary, so its spread is the same everywhere:
    ``std = alpha * sqrt(1/3 * sum(wy^2) * sum(wx^2))`` (``w`` the wrapped kernels); it is
    clipped to ``bound = min(alpha, 6 std)``. Defaults (16, 4): std 0.65 voxel, bound 3.9 voxels
    (PyTC reserves ``int(alpha) + 1 = 17``). ``alpha = 0`` is the identity.
    """

    name = "ELASTIC"
    stage = STAGE_ELASTIC

    def __init__(
        self, alpha: float = 16.0, sigma: float = 4.0, p: float = 0.75, skip: Iterable[str] = ()
    ):
        super().__init__(p, skip)
        if alpha < 0:
            raise ConfigError(f"ELASTIC.ALPHA must be >= 0, got {alpha}")
        if sigma <= 0:
            raise ConfigError(f"ELASTIC.SIGMA must be > 0, got {sigma}")
        self.alpha = float(alpha)
        self.sigma = float(sigma)
        self._kernel = gaussian_kernel(self.sigma)
        self._transfer: dict[tuple, Any] = {}  # cached spectra and bounds per output shape

    def bound(self, out_shape: tuple[int, int, int]) -> float:
        """Largest displacement per component for output shape ``(Z, Y, X)`` (voxels)."""
        key = ("bound", out_shape[1], out_shape[2])
        b = self._transfer.get(key)
        if b is None:
            wy = wrapped_kernel(self._kernel, smoothing_grid(out_shape[1]))
            wx = wrapped_kernel(self._kernel, smoothing_grid(out_shape[2]))
            std = self.alpha * math.sqrt(float((wy**2).sum() * (wx**2).sum()) / 3.0)
            b = self._transfer[key] = min(self.alpha, ELASTIC_CLIP_SIGMAS * std)
        return b

    def transfer(self, fy: int, fx: int) -> np.ndarray:
        """Real ``(fy, fx // 2 + 1)`` float32 spectrum of the wrapped 2D kernel (cached)."""
        h = self._transfer.get((fy, fx))
        if h is None:
            ky = np.fft.fft(wrapped_kernel(self._kernel, fy)).real  # symmetric: real spectrum
            kx = np.fft.rfft(wrapped_kernel(self._kernel, fx)).real
            h = (ky[:, None] * kx[None, :] * self.alpha).astype(np.float32)
            self._transfer[(fy, fx)] = h
        return h

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> ElasticParams:
        _, Y, X = ctx.out_shape
        fy, fx = smoothing_grid(Y), smoothing_grid(X)
        noise = rng.random((2, fy, fx), dtype=np.float32)
        noise *= 2
        noise -= 1
        spec = fft.rfft2(noise, workers=1)
        spec *= self.transfer(fy, fx)
        field = fft.irfft2(spec, s=(fy, fx), workers=1)[:, :Y, :X]
        b = np.float32(self.bound(ctx.out_shape))
        field = np.clip(field, -b, b).astype(np.float32, copy=False)
        return ElasticParams(field=field)

    def reach(self, half, ctx):
        b = self.bound(ctx.out_shape)
        return (half[0] + b, half[1] + b)

    def contribute(self, params: ElasticParams, builder: MapBuilder) -> None:
        builder.field = params.field


# ----------------------------------------------------------------------------- misalignment
class MisAlignment(GeometricTransform):
    """Section misalignment (z stacks only).

    With probability ``rotate_ratio`` a rotation, else a translation. Mode 'slip' (probability
    1/2) moves one sample slice ``idx``, mode 'translation' every slice from ``idx`` on (``idx``
    interior, uniform). Translations are integer ``(dy, dx)`` in ``[-d//2, d//2]`` (one for the
    unaffected slices, one for the affected ones, as PyTC's two crops); a rotation turns the
    affected slices about the centre by at most ``2 asin(d / (4 r))``, ``r`` the largest radius
    reaching this stage, so no point moves more than ``d / 2`` (PyTC's angle allows ``d``,
    beyond its margin, and needs square inputs).
    """

    name = "MISALIGNMENT"
    stage = STAGE_MISALIGN

    def __init__(
        self,
        displacement: int = 16,
        rotate_ratio: float = 0.0,
        p: float = 0.5,
        skip: Iterable[str] = (),
    ):
        super().__init__(p, skip)
        if int(displacement) != displacement or displacement < 0:
            raise ConfigError(
                f"MISALIGNMENT.DISPLACEMENT must be an integer >= 0, got {displacement}"
            )
        if not 0.0 <= rotate_ratio <= 1.0:
            raise ConfigError(f"MISALIGNMENT.ROTATE_RATIO must be in [0, 1], got {rotate_ratio}")
        self.displacement = int(displacement)
        self.rotate_ratio = float(rotate_ratio)

    def max_angle(self, radius: float) -> float:
        """Largest rotation (radians) moving no point within ``radius`` more than ``d / 2``."""
        if radius <= 0:
            return math.pi
        return 2.0 * math.asin(min(1.0, self.displacement / (4.0 * radius)))

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> Misalign | None:
        wz = ctx.window_z
        if wz < 3:
            return None  # no interior slice
        rotate = bool(rng.random() < self.rotate_ratio)
        idx = int(rng.integers(1, wz - 1))
        mode = "slip" if rng.random() < 0.5 else "translation"
        if rotate:
            a = self.max_angle(ctx.misalign_radius)
            return Misalign(idx=idx, mode=mode, angle=float(rng.uniform(-a, a)))
        h = self.displacement // 2
        s = rng.integers(-h, h + 1, size=4)
        return Misalign(
            idx=idx, mode=mode, shift0=(int(s[0]), int(s[1])), shift1=(int(s[2]), int(s[3]))
        )

    def reach(self, half, ctx):
        if ctx.window_z < 3:
            return half  # no interior slice: never acts
        d = self.displacement / 2.0
        return (half[0] + d, half[1] + d)

    def contribute(self, params: Misalign | None, builder: MapBuilder) -> None:
        builder.misalign = params


# ----------------------------------------------------------------------------- missing section
@dataclass(frozen=True)
class MissingSectionParams:
    """Window indices (0 .. Z + n - 1) of the deleted sample slices."""

    deleted: tuple[int, ...]


class MissingSection(GeometricTransform):
    """Delete ``num_sections`` interior sample slices (z stacks only), as a z index map: the
    output's slices are the remaining ones of a ``Z + n`` window, so the sample grows by ``n``
    slices (PyTC: ``2 * ceil(n / 2)``)."""

    name = "MISSINGSECTION"
    stage = STAGE_ZMAP

    def __init__(self, num_sections: int = 2, p: float = 0.5, skip: Iterable[str] = ()):
        super().__init__(p, skip)
        if int(num_sections) != num_sections or num_sections < 0:
            raise ConfigError(
                f"MISSINGSECTION.NUM_SECTION must be an integer >= 0, got {num_sections}"
            )
        self.num_sections = int(num_sections)

    def extra_slices(self, out_shape: tuple[int, int, int]) -> int:
        return self.num_sections if out_shape[0] >= 2 else 0

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> MissingSectionParams | None:
        n = self.extra_slices(ctx.out_shape)
        if n == 0:
            return None
        wz = ctx.out_shape[0] + n
        chosen = rng.choice(np.arange(1, wz - 1), size=n, replace=False)
        return MissingSectionParams(deleted=tuple(sorted(int(i) for i in chosen)))

    def contribute(self, params: MissingSectionParams | None, builder: MapBuilder) -> None:
        if params is not None:
            builder.deleted = params.deleted
