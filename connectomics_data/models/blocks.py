"""Building blocks shared by the 2D and 3D U-Nets: conv-norm-act, residual and SE blocks.

Every block works for ``ndim`` 2 (input ``(B, C, y, x)``) or 3 (input ``(B, C, z, y, x)``) and
keeps the spatial size ('same' padding with the configured padding mode) unless a stride is
given. Kernels are tuples so that anisotropic EM levels can use ``(1, 3, 3)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError

NORM_MODES = ("bn", "sync_bn", "in", "gn", "none")
ACT_MODES = ("relu", "elu", "leaky")
PAD_MODES = ("zeros", "replicate", "reflect", "circular")
BLOCK_TYPES = ("residual", "residual_se")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_IN = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _check_choice(key: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def make_norm(mode: str, channels: int, ndim: int) -> nn.Module:
    """Normalisation layer for ``channels`` feature maps (``'none'`` gives ``nn.Identity``).

    ``'sync_bn'`` builds ``nn.SyncBatchNorm``, which behaves like plain batch norm when no
    process group is initialised. ``'gn'`` uses ``gcd(channels, 8)`` groups.
    """
    _check_choice("MODEL.NORM_MODE", mode, NORM_MODES)
    if mode == "bn":
        return _BN[ndim](channels)
    if mode == "sync_bn":
        return nn.SyncBatchNorm(channels)
    if mode == "in":
        return _IN[ndim](channels, affine=True)
    if mode == "gn":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.Identity()


def make_act(mode: str) -> nn.Module:
    """Activation layer: ``'relu'``, ``'elu'`` or ``'leaky'`` (LeakyReLU, slope 0.2)."""
    _check_choice("MODEL.ACT_MODE", mode, ACT_MODES)
    if mode == "relu":
        return nn.ReLU(inplace=True)
    if mode == "elu":
        return nn.ELU(inplace=True)
    return nn.LeakyReLU(0.2, inplace=True)


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel: Sequence[int],
    stride: Sequence[int] | int = 1,
    pad_mode: str = "replicate",
    bias: bool = True,
) -> nn.Module:
    """Convolution with padding ``kernel // 2`` per axis in ``pad_mode`` ('same' when stride 1).

    With stride 2 and an odd kernel an axis of size ``n`` becomes ``ceil(n / 2)``.
    """
    _check_choice("MODEL.PAD_MODE", pad_mode, PAD_MODES)
    kernel = tuple(int(k) for k in kernel)
    padding = tuple(k // 2 for k in kernel)
    conv = _CONV[len(kernel)]
    return conv(
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=padding,
        padding_mode=pad_mode,
        bias=bias,
    )


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> activation (the conv has a bias only when ``norm_mode == 'none'``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int] | int = 1,
        pad_mode: str = "replicate",
        norm_mode: str = "bn",
        act_mode: str | None = "elu",
    ) -> None:
        ndim = len(kernel)
        layers: list[nn.Module] = [
            make_conv(
                in_channels, out_channels, kernel, stride, pad_mode, bias=norm_mode == "none"
            ),
            make_norm(norm_mode, out_channels, ndim),
        ]
        if act_mode is not None:
            layers.append(make_act(act_mode))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel re-weighting: global average -> 1x1 conv (C -> C/4) -> act -> 1x1 conv -> sigmoid."""

    def __init__(self, channels: int, ndim: int, act_mode: str = "elu", reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        one = (1,) * ndim
        self.body = nn.Sequential(
            _CONV[ndim](channels, hidden, one),
            make_act(act_mode),
            _CONV[ndim](hidden, channels, one),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        return x * self.body(x.mean(dim=dims, keepdim=True))


class ResidualBlock(nn.Module):
    """``act(x + norm(conv(act(norm(conv(x))))))``, optionally with squeeze-excitation.

    Shape-preserving: ``(B, C, *spatial) -> (B, C, *spatial)``.
    """

    def __init__(
        self,
        channels: int,
        kernel: Sequence[int],
        pad_mode: str = "replicate",
        norm_mode: str = "bn",
        act_mode: str = "elu",
        squeeze_excite: bool = False,
    ) -> None:
        super().__init__()
        ndim = len(kernel)
        self.conv1 = ConvNormAct(channels, channels, kernel, 1, pad_mode, norm_mode, act_mode)
        self.conv2 = ConvNormAct(channels, channels, kernel, 1, pad_mode, norm_mode, None)
        self.se = SqueezeExcite(channels, ndim, act_mode) if squeeze_excite else nn.Identity()
        self.act = make_act(act_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.se(self.conv2(self.conv1(x))))


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018), as PyTC's ``NonLocalBlock3D``
    without sub-sampling: every position attends to every other one.

    ``x + norm(W(softmax(theta(x)^T phi(x)) g(x)))`` with 1x1 convs to ``channels // 2``.
    Shape-preserving; memory grows with the square of the number of positions, so it is used
    at the coarsest level only. :meth:`zero_init` makes it start as the identity.
    """

    def __init__(self, channels: int, ndim: int, norm_mode: str = "bn") -> None:
        super().__init__()
        inner = max(channels // 2, 1)
        one = (1,) * ndim
        self.theta = _CONV[ndim](channels, inner, one)
        self.phi = _CONV[ndim](channels, inner, one)
        self.g = _CONV[ndim](channels, inner, one)
        self.out = nn.Sequential(_CONV[ndim](inner, channels, one), make_norm(norm_mode, channels, ndim))

    def zero_init(self) -> None:
        """Start as the identity (PyTC zeroes the output normalisation's scale)."""
        norm = self.out[1]
        target = norm if getattr(norm, "weight", None) is not None else self.out[0]
        nn.init.zeros_(target.weight)
        if target.bias is not None:
            nn.init.zeros_(target.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        phi = self.phi(x).flatten(2)  # (B, C', N)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, N, C')
        y = torch.softmax(theta @ phi, dim=-1) @ g  # (B, N, C')
        y = y.transpose(1, 2).reshape(b, -1, *x.shape[2:])
        return x + self.out(y)
