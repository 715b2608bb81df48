"""Test-time augmentation: flips and the y-x transpose, each inverted exactly, reduced on the fly.

Variants follow PyTC v1 (``AUG_NUM``): None/0 identity; 4: x and y flips; 8: x, y flips times
the y-x transpose; 16: adds z flips (3D only; 2D is capped at 8). For each variant the model is
applied **once** to the transformed batch, the activation is applied, the transform is inverted
and the result is folded into a running 'mean', 'min' or 'max' (never a stack of all variants).
Everything runs on the batch's device.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError

AUG_MODES = ("mean", "min", "max")
AUG_NUMS = (None, 0, 4, 8, 16)

Model = Callable[[torch.Tensor], torch.Tensor]
Activation = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    """One augmentation: flips of the last spatial axes, then optionally the y-x transpose.

    Axes are negative tensor dims: -1 is x, -2 is y, -3 is z (for (B, C, z, y, x) tensors).
    """

    flip_dims: tuple[int, ...] = ()
    transpose: bool = False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_dims:
            x = torch.flip(x, self.flip_dims)
        if self.transpose:
            x = x.transpose(-1, -2)
        return x

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            y = y.transpose(-1, -2)
        if self.flip_dims:
            y = torch.flip(y, self.flip_dims)
        return y

    @property
    def is_identity(self) -> bool:
        return not self.flip_dims and not self.transpose


def tta_variants(aug_num: int | None, do_2d: bool = False) -> list[Variant]:
    """The variants of ``AUG_NUM`` (3D or 2D), identity first."""
    if aug_num not in AUG_NUMS:
        raise ConfigError(f"INFERENCE.AUG_NUM must be one of None, 0, 4, 8, 16; got {aug_num!r}")
    if not aug_num:
        return [Variant()]
    if do_2d and aug_num == 16:
        aug_num = 8
    axes = [-1, -2] + ([-3] if aug_num == 16 else [])
    transposes = [False, True] if aug_num >= 8 else [False]
    out = []
    for flags in itertools.product([False, True], repeat=len(axes)):
        dims = tuple(a for a, f in zip(axes, flags) if f)
        for t in transposes:
            out.append(Variant(dims, t))
    return out


class TestTimeAugmentation:
    """Apply a model under every variant and reduce the activated, inverted outputs.

    Args:
        aug_num: ``INFERENCE.AUG_NUM`` (None, 0, 4, 8 or 16).
        mode: ``INFERENCE.AUG_MODE``: 'mean' | 'min' | 'max'.
        do_2d: 2D batches ``(B, C, y, x)`` (16 is capped at 8).
    """

    __test__ = False  # not a pytest class

    def __init__(self, aug_num: int | None = None, mode: str = "mean", do_2d: bool = False):
        if mode not in AUG_MODES:
            raise ConfigError(f"INFERENCE.AUG_MODE must be one of {AUG_MODES}, got {mode!r}")
        self.mode = mode
        self.do_2d = bool(do_2d)
        self.variants = tta_variants(aug_num, do_2d)

    @property
    def uses_transpose(self) -> bool:
        return any(v.transpose for v in self.variants)

    @property
    def flipped_dims(self) -> set[int]:
        return {d for v in self.variants for d in v.flip_dims}

    def __call__(self, model: Model, x: torch.Tensor, activation: Activation | None = None) -> torch.Tensor:
        """``x``: (B, C_in, *spatial) on the model's device -> reduced output (B, C, *out_spatial)."""
        result: torch.Tensor | None = None
        for variant in self.variants:
            y = model(variant.apply(x))
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"the model must return a tensor, got {type(y).__name__}")
            if activation is not None:
                y = activation(y)
            y = variant.invert(y).float()
            if result is None:
                # The output may alias the input (identity or cropping models): own a copy
                # before reducing into it in place.
                result = y.clone() if len(self.variants) > 1 else y
            elif result.shape != y.shape:
                raise ValueError(
                    f"test-time augmentation: output shape {list(y.shape)} under {variant} differs "
                    f"from {list(result.shape)} (non-square y-x windows cannot be transposed)"
                )
            elif self.mode == "mean":
                result.add_(y)
            elif self.mode == "min":
                torch.minimum(result, y, out=result)
            else:
                torch.maximum(result, y, out=result)
        assert result is not None
        if self.mode == "mean" and len(self.variants) > 1:
            result.div_(len(self.variants))
        return result
