"""Shared pieces of every transform: probability, skipped keys, the chain context.

A transform never touches data when it is sampled. :meth:`Transform.randomize` draws every
random choice of one call from an explicit :class:`numpy.random.Generator` and returns a small
parameter object; applying those parameters is deterministic. :class:`~.compose.Compose` draws
the parameters of the whole chain first and then applies them to the image and to every
additional target, so all targets see identical parameters.

Two families:

* :class:`GeometricTransform` (rotate, rescale, flip, elastic, misalignment, missing section)
  contribute to one fused coordinate map (see :mod:`.plan`); they act on every target, 'img'
  targets with linear interpolation and 'mask' targets with an integer gather.
* :class:`IntensityTransform` (grayscale, missing parts, motion blur, cut-blur, cut-noise, noise,
  copy-paste) act on the output-size crop after the warp, on the image and 'img' targets only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

KINDS = ("img", "mask")


def check_probability(p: float, name: str) -> float:
    """``p`` as a float in [0, 1]; :class:`ConfigError` naming ``name`` otherwise."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}.P must be a number in [0, 1], got {p!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}.P must be in [0, 1], got {p!r}")
    return value


@dataclass(frozen=True)
class ChainContext:
    """Shapes a transform may need while drawing its parameters.

    Attributes:
        out_shape: spatial output size ``(z, y, x)`` (``Compose.input_size``).
        window_z: number of sample slices the geometric chain spans (``Compose.sample_size[0]``):
            ``out_shape[0]`` plus the slices a missing-section transform may delete.
        misalign_radius: bound on the in-plane distance from the centre of any point the chain
            feeds into the misalignment stage (voxels); fixes the misalignment rotation angle so
            no point moves more than ``DISPLACEMENT / 2``.
        sample_yx: in-plane sample size ``(y, x)`` (``Compose.sample_size[1:]``), the frame
            PyTC's intensity transforms drew in before the centre crop; None: ``out_shape``.
    """

    out_shape: tuple[int, int, int]
    window_z: int
    misalign_radius: float = 0.0
    sample_yx: tuple[int, int] | None = None


class Transform:
    """Base class: a probability ``p`` and the sample keys to leave untouched (``skip``).

    Subclasses set ``name`` (the PyTC config node, e.g. ``'ROTATE'``) and implement
    :meth:`randomize`.
    """

    name = "TRANSFORM"

    def __init__(self, p: float = 0.5, skip: Iterable[str] = ()):
        self.p = check_probability(p, self.name)
        if isinstance(skip, str):
            skip = [skip]
        self.skip = frozenset(str(k) for k in skip)

    def applies_to(self, key: str) -> bool:
        """Whether this transform acts on sample key ``key`` (not listed in ``skip``)."""
        return key not in self.skip

    def randomize(self, rng: np.random.Generator, ctx: ChainContext) -> Any:
        """Draw this transform's parameters for one call (never touches data)."""
        raise NotImplementedError

    def with_p(self, p: float) -> Transform:
        """A copy with probability ``p`` (handy to show one transform alone)."""
        other = copy.copy(self)
        other.p = check_probability(p, self.name)
        return other

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "skip"
        )
        skip = f", skip={sorted(self.skip)}" if self.skip else ""
        return f"{type(self).__name__}({fields}{skip})"


class GeometricTransform(Transform):
    """A transform that moves voxels; it contributes to the fused coordinate map.

    ``stage`` fixes where it sits in the coordinate chain (see :mod:`.plan`); the position in
    the Compose list does not matter for geometric transforms.
    """

    stage = 0
    #: whether the transform can swap the y and x axes (transposes, odd multiples of 90 deg)
    swaps_yx = False

    def reach(self, half: tuple[float, float], ctx: ChainContext) -> tuple[float, float]:
        """Bound on the in-plane half-extents ``(hy, hx)`` after this stage.

        ``half`` bounds ``|y|`` and ``|x|`` (voxels from the centre) of every point entering the
        stage; the result bounds every point leaving it, for every parameter draw. ``ctx``
        gives the output shape and z window (``misalign_radius`` is not set yet).
        """
        return half

    def extra_slices(self, out_shape: tuple[int, int, int]) -> int:
        """Sample slices this transform needs beyond ``out_shape[0]`` (missing section only)."""
        return 0

    def contribute(self, params: Any, builder: Any) -> None:
        """Record ``params`` on a :class:`~.plan.MapBuilder`."""
        raise NotImplementedError


class IntensityTransform(Transform):
    """A transform that changes values of the image and 'img' targets on the output crop.

    :meth:`apply` receives the output arrays (float32, ``(z, y, x)`` or ``(c, z, y, x)``) of the
    keys it acts on and modifies them in place with the same parameters.
    """

    def apply(self, arrays: Mapping[str, np.ndarray], params: Any) -> None:
        raise NotImplementedError


def random_cuboid(
    rng: np.random.Generator, shape: tuple[int, ...], length_ratio: float
) -> tuple[slice, ...]:
    """A random box with sides ``max(1, int(length_ratio * n))`` inside ``shape``.

    For a single slice (``shape[0] == 1``) the box spans that slice. Returns one slice per axis.
    """
    out = []
    for n in shape:
        side = min(n, max(1, int(length_ratio * n)))
        start = int(rng.integers(0, n - side + 1))
        out.append(slice(start, start + side))
    return tuple(out)


def spatial_shape(array: np.ndarray) -> tuple[int, int, int]:
    """The last three axes ``(z, y, x)`` of a 3D or channel-first 4D array."""
    return tuple(int(s) for s in array.shape[-3:])  # type: ignore[return-value]
