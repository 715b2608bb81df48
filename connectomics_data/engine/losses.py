"""Training losses per target (MODEL.LOSS_OPTION / LOSS_WEIGHT / OUTPUT_ACT / WEIGHT_OPT).

The model's output ``(B, OUT_PLANES, *spatial)`` is split along channels into one group per
target (``target_channels``, e.g. 1 for a binary mask, 3 for 3D affinities). For target ``i``
and loss ``j``, ``MODEL.OUTPUT_ACT[i][j]`` is applied to the group, then loss ``j`` is computed
against target ``i`` with the dataset's weight ``weights[i][j]`` (None = unweighted) and scaled
by ``MODEL.LOSS_WEIGHT[i][j]``; the total is the sum. Losses are computed in float32 even when
the forward pass ran under autocast.

Loss names (PyTC's):

* ``WeightedBCEWithLogitsLoss``: binary cross-entropy on logits; OUTPUT_ACT must be 'none'.
* ``WeightedBCE``: binary cross-entropy on the activated output (OUTPUT_ACT 'sigmoid' or
  'softmax'). With OUTPUT_ACT 'none' the output is taken as logits (the numerically stable
  equivalent of sigmoid + BCE), so PyTC's default ``[['WeightedBCE']]`` / ``[['none']]`` works.
* ``DiceLoss``: soft Dice on the activated output, per sample, ``1 - (2 sum(wpt) + s) /
  (sum(wp) + sum(wt) + s)`` with PyTC's smoothing ``s = 100``, averaged over the batch.
* ``WeightedMSE`` / ``WeightedMAE``: ``mean(w * (p - t)^2)`` / ``mean(w * |p - t|)`` over all
  elements (PyTC divides by batch x voxels and sums channels; the mean is used here so that
  the scale does not grow with the channel count).
* ``CrossEntropy`` (alias PyTC's ``WeightedCE``): multi-class CE on logits against an int64
  class map ``(B, *spatial)`` or ``(B, 1, *spatial)``; OUTPUT_ACT must be 'none'.

Every weighted mean divides by the number of elements, not by the sum of the weights (PyTC's
convention), so a weight map of ones equals the unweighted loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

Tensor = torch.Tensor
ACTIVATIONS = ("none", "sigmoid", "tanh", "softmax")


def _weighted_mean(loss: Tensor, weight: Tensor | None) -> Tensor:
    if weight is not None:
        loss = loss * weight.to(device=loss.device, dtype=loss.dtype, non_blocking=True)
    return loss.mean()


def weighted_bce(prob: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """``mean(w * BCE(prob, target))``; ``prob`` in [0, 1] (log clamped at -100 like torch)."""
    return _weighted_mean(F.binary_cross_entropy(prob, target, reduction="none"), weight)


def weighted_bce_with_logits(
    logits: Tensor, target: Tensor, weight: Tensor | None = None
) -> Tensor:
    """``mean(w * BCE(sigmoid(logits), target))``, computed stably from the logits."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return _weighted_mean(loss, weight)


def dice_loss(
    prob: Tensor, target: Tensor, weight: Tensor | None = None, smooth: float = 100.0
) -> Tensor:
    """Soft Dice loss per sample, averaged over the batch (see the module docstring)."""
    if weight is None:
        weight = torch.ones((), device=prob.device, dtype=prob.dtype)
    weight = torch.broadcast_to(weight.to(prob.device, prob.dtype), prob.shape)
    dims = tuple(range(1, prob.ndim))
    intersection = (weight * prob * target).sum(dims)
    denominator = (weight * prob).sum(dims) + (weight * target).sum(dims)
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


def weighted_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """``mean(w * (pred - target)^2)`` over all elements."""
    return _weighted_mean((pred - target) ** 2, weight)


def weighted_mae(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """``mean(w * |pred - target|)`` over all elements."""
    return _weighted_mean((pred - target).abs(), weight)


def cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """``mean(w * CE(logits, target))``: logits ``(B, C, *sp)``, target int64 ``(B[, 1], *sp)``."""
    if target.ndim == logits.ndim:
        target = target.squeeze(1)
    if weight is not None and weight.ndim == logits.ndim:
        weight = weight.squeeze(1)
    loss = F.cross_entropy(logits, target.long(), reduction="none")
    return _weighted_mean(loss, weight)


LossFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]

LOSSES: dict[str, LossFn] = {
    "WeightedBCE": weighted_bce,
    "WeightedBCEWithLogitsLoss": weighted_bce_with_logits,
    "DiceLoss": dice_loss,
    "WeightedMSE": weighted_mse,
    "WeightedMAE": weighted_mae,
    "CrossEntropy": cross_entropy,
    "WeightedCE": cross_entropy,
}
"""Available loss names (MODEL.LOSS_OPTION entries)."""

_CE_LOSSES = ("CrossEntropy", "WeightedCE")
_LOGIT_LOSSES = ("WeightedBCEWithLogitsLoss", *_CE_LOSSES)


def activate(x: Tensor, act: str, rescale_tanh: bool = False) -> Tensor:
    """Apply ``act`` to one target's channels ``(B, C, *spatial)`` (softmax over C).

    With ``rescale_tanh`` tanh outputs are mapped to [0, 1] as ``(tanh + 1) / 2``.
    """
    if act == "none":
        return x
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "tanh":
        y = torch.tanh(x)
        return (y + 1.0) / 2.0 if rescale_tanh else y
    if act == "softmax":
        return torch.softmax(x, dim=1)
    raise ConfigError(f"output activation {act!r} is not one of {ACTIVATIONS}")


def _check_channels(cfg: Any, target_channels: Sequence[int]) -> list[int]:
    channels = [int(c) for c in target_channels]
    out_planes = int(cfg.MODEL.OUT_PLANES)
    if sum(channels) != out_planes or any(c < 1 for c in channels):
        raise ConfigError(
            f"MODEL.OUT_PLANES is {out_planes} but the targets MODEL.TARGET_OPT "
            f"{list(cfg.MODEL.TARGET_OPT)} need {channels} channels (sum {sum(channels)})"
        )
    return channels


def _check_act(key: str, act: str, channels: int) -> None:
    if act not in ACTIVATIONS:
        raise ConfigError(f"{key} is {act!r}; expected one of {ACTIVATIONS}")
    if act == "softmax" and channels == 1:
        raise ConfigError(
            f"{key} is 'softmax' but its target has 1 channel (softmax over one channel is "
            f"constant 1); use 'sigmoid'"
        )


class Criterion(nn.Module):
    """Weighted sum of the configured losses over all targets.

    Args:
        cfg: config with MODEL.{TARGET_OPT, LOSS_OPTION, LOSS_WEIGHT, OUTPUT_ACT, WEIGHT_OPT,
            OUT_PLANES}.
        target_channels: channels of each target, in TARGET_OPT order; must sum to OUT_PLANES.

    Call ``criterion(pred, targets, weights)`` with ``pred`` ``(B, OUT_PLANES, *spatial)``,
    ``targets[i]`` ``(B, C_i, *spatial)`` float (int64 class map for CrossEntropy) and
    ``weights[i][j]`` a tensor broadcastable to target ``i`` or None; ``weights`` itself may be
    None. Targets and weights may live on the CPU; they are moved to ``pred``'s device.
    Returns ``(total, terms)``: the scalar loss and a dict ``'t{i}.{LossName}' -> detached
    scaled term``.

    Raises:
        ConfigError: at construction, for mismatched list lengths (naming the keys), unknown
            loss names, impossible activation/loss pairs or channels not summing to OUT_PLANES.
    """

    def __init__(self, cfg: Any, target_channels: Sequence[int]) -> None:
        super().__init__()
        model = cfg.MODEL
        self.channels = _check_channels(cfg, target_channels)
        keys = ("TARGET_OPT", "LOSS_OPTION", "LOSS_WEIGHT", "OUTPUT_ACT", "WEIGHT_OPT")
        lengths = {key: len(model[key]) for key in keys}
        if len(set(lengths.values())) != 1 or lengths["TARGET_OPT"] != len(self.channels):
            detail = ", ".join(f"MODEL.{k} has {n}" for k, n in lengths.items())
            raise ConfigError(
                f"the per-target lists must have one entry per target "
                f"({len(self.channels)} targets): {detail}"
            )
        self.terms: list[list[tuple[str, str, float]]] = []
        self.labels: list[list[str]] = []
        self.class_target: list[bool] = []
        for i, n_ch in enumerate(self.channels):
            per = {k: list(model[k][i]) for k in keys[1:]}
            if len({len(v) for v in per.values()}) != 1:
                detail = ", ".join(f"MODEL.{k}[{i}] = {v}" for k, v in per.items())
                raise ConfigError(f"target {i} needs one entry per loss in each list: {detail}")
            terms = []
            for j, (name, weight, act) in enumerate(
                zip(per["LOSS_OPTION"], per["LOSS_WEIGHT"], per["OUTPUT_ACT"])
            ):
                key = f"MODEL.OUTPUT_ACT[{i}][{j}]"
                if name not in LOSSES:
                    raise ConfigError(
                        f"MODEL.LOSS_OPTION[{i}][{j}] {name!r} is not available; "
                        f"available: {', '.join(LOSSES)}"
                    )
                _check_act(key, act, n_ch)
                if name in _LOGIT_LOSSES and act != "none":
                    raise ConfigError(f"{key} must be 'none' for {name}, which takes logits")
                if name == "WeightedBCE" and act == "tanh":
                    raise ConfigError(f"{key} 'tanh' gives values in [-1, 1]; BCE needs [0, 1]")
                if name in _CE_LOSSES and n_ch < 2:
                    raise ConfigError(
                        f"MODEL.LOSS_OPTION[{i}][{j}] {name} needs a target with >= 2 channels "
                        f"(classes), target {i} has {n_ch}"
                    )
                terms.append((name, act, float(weight)))
            names = [name for name, _, _ in terms]
            ce = [name in _CE_LOSSES for name in names]
            if any(ce) and not all(ce):
                raise ConfigError(
                    f"MODEL.LOSS_OPTION[{i}] {names} mixes a cross-entropy loss (int64 class "
                    f"map target) with losses that need a float target of the same shape"
                )
            self.class_target.append(all(ce))
            self.labels.append(
                [
                    f"t{i}.{n}" if names.count(n) == 1 else f"t{i}.{n}.{j}"
                    for j, n in enumerate(names)
                ]
            )
            self.terms.append(terms)

    def forward(
        self,
        pred: Tensor,
        targets: Sequence[Tensor],
        weights: Sequence[Sequence[Tensor | None]] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if pred.shape[1] != sum(self.channels):
            raise ValueError(
                f"model output has {pred.shape[1]} channels, expected {sum(self.channels)}"
            )
        if len(targets) != len(self.channels):
            raise ValueError(f"got {len(targets)} targets, expected {len(self.channels)}")
        # float32 losses even inside an autocast region (BCE is not autocast-safe on CUDA)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self._evaluate(pred.float(), targets, weights)

    def _evaluate(
        self,
        pred: Tensor,
        targets: Sequence[Tensor],
        weights: Sequence[Sequence[Tensor | None]] | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        groups = torch.split(pred, self.channels, dim=1)
        total = pred.new_zeros((), dtype=torch.float32)
        out: dict[str, Tensor] = {}
        for i, (group, target, terms) in enumerate(zip(groups, targets, self.terms)):
            target = target.to(pred.device, non_blocking=True)
            if not self.class_target[i]:
                target = target.float()
                if target.shape != group.shape:
                    raise ValueError(
                        f"target {i} has shape {tuple(target.shape)}, expected "
                        f"{tuple(group.shape)} (the model output's channels for this target)"
                    )
            for j, (name, act, scale) in enumerate(terms):
                weight = None if weights is None else weights[i][j]
                if name == "WeightedBCE" and act == "none":
                    value = weighted_bce_with_logits(group, target, weight)
                else:
                    value = LOSSES[name](activate(group, act), target, weight)
                value = scale * value
                total = total + value
                out[self.labels[i][j]] = value.detach()
        return total, out


class PredictionActivation:
    """Apply INFERENCE.OUTPUT_ACT per target to a prediction ``(B, C, *spatial)``.

    tanh is rescaled to [0, 1]; softmax runs over the target's own channels. Returns a new
    tensor of the same shape.
    """

    def __init__(self, acts: Sequence[str], channels: Sequence[int]) -> None:
        self.acts = list(acts)
        self.channels = [int(c) for c in channels]

    def __call__(self, pred: Tensor) -> Tensor:
        if pred.shape[1] != sum(self.channels):
            raise ValueError(
                f"prediction has {pred.shape[1]} channels, expected {sum(self.channels)}"
            )
        groups = torch.split(pred, self.channels, dim=1)
        return torch.cat(
            [activate(g, a, rescale_tanh=True) for g, a in zip(groups, self.acts)], dim=1
        )


def prediction_activation(cfg: Any, target_channels: Sequence[int]) -> PredictionActivation:
    """Build the per-target inference activation from INFERENCE.OUTPUT_ACT.

    Extra INFERENCE.OUTPUT_ACT entries beyond one per target are ignored, as in PyTC (the
    config loader warns about them).

    Raises:
        ConfigError: INFERENCE.OUTPUT_ACT has fewer entries than MODEL.TARGET_OPT, an
            unknown activation, or channels not summing to MODEL.OUT_PLANES.
    """
    channels = _check_channels(cfg, target_channels)
    acts = list(cfg.INFERENCE.OUTPUT_ACT)
    if len(acts) > len(channels):  # PyTC ignores the extra entries (warned at config load)
        acts = acts[: len(channels)]
    if len(acts) != len(channels):
        raise ConfigError(
            f"INFERENCE.OUTPUT_ACT {acts} has {len(acts)} entries but MODEL.TARGET_OPT "
            f"{list(cfg.MODEL.TARGET_OPT)} has {len(channels)} targets; give one per target"
        )
    for i, (act, n_ch) in enumerate(zip(acts, channels)):
        _check_act(f"INFERENCE.OUTPUT_ACT[{i}]", act, n_ch)
    return PredictionActivation(acts, channels)
