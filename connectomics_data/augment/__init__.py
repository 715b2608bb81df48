"""Training augmentation: parameters drawn from an explicit generator, one fused warp.

``build_train_augmentor(cfg)`` builds a :class:`Compose` from PyTC v1's ``AUGMENTOR`` keys;
``Compose.sample_size`` is the crop to read so the warp never samples padding;
``compose(sample, rng)`` returns the augmented ``input_size`` crop of every target.
See :mod:`.compose` for the sample contract and :mod:`.plan` for the fused map.
"""

from .base import ChainContext, GeometricTransform, IntensityTransform, Transform
from .build import build_train_augmentor
from .compose import Compose
from .copy_paste import CopyPaste
from .geometry import Elastic, Flip, MisAlignment, MissingSection, Rescale, Rotate
from .intensity import CutBlur, CutNoise, Grayscale, MissingParts, MotionBlur, Noise
from .plan import MapBuilder, WarpPlan
from .warp import finish_zx, warp_linear, warp_nearest

__all__ = [
    "ChainContext",
    "Compose",
    "CopyPaste",
    "CutBlur",
    "CutNoise",
    "Elastic",
    "Flip",
    "GeometricTransform",
    "Grayscale",
    "IntensityTransform",
    "MapBuilder",
    "MisAlignment",
    "MissingParts",
    "MissingSection",
    "MotionBlur",
    "Noise",
    "Rescale",
    "Rotate",
    "Transform",
    "WarpPlan",
    "build_train_augmentor",
    "finish_zx",
    "warp_linear",
    "warp_nearest",
]
