"""Intensity transforms: they run on the output-size crop after the warp.

Each acts on the image and on the 'img' additional targets (never on 'mask' targets), all
float32 in [0, 1], shaped ``(z, y, x)`` or ``(c, z, y, x)``; they modify the arrays in place.
Parameters are drawn once per call and applied identically to every array they act on; a
per-section transform acts on true sections (before a ``DO_ZTRANS`` z-x transpose).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .base import ChainContext, IntensityTransform, random_cuboid


# ----------------------------------------------------------------------------- grayscale
@dataclass(frozen=True)
class GrayscaleParams:
    """Per-section (2D, shape ``(Z, 1, 1)``) or whole-volume (3D, shape ``(1, 1, 1)``) factors."""

    mode: str
    gain: np.ndarray
    offset: np.ndarray
    gamma: np.ndarray


class Grayscale(IntensityTransform):
    """Contrast, brightness and gamma: ``clip(x * (1 + c) + b, 0, 1) ** g`` with
    ``c, b ~ U(-f/2, f/2)`` (``f`` = 0.3 each) and ``g = 2 ** U(-1, 1)``.

    ``mode`` '3D' draws one set for the volume, '2D' one per section, 'mix' chooses 2D or 3D
    with probability 1/2 per call (PyTC's 'mix' always ran 3D).
    """

    name = "GRAYSCALE"

    def __init__(
        self,
        contrast_factor: float = 0.3,
        brightness_factor: float = 0.3,
        mode: str = "mix",
        p: float = 0.75,
        skip: Iterable[str] = (),
    ):
        super().__init__(p, skip)
        if mode not in ("2D", "3D", "mix"):
            raise ConfigError(f"GRAYSCALE mode must be '2D', '3D' or 'mix', got {mode!r}")
        self.contrast_factor = float(contrast_factor)
        self.brightness_factor = float(brightness_factor)
        self.mode = mode

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> GrayscaleParams:
        mode = self.mode
        if mode == "mix":
            mode = "3D" if rng.random() < 0.5 else "2D"
        n = ctx.out_shape[0] if mode == "2D" else 1
        r = rng.random((3, n, 1, 1)).astype(np.float32)
        gain = 1 + (r[0] - 0.5) * np.float32(self.contrast_factor)
        offset = (r[1] - 0.5) * np.float32(self.brightness_factor)
        gamma = np.exp2(r[2] * 2 - 1).astype(np.float32)
        return GrayscaleParams(mode=mode, gain=gain, offset=offset, gamma=gamma)

    def apply(self, arrays: Mapping[str, np.ndarray], params: GrayscaleParams) -> None:
        for x in arrays.values():
            x *= params.gain
            x += params.offset
            np.clip(x, 0, 1, out=x)
            # x ** gamma as exp(gamma * log x): SIMD exp/log beat np.power (log 0 = -inf -> 0)
            with np.errstate(divide="ignore"):
                np.log(x, out=x)
            x *= params.gamma
            np.exp(x, out=x)


# ----------------------------------------------------------------------------- missing parts
@dataclass(frozen=True)
class MissingPartsParams:
    """Per selected section: ``(z, (a_y, a_x), (b_y, b_x))``, a line from edge to edge."""

    lines: tuple[tuple[int, tuple[int, int], tuple[int, int]], ...]


class MissingParts(IntensityTransform):
    """A band around a random edge-to-edge line is filled with the section's mean.

    Sections are visited in order; each is hit with probability ``p`` (PyTC uses the same
    ``P`` per section), and a hit skips the next two sections. The line joins two random points
    on opposite edges (top-bottom or left-right, 1/2 each) of the *sample* frame
    (``ChainContext.sample_yx``) centred on the output crop, as in PyTC, where MissingParts
    acts on the sample before the centre crop: so the band may cross the crop anywhere or miss
    it, rather than always cutting through it. The band holds the pixels within L1 distance
    ``iterations + 1/2`` of the line: what ``iterations`` binary dilations of the rasterised
    line give (``2 * iterations + 1`` pixels wide across the line's main direction).
    """

    name = "MISSINGPARTS"

    def __init__(self, iterations: int = 64, p: float = 0.9, skip: Iterable[str] = ()):
        super().__init__(p, skip)
        if int(iterations) != iterations or iterations < 0:
            raise ConfigError(f"MISSINGPARTS.ITER must be an integer >= 0, got {iterations}")
        self.iterations = int(iterations)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> MissingPartsParams:
        Z, Y, X = ctx.out_shape
        SY, SX = ctx.sample_yx or (Y, X)
        oy, ox = (SY - Y) // 2, (SX - X) // 2  # the crop's offset inside the sample frame
        lines = []
        z = 0
        while z < Z:
            if rng.random() < self.p:
                vertical = bool(rng.random() < 0.5)
                n = SX if vertical else SY
                # PyTC: end points in [1, n - 3] (all of [0, n) for tiny sections)
                lo, hi = (1, n - 2) if n >= 4 else (0, n)
                c = rng.integers(lo, hi, size=2)
                if vertical:
                    lines.append((z, (-oy, int(c[0]) - ox), (SY - 1 - oy, int(c[1]) - ox)))
                else:
                    lines.append((z, (int(c[0]) - oy, -ox), (int(c[1]) - oy, SX - 1 - ox)))
                z += 3
            else:
                z += 1
        return MissingPartsParams(lines=tuple(lines))

    def band(self, shape: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
        """Boolean ``(Y, X)`` band of the line ``a``-``b``."""
        vy, vx = float(b[0] - a[0]), float(b[1] - a[1])
        ys = np.arange(shape[0], dtype=np.float32) - a[0]
        xs = np.arange(shape[1], dtype=np.float32) - a[1]
        cross = np.abs((np.float32(vy) * xs)[None, :] - (np.float32(vx) * ys)[:, None])
        # L1 distance to the line = |cross| / max(|vy|, |vx|)
        return cross <= np.float32((self.iterations + 0.5) * max(abs(vy), abs(vx), 1.0))

    def apply(self, arrays: Mapping[str, np.ndarray], params: MissingPartsParams) -> None:
        for z, a, b in params.lines:
            mask = None
            for x in arrays.values():
                if mask is None:
                    mask = self.band(x.shape[-2:], a, b)
                sec = x[..., z, :, :]
                mean = sec.mean(axis=(-2, -1), keepdims=True, dtype=np.float64).astype(np.float32)
                np.copyto(sec, np.broadcast_to(mean, sec.shape), where=mask)


# ----------------------------------------------------------------------------- motion blur
@dataclass(frozen=True)
class MotionBlurParams:
    """Sections to blur and the blur axis (-1: horizontal line kernel, -2: vertical)."""

    sections: tuple[int, ...]
    axis: int


class MotionBlur(IntensityTransform):
    """A ``kernel_size`` line average (horizontal or vertical, 1/2 each) on
    ``min(sections, Z)`` distinct random sections; borders mirror (cv2's default)."""

    name = "MOTIONBLUR"

    def __init__(
        self, sections: int = 2, kernel_size: int = 11, p: float = 0.5, skip: Iterable[str] = ()
    ):
        super().__init__(p, skip)
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ConfigError(f"MOTIONBLUR.KERNEL_SIZE must be an integer >= 1, got {kernel_size}")
        if int(sections) != sections or sections < 0:
            raise ConfigError(f"MOTIONBLUR.SECTIONS must be an integer >= 0, got {sections}")
        self.sections = int(sections)
        self.kernel_size = int(kernel_size)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> MotionBlurParams:
        Z = ctx.out_shape[0]
        axis = -1 if rng.random() < 0.5 else -2
        chosen = rng.choice(Z, size=min(self.sections, Z), replace=False)
        return MotionBlurParams(sections=tuple(sorted(int(z) for z in chosen)), axis=axis)

    def apply(self, arrays: Mapping[str, np.ndarray], params: MotionBlurParams) -> None:
        for x in arrays.values():
            for z in params.sections:
                sec = x[..., z, :, :]
                sec[...] = ndimage.uniform_filter1d(
                    sec, self.kernel_size, axis=params.axis, mode="mirror"
                )


# ----------------------------------------------------------------------------- cut-blur
def block_average(region: np.ndarray, axes_sizes: Mapping[int, int]) -> np.ndarray:
    """Replace every voxel by the mean of its block: each axis ``a`` of length ``n`` is cut into
    ``m = axes_sizes[a]`` nearly equal bins (an area downsample to ``m`` then a nearest
    upsample back). Float32 in, float32 out, same shape."""
    out = region
    for axis, m in axes_sizes.items():
        n = out.shape[axis]
        m = max(1, min(int(m), n))
        if m == n:
            continue
        edges = (np.arange(m) * n) // m
        counts = np.diff(np.append(edges, n)).astype(np.float32)
        low = np.add.reduceat(out, edges, axis=axis)
        shape = [1] * out.ndim
        shape[axis] = m
        low /= counts.reshape(shape)
        owner = np.searchsorted(edges, np.arange(n), side="right") - 1
        out = np.take(low, owner, axis=axis)
    return out


@dataclass(frozen=True)
class CutBlurParams:
    """Spatial box ``(z, y, x)`` slices and the downsampling factor."""

    box: tuple[slice, slice, slice]
    ratio: float


class CutBlur(IntensityTransform):
    """A random cuboid (sides ``length_ratio`` of the crop) is downsampled by
    ``U(down_ratio_min, down_ratio_max)`` in y-x (and z with ``downsample_z``) by area
    averaging and upsampled back by nearest neighbour: a low-resolution patch."""

    name = "CUTBLUR"

    def __init__(
        self,
        length_ratio: float = 0.4,
        down_ratio_min: float = 2.0,
        down_ratio_max: float = 8.0,
        downsample_z: bool = False,
        p: float = 0.5,
        skip: Iterable[str] = (),
    ):
        super().__init__(p, skip)
        if not 0 < length_ratio <= 1:
            raise ConfigError(f"CUTBLUR.LENGTH_RATIO must be in (0, 1], got {length_ratio}")
        if not 1 <= down_ratio_min <= down_ratio_max:
            raise ConfigError(
                f"CUTBLUR needs 1 <= DOWN_RATIO_MIN <= DOWN_RATIO_MAX, got {down_ratio_min}, {down_ratio_max}"
            )
        self.length_ratio = float(length_ratio)
        self.down_ratio_min = float(down_ratio_min)
        self.down_ratio_max = float(down_ratio_max)
        self.downsample_z = bool(downsample_z)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> CutBlurParams:
        box = random_cuboid(rng, ctx.out_shape, self.length_ratio)
        return CutBlurParams(
            box=box, ratio=float(rng.uniform(self.down_ratio_min, self.down_ratio_max))
        )

    def apply(self, arrays: Mapping[str, np.ndarray], params: CutBlurParams) -> None:
        for x in arrays.values():
            region = x[(Ellipsis, *params.box)]
            sizes = {
                axis: int(region.shape[axis] / params.ratio)
                for axis in (
                    (-3, -2, -1) if self.downsample_z and region.shape[-3] > 1 else (-2, -1)
                )
            }
            region[...] = block_average(region, sizes)


# ----------------------------------------------------------------------------- cut-noise
@dataclass(frozen=True)
class CutNoiseParams:
    """Spatial box and the noise ``U(-scale, scale)`` of the box's shape (float32)."""

    box: tuple[slice, slice, slice]
    noise: np.ndarray


class CutNoise(IntensityTransform):
    """Uniform noise ``U(-scale, scale)`` added to a random cuboid (sides ``length_ratio`` of
    the crop), then clipped to [0, 1]; the same noise for every channel and target."""

    name = "CUTNOISE"

    def __init__(
        self,
        length_ratio: float = 0.4,
        scale: float = 0.3,
        p: float = 0.75,
        skip: Iterable[str] = (),
    ):
        super().__init__(p, skip)
        if not 0 < length_ratio <= 1:
            raise ConfigError(f"CUTNOISE.LENGTH_RATIO must be in (0, 1], got {length_ratio}")
        if scale < 0:
            raise ConfigError(f"CUTNOISE.SCALE must be >= 0, got {scale}")
        self.length_ratio = float(length_ratio)
        self.scale = float(scale)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> CutNoiseParams:
        box = random_cuboid(rng, ctx.out_shape, self.length_ratio)
        shape = tuple(s.stop - s.start for s in box)
        noise = rng.random(shape, dtype=np.float32)
        noise *= np.float32(2 * self.scale)
        noise -= np.float32(self.scale)
        return CutNoiseParams(box=box, noise=noise)

    def apply(self, arrays: Mapping[str, np.ndarray], params: CutNoiseParams) -> None:
        for x in arrays.values():
            region = x[(Ellipsis, *params.box)]
            region += params.noise
            np.clip(region, 0, 1, out=region)


# ----------------------------------------------------------------------------- noise (ours)
NOISE_MODES = ("gaussian", "poisson", "salt_pepper", "speckle")


@dataclass(frozen=True)
class NoiseParams:
    """A seed: the noise is drawn from ``default_rng(seed)`` per array, so every target gets
    the same draws (and Poisson noise can depend on the values)."""

    seed: int


class Noise(IntensityTransform):
    """Whole-crop noise (a transform of this project, config node ``AUGMENTOR.NOISE``).

    ``mode``: 'gaussian' ``x + scale * N(0, 1)``; 'speckle' ``x + scale * x * N(0, 1)``;
    'poisson' shot noise ``Poisson(x / scale^2) * scale^2`` (std ``scale * sqrt(x)``);
    'salt_pepper' a fraction ``scale`` of voxels set to 0 or 1 (half each). Then clip to [0, 1].
    The draws are per voxel of the spatial crop, shared by the channels (Poisson: per value).
    """

    name = "NOISE"

    def __init__(
        self, mode: str = "gaussian", scale: float = 0.05, p: float = 0.5, skip: Iterable[str] = ()
    ):
        super().__init__(p, skip)
        if mode not in NOISE_MODES:
            raise ConfigError(f"NOISE.MODE must be one of {NOISE_MODES}, got {mode!r}")
        if scale < 0 or (mode == "salt_pepper" and scale > 1):
            raise ConfigError(f"NOISE.SCALE must be >= 0 (<= 1 for salt_pepper), got {scale}")
        self.mode = mode
        self.scale = float(scale)

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> NoiseParams:
        return NoiseParams(seed=int(rng.integers(0, 2**63 - 1)))

    def apply(self, arrays: Mapping[str, np.ndarray], params: NoiseParams) -> None:
        s = np.float32(self.scale)
        for x in arrays.values():
            gen = np.random.default_rng(params.seed)
            spatial = x.shape[-3:]
            if self.mode == "gaussian":
                x += gen.standard_normal(spatial, dtype=np.float32) * s
            elif self.mode == "speckle":
                x += x * (gen.standard_normal(spatial, dtype=np.float32) * s)
            elif self.mode == "poisson":
                if self.scale > 0:
                    lam = np.float64(1.0 / (self.scale * self.scale))
                    x[...] = gen.poisson(np.maximum(x, 0) * lam) / lam
            else:
                u = gen.random(spatial, dtype=np.float32)
                x[..., u < s / 2] = 0
                x[..., u > 1 - s / 2] = 1
            np.clip(x, 0, 1, out=x)
