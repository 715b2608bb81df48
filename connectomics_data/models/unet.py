"""Residual U-Net in 2D and 3D, with anisotropic levels for EM data.

Level ``i`` has ``filters[i]`` channels. Going down into level ``i >= 1`` halves y and x; z is
halved only when the level is isotropic (stride ``(2, 2, 2)``), otherwise it is kept (stride
``(1, 2, 2)``, kernels ``(1, 3, 3)``), because EM sections are much thicker than the in-plane
pixel size. Each downsampling maps an axis of size ``n`` to ``ceil(n / 2)``; on the way up the
coarser tensor is interpolated (linear, ``align_corners=True``) to the skip's exact size and
added to it, so every input size works and odd ``2n + 1`` sizes (PyTC's recommendation, e.g.
``17 x 225 x 225``) align voxel centres exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvNormAct, NonLocalBlock, ResidualBlock, make_conv


@dataclass(frozen=True)
class Level:
    """One U-Net level: channel count, conv kernel and the stride that leads into it."""

    channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]


def plan_levels(
    ndim: int, filters: Sequence[int], isotropy: Sequence[bool] | None = None
) -> list[Level]:
    """Per-level channels, kernels and strides (level 0 has stride 1).

    For ``ndim == 3`` an anisotropic level uses kernel ``(1, 3, 3)`` and stride ``(1, 2, 2)``;
    an isotropic one ``(3, 3, 3)`` and ``(2, 2, 2)``. For ``ndim == 2`` all levels are
    isotropic and ``isotropy`` is ignored.
    """
    levels = []
    for i, channels in enumerate(filters):
        iso = True if ndim == 2 or isotropy is None else bool(isotropy[i])
        kernel = (3,) * ndim if iso else (1,) + (3,) * (ndim - 1)
        if i == 0:
            stride = (1,) * ndim
        else:
            stride = (2,) * ndim if iso else (1,) + (2,) * (ndim - 1)
        levels.append(Level(int(channels), kernel, stride))
    return levels


def level_shapes(levels: Sequence[Level], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Spatial shape at every level for an input of spatial shape ``input_shape``."""
    shapes = []
    shape = tuple(int(s) for s in input_shape)
    for level in levels:
        shape = tuple(math.ceil(n / s) for n, s in zip(shape, level.stride))
        shapes.append(shape)
    return shapes


class UNet(nn.Module):
    """Residual U-Net: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)`` (float).

    Args:
        ndim: 2 (input ``(B, C, y, x)``) or 3 (input ``(B, C, z, y, x)``).
        in_channels / out_channels: image channels and output channels (``MODEL.OUT_PLANES``).
        filters: channels per level (``MODEL.FILTERS``); ``len(filters) - 1`` downsamplings.
        isotropy: per level, whether it downsamples z too (3D only; ``MODEL.ISOTROPY``).
        block_type: ``'residual'`` or ``'residual_se'`` (adds squeeze-excitation).
        norm_mode / act_mode / pad_mode: see :mod:`.blocks`.
        pooling: downsample with max pooling then a conv (``MODEL.POOLING_LAYER``) instead of
            a strided conv.
        plus: PyTC's ``unet_plus`` variant: a non-local block on the coarsest level, whose
            features are also projected (1x1 conv) to every decoder level's channels,
            upsampled and added there, besides the usual skip.

    Memory: activations of roughly ``2 * sum(filters[i] * voxels at level i)`` floats per
    sample plus the same again for gradients when training.
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        out_channels: int,
        filters: Sequence[int] = (28, 36, 48, 64, 80),
        isotropy: Sequence[bool] | None = None,
        block_type: str = "residual",
        norm_mode: str = "bn",
        act_mode: str = "elu",
        pad_mode: str = "replicate",
        pooling: bool = False,
        plus: bool = False,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        self.ndim = ndim
        self.levels = plan_levels(ndim, filters, isotropy)
        self.interp_mode = "trilinear" if ndim == 3 else "bilinear"
        se = block_type == "residual_se"
        first = self.levels[0]
        io_kernel = tuple(5 if k == 3 else 1 for k in first.kernel)

        def block(level: Level) -> ResidualBlock:
            return ResidualBlock(level.channels, level.kernel, pad_mode, norm_mode, act_mode, se)

        self.stem = ConvNormAct(
            in_channels, first.channels, io_kernel, 1, pad_mode, norm_mode, act_mode
        )
        self.down = nn.ModuleList([block(first)])
        for prev, level in zip(self.levels[:-1], self.levels[1:]):
            if pooling:
                pool = nn.MaxPool3d if ndim == 3 else nn.MaxPool2d
                entry: nn.Module = nn.Sequential(
                    pool(level.stride, level.stride, ceil_mode=True),
                    ConvNormAct(
                        prev.channels,
                        level.channels,
                        level.kernel,
                        1,
                        pad_mode,
                        norm_mode,
                        act_mode,
                    ),
                )
            else:
                entry = ConvNormAct(
                    prev.channels,
                    level.channels,
                    level.kernel,
                    level.stride,
                    pad_mode,
                    norm_mode,
                    act_mode,
                )
            self.down.append(nn.Sequential(entry, block(level)))
        one = (1,) * ndim
        self.project = nn.ModuleList(
            ConvNormAct(level.channels, prev.channels, one, 1, pad_mode, norm_mode, act_mode)
            for prev, level in zip(self.levels[:-1], self.levels[1:])
        )
        self.up = nn.ModuleList(block(level) for level in self.levels[:-1])
        self.head = make_conv(first.channels, out_channels, one, 1, pad_mode, bias=True)
        self.plus = plus
        if plus:
            last = self.levels[-1]
            self.non_local = NonLocalBlock(last.channels, ndim, norm_mode)
            self.feat = nn.ModuleList(
                ConvNormAct(last.channels, level.channels, one, 1, pad_mode, norm_mode, act_mode)
                for level in self.levels[:-1]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.ndim + 2:
            axes = "(B, C, z, y, x)" if self.ndim == 3 else "(B, C, y, x)"
            raise ValueError(f"expected input {axes}, got shape {tuple(x.shape)}")
        x = self.stem(x)
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        if self.plus:
            x = self.non_local(x)
        feat = x
        for i in reversed(range(len(self.up))):
            skip = skips.pop()
            x = self.project[i](x)
            x = F.interpolate(x, size=skip.shape[2:], mode=self.interp_mode, align_corners=True)
            x = x + skip
            if self.plus:
                f = self.feat[i](feat)
                x = x + F.interpolate(f, size=skip.shape[2:], mode=self.interp_mode, align_corners=True)
            x = self.up[i](x)
        return self.head(x)
