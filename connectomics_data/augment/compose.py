"""``Compose``: draw the parameters of a transform chain, then apply them to a sample.

Order of work for one call (``out = compose(sample, rng)``):

1. :meth:`Compose.randomize`: for each transform in list order, one ``rng.random()`` decides
   whether it applies (``< p``), then the transform draws its parameters. Same seed, same
   parameters, bit-identical output; nothing reads global random state.
2. All geometric transforms (rotate, rescale, flip, elastic, misalignment, missing section)
   become one coordinate map (:mod:`.plan`), evaluated once per target: linear interpolation for
   the image and 'img' targets, an integer nearest gather for 'mask' targets. Flips, transposes
   and quarter turns are exact index permutations inside that map; when no transform needs
   interpolation the image is gathered exactly too.
3. Intensity transforms, in list order, on the output-size crop of the image and 'img' targets.
4. ``smooth``: PyTC's mask edge smoothing (:mod:`.smooth`), then the ``DO_ZTRANS`` z-x transpose.

Sample contract: a dict of z-y-x numpy arrays, ``(z, y, x)`` or channel-first ``(c, z, y, x)``,
all with the same spatial shape, at least :attr:`Compose.sample_size` (a larger sample is
centre-cropped). ``'image'`` is required. Dtypes:

* ``image`` and 'img' targets: uint8 (scaled by 1/255), uint16 (1/65535) or floating (assumed in
  [0, 1], not rescaled); output float32. Intensity transforms clip to [0, 1].
* 'mask' targets: any dtype, kept; output values are a subset of the input values.
* Keys that are neither ``'image'`` nor in ``additional_targets`` (and targets whose value is
  None) are passed through untouched (same object).

Every output array has spatial shape ``input_size``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, VolumeError
from .base import KINDS, ChainContext, GeometricTransform, IntensityTransform, Transform
from .copy_paste import CopyPaste
from .geometry import Flip, MisAlignment
from .plan import MapBuilder, WarpPlan
from .smooth import smooth_edges
from .warp import finish_zx, warp_linear, warp_nearest

DEFAULT_TARGETS = {"label": "mask", "valid_mask": "mask"}
_SCALES = {np.dtype(np.uint8): 1.0 / 255.0, np.dtype(np.uint16): 1.0 / 65535.0}


def _input_size(size: Sequence[int]) -> tuple[int, int, int]:
    vals = [int(v) for v in size]
    if len(vals) == 2:
        vals = [1] + vals
    if len(vals) != 3 or any(v < 1 for v in vals) or any(int(v) != v for v in size):
        raise ConfigError(f"input_size must be 3 positive integers (z, y, x), got {list(size)}")
    return tuple(vals)  # type: ignore[return-value]


class Compose:
    """A chain of transforms with a sample size that keeps every warp inside real data.

    Args:
        transforms: transform instances (at most one of each geometric type).
        input_size: output spatial size ``(z, y, x)`` (``[y, x]`` means ``[1, y, x]``).
        additional_targets: key -> 'img' | 'mask' for the keys transformed with the image.
        smooth: smooth mask edges afterwards (PyTC ``AUGMENTOR.SMOOTH``; slow, lossy).

    Attributes:
        sample_size: spatial crop ``(z, y, x)`` the chain needs; see :meth:`compute_sample_size`.
    """

    def __init__(
        self,
        transforms: Sequence[Transform],
        input_size: Sequence[int],
        additional_targets: Mapping[str, str] | None = None,
        smooth: bool = False,
    ):
        self.transforms = list(transforms)
        self.input_size = _input_size(input_size)
        targets = dict(DEFAULT_TARGETS if additional_targets is None else additional_targets)
        for key, kind in targets.items():
            if key == "image":
                raise ConfigError(
                    "additional_targets must not contain 'image' (it is always 'img')"
                )
            if kind not in KINDS:
                raise ConfigError(
                    f"additional target {key!r} has kind {kind!r}; expected 'img' or 'mask'"
                )
        self.additional_targets = targets
        self.smooth = bool(smooth)
        for t in self.transforms:
            if not isinstance(t, Transform):
                raise ConfigError(f"Compose got {t!r}, which is not a Transform")
        seen: set[type] = set()
        for t in self.geometric:
            if type(t) in seen:
                raise ConfigError(f"Compose accepts one {type(t).__name__}; got several")
            seen.add(type(t))
            if isinstance(t, Flip) and t.do_ztrans and self.input_size[0] != self.input_size[2]:
                raise ConfigError(
                    f"FLIP.DO_ZTRANS needs input z == x, got input_size {list(self.input_size)}"
                )
        self.sample_size, self._misalign_radius = self.compute_sample_size()

    # ------------------------------------------------------------------ structure
    @property
    def geometric(self) -> list[GeometricTransform]:
        return [t for t in self.transforms if isinstance(t, GeometricTransform)]

    def compute_sample_size(self) -> tuple[tuple[int, int, int], float]:
        """The sample size and the radius bound fed to the misalignment stage.

        In-plane, with ``(hy, hx) = ((Y-1)/2, (X-1)/2)`` bounding the output's centred
        coordinates: if any active transform can swap y and x, both become ``max(hy, hx)`` (and
        when Y, X differ in parity the transposed window sits half a voxel off centre:
        ``delta = 1/2``); then each active geometric transform, in chain order, maps the bound
        (:meth:`GeometricTransform.reach`). The margin per side is
        ``m = ceil(h + delta - (n-1)/2)``, so ``sample = n + 2 m``: an even excess keeps the
        output grid on the sample grid. In z: ``Z`` plus the slices a missing-section transform
        deletes. Transforms with ``p == 0`` never act and add nothing.

        Defaults at ``[17, 225, 225]``: 112 -> x1.25 -> 140 -> +3.9 (elastic) -> 143.9 -> +8
        (misalignment) -> 151.9, ``m = 40``: ``[19, 305, 305]`` (PyTC: ``[19, 332, 332]``).
        """
        Z, Y, X = self.input_size
        active = [t for t in self.geometric if t.p > 0]
        half = ((Y - 1) / 2.0, (X - 1) / 2.0)
        delta = 0.0
        if any(t.swaps_yx for t in active):
            m = max(half)
            half = (m, m)
            if (Y - X) % 2:
                delta = 0.5
        extra = sum(t.extra_slices(self.input_size) for t in active)
        ctx = ChainContext(self.input_size, Z + extra)
        radius = 0.0
        for t in sorted(active, key=lambda t: t.stage):
            if isinstance(t, MisAlignment):
                radius = math.hypot(*half)
            half = t.reach(half, ctx)
        margins = [
            max(0, math.ceil(h + delta - (n - 1) / 2.0 - 1e-9)) for h, n in zip(half, (Y, X))
        ]
        return (Z + extra, Y + 2 * margins[0], X + 2 * margins[1]), radius

    def context(self) -> ChainContext:
        return ChainContext(self.input_size, self.sample_size[0], self._misalign_radius,
                            tuple(self.sample_size[1:]))

    # ------------------------------------------------------------------ randomness
    def randomize(self, rng: np.random.Generator) -> list[Any]:
        """Parameters for one call: one entry per transform, ``None`` where it does not act."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        ctx = self.context()
        params: list[Any] = []
        for t in self.transforms:
            hit = rng.random() < t.p
            params.append(t.randomize(rng, ctx) if hit else None)
        return params

    # ------------------------------------------------------------------ application
    def plan(
        self, params: Sequence[Any], key: str = "image", src_shape: Sequence[int] | None = None
    ) -> WarpPlan:
        """The fused map ``key`` gets under ``params`` for a sample of spatial ``src_shape``
        (default: :attr:`sample_size`)."""
        src = tuple(int(s) for s in (src_shape or self.sample_size))
        return self._plans(params, [key], src)[key]

    def _plans(
        self, params: Sequence[Any], keys: Sequence[str], src: tuple[int, ...]
    ) -> dict[str, WarpPlan]:
        if len(params) != len(self.transforms):
            raise ValueError(
                f"expected {len(self.transforms)} parameter entries, got {len(params)}"
            )
        geo = [
            (i, t)
            for i, t in enumerate(self.transforms)
            if isinstance(t, GeometricTransform) and params[i] is not None
        ]
        cache: dict[tuple[int, ...], WarpPlan] = {}
        plans = {}
        for key in keys:
            sig = tuple(i for i, t in geo if t.applies_to(key))
            if sig not in cache:
                builder = MapBuilder(self.input_size, self.sample_size[0])
                for i in sorted(sig, key=lambda i: self.transforms[i].stage):
                    self.transforms[i].contribute(params[i], builder)
                cache[sig] = builder.build(src)  # type: ignore[arg-type]
            plans[key] = cache[sig]
        return plans

    def _check(self, sample: Mapping[str, Any]) -> tuple[list[str], tuple[int, int, int]]:
        if "image" not in sample or sample["image"] is None:
            raise VolumeError(f"sample has no 'image' (keys: {sorted(sample)})")
        keys = ["image"] + [k for k in self.additional_targets if sample.get(k) is not None]
        shape = None
        for key in keys:
            arr = sample[key]
            if not isinstance(arr, np.ndarray) or arr.ndim not in (3, 4):
                raise VolumeError(
                    f"sample[{key!r}] must be a (z, y, x) or (c, z, y, x) numpy array, got "
                    f"{type(arr).__name__} with shape {getattr(arr, 'shape', None)}"
                )
            spatial = tuple(int(s) for s in arr.shape[-3:])
            if shape is None:
                shape = spatial
            elif spatial != shape:
                raise VolumeError(
                    f"sample[{key!r}] has spatial shape {spatial}, 'image' has {shape}"
                )
        assert shape is not None
        if any(s < n for s, n in zip(shape, self.sample_size)):
            raise VolumeError(
                f"sample spatial shape {shape} is smaller than Compose.sample_size {self.sample_size}"
            )
        for key in keys:
            if self._kind(key) == "img":
                dt = sample[key].dtype
                if dt not in _SCALES and not np.issubdtype(dt, np.floating):
                    raise VolumeError(
                        f"sample[{key!r}] has dtype {dt}; 'img' arrays must be uint8, uint16 or floating"
                    )
        return keys, shape

    def _kind(self, key: str) -> str:
        return "img" if key == "image" else self.additional_targets[key]

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Augment ``sample`` with parameters drawn from ``rng``; returns a new dict."""
        return self.apply(sample, self.randomize(rng))

    def apply(self, sample: Mapping[str, Any], params: Sequence[Any]) -> dict[str, Any]:
        """Apply drawn ``params`` (from :meth:`randomize`) to ``sample``; returns a new dict."""
        keys, shape = self._check(sample)
        kinds = {k: self._kind(k) for k in keys}
        plans = self._plans(params, keys, shape)
        out: dict[str, np.ndarray] = {}
        for key in keys:
            arr = sample[key]
            if kinds[key] == "img":
                out[key] = warp_linear(arr, plans[key], _SCALES.get(arr.dtype, 1.0))
            else:
                out[key] = warp_nearest(arr, plans[key])
        for t, p in zip(self.transforms, params):
            if p is None:
                continue
            if isinstance(t, CopyPaste):
                t.apply_sample(out, kinds, p)
            elif isinstance(t, IntensityTransform):
                arrays = {k: out[k] for k in keys if kinds[k] == "img" and t.applies_to(k)}
                if arrays:
                    t.apply(arrays, p)
        if self.smooth:
            for key in keys:
                if kinds[key] == "mask":
                    out[key] = smooth_edges(out[key])
        result = dict(sample)
        for key in keys:
            result[key] = finish_zx(out[key], plans[key])
        return result

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return (
            f"Compose(input_size={list(self.input_size)}, sample_size={list(self.sample_size)}, "
            f"additional_targets={self.additional_targets}, smooth={self.smooth},\n  {inner})"
        )
