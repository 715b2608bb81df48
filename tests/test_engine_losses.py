"""Losses against hand-computed values; Criterion splitting/activation/weighting; config checks."""

from __future__ import annotations

import math

import pytest
import torch
from yacs.config import CfgNode as CN

from connectomics_data.engine.losses import (
    Criterion,
    cross_entropy,
    dice_loss,
    prediction_activation,
    weighted_bce,
    weighted_bce_with_logits,
    weighted_mae,
    weighted_mse,
)
from connectomics_data.errors import ConfigError


def t(*values: float) -> torch.Tensor:
    """A (1, 1, n) float64 tensor: batch 1, one channel, n voxels."""
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, -1)


def loss_cfg(
    targets=("0",),
    losses=(("WeightedBCEWithLogitsLoss",),),
    weights=((1.0,),),
    acts=(("none",),),
    weight_opt=(("1",),),
    out_planes=1,
    inference_act=("sigmoid",),
) -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.OUT_PLANES = out_planes
    cfg.MODEL.TARGET_OPT = list(targets)
    cfg.MODEL.LOSS_OPTION = [list(x) for x in losses]
    cfg.MODEL.LOSS_WEIGHT = [list(x) for x in weights]
    cfg.MODEL.OUTPUT_ACT = [list(x) for x in acts]
    cfg.MODEL.WEIGHT_OPT = [list(x) for x in weight_opt]
    cfg.INFERENCE = CN()
    cfg.INFERENCE.OUTPUT_ACT = list(inference_act)
    return cfg


def test_weighted_bce_hand_value():
    # -ln(0.8) weighted 2, -ln(0.7) weighted 1, mean over 2 elements
    value = weighted_bce(t(0.8, 0.3), t(1.0, 0.0), t(2.0, 1.0))
    assert value.item() == pytest.approx((2 * -math.log(0.8) - math.log(0.7)) / 2, rel=1e-12)
    unweighted = weighted_bce(t(0.8, 0.3), t(1.0, 0.0))
    assert unweighted.item() == pytest.approx((-math.log(0.8) - math.log(0.7)) / 2, rel=1e-12)


def test_weighted_bce_with_logits_hand_value():
    # sigmoid(0) = 0.5 -> ln 2 ; sigmoid(ln 4) = 0.8 against 0 -> -ln 0.2 = ln 5
    value = weighted_bce_with_logits(t(0.0, math.log(4.0)), t(1.0, 0.0), t(1.0, 3.0))
    assert value.item() == pytest.approx((math.log(2) + 3 * math.log(5)) / 2, rel=1e-12)


def test_dice_hand_values_per_sample_mean():
    pred = torch.tensor([[[1.0, 0.5, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    gt = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    # sample 0: I = 1.5, |p| + |t| = 3.5 -> 1 - 4 / 4.5 ; sample 1: 1 - 1 / 2
    assert dice_loss(pred, gt, smooth=1.0).item() == pytest.approx((1 / 9 + 0.5) / 2, rel=1e-12)
    # PyTC's default smoothing 100
    expected = ((1 - 103 / 103.5) + (1 - 100 / 101)) / 2
    assert dice_loss(pred, gt).item() == pytest.approx(expected, rel=1e-12)
    # a weight of 0 on the second voxel removes it: I = 1, |p| + |t| = 2 -> 1 - 3 / 3
    w = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]], dtype=torch.float64)
    assert dice_loss(pred[:1], gt[:1], w, smooth=1.0).item() == pytest.approx(0.0, abs=1e-15)


def test_mse_mae_hand_values():
    pred, gt, w = t(1.0, 2.0, 3.0), t(1.0, 0.0, 0.0), t(1.0, 1.0, 2.0)
    assert weighted_mse(pred, gt, w).item() == pytest.approx(22 / 3, rel=1e-12)
    assert weighted_mae(pred, gt, w).item() == pytest.approx(8 / 3, rel=1e-12)
    assert weighted_mse(pred, gt).item() == pytest.approx(13 / 3, rel=1e-12)


def test_cross_entropy_hand_value_with_channel_axis_target():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], dtype=torch.float64)  # (1,2,2)
    target = torch.tensor([[[1, 0]]])  # (1,1,2) int64
    # voxel 0: p(1) = 3/4 ; voxel 1: equal logits, p(0) = 1/2 ; weights 1 and 4
    value = cross_entropy(logits, target, torch.tensor([[[1.0, 4.0]]], dtype=torch.float64))
    assert value.item() == pytest.approx((-math.log(0.75) + 4 * math.log(2)) / 2, rel=1e-12)


def test_criterion_splits_channels_applies_acts_and_weights():
    cfg = loss_cfg(
        targets=("0", "6"),
        losses=(("WeightedBCEWithLogitsLoss", "DiceLoss"), ("WeightedMSE",)),
        weights=((1.0, 0.5), (2.0,)),
        acts=(("none", "sigmoid"), ("tanh",)),
        weight_opt=(("1", "0"), ("0",)),
        out_planes=3,
    )
    crit = Criterion(cfg, [1, 2])
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 3, 4, 4, generator=gen, requires_grad=True)
    mask = (torch.rand(2, 1, 3, 4, 4, generator=gen) > 0.5).float()
    dist = torch.rand(2, 2, 3, 4, 4, generator=gen) * 2 - 1
    w = torch.rand(2, 1, 3, 4, 4, generator=gen)
    total, terms = crit(pred, [mask, dist], [[w, None], [None]])
    bce = weighted_bce_with_logits(pred[:, :1], mask, w)
    dice = dice_loss(torch.sigmoid(pred[:, :1]), mask)
    mse = weighted_mse(torch.tanh(pred[:, 1:]), dist)
    assert total.item() == pytest.approx((bce + 0.5 * dice + 2.0 * mse).item(), rel=1e-6)
    assert set(terms) == {"t0.WeightedBCEWithLogitsLoss", "t0.DiceLoss", "t1.WeightedMSE"}
    assert terms["t1.WeightedMSE"].item() == pytest.approx(2.0 * mse.item(), rel=1e-6)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_weighted_bce_on_raw_output_is_bce_of_sigmoid():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(1, 1, 2, 5, 5, generator=gen)
    mask = (torch.rand(1, 1, 2, 5, 5, generator=gen) > 0.5).float()
    raw, _ = Criterion(loss_cfg(losses=(("WeightedBCE",),)), [1])(pred, [mask])
    sig, _ = Criterion(loss_cfg(losses=(("WeightedBCE",),), acts=(("sigmoid",),)), [1])(
        pred, [mask]
    )
    assert raw.item() == pytest.approx(weighted_bce(torch.sigmoid(pred), mask).item(), rel=1e-6)
    assert raw.item() == pytest.approx(sig.item(), rel=1e-6)


def test_criterion_cross_entropy_target():
    cfg = loss_cfg(targets=("9-3",), losses=(("CrossEntropy",),), out_planes=3)
    pred = torch.zeros(1, 3, 2, 2, 2)
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.int64)
    total, _ = Criterion(cfg, [3])(pred, [labels])
    assert total.item() == pytest.approx(math.log(3), rel=1e-6)


def test_criterion_rejects_wrong_target_shape():
    crit = Criterion(loss_cfg(), [1])
    with pytest.raises(ValueError, match="target 0 has shape"):
        crit(torch.zeros(1, 1, 4, 4), [torch.zeros(1, 2, 4, 4)])


@pytest.mark.parametrize(
    ("kwargs", "channels", "pattern"),
    [
        ({"out_planes": 2}, [1], "MODEL.OUT_PLANES is 2"),
        ({"weights": ((1.0,), (1.0,))}, [1], "MODEL.LOSS_WEIGHT has 2"),
        ({"targets": ("0", "4")}, [1], "MODEL.TARGET_OPT has 2"),
        ({"acts": (("none", "sigmoid"),)}, [1], r"MODEL.OUTPUT_ACT\[0\]"),
        ({"losses": (("FocalLoss",),)}, [1], "FocalLoss.*available"),
        ({"acts": (("sigmoid",),)}, [1], "must be 'none' for WeightedBCEWithLogitsLoss"),
        ({"losses": (("WeightedBCE",),), "acts": (("tanh",),)}, [1], "tanh"),
        ({"losses": (("DiceLoss",),), "acts": (("softmax",),)}, [1], "softmax"),
        ({"losses": (("DiceLoss",),), "acts": (("relu",),)}, [1], "relu"),
        (
            {
                "losses": (("CrossEntropy", "DiceLoss"),),
                "weights": ((1.0, 1.0),),
                "acts": (("none", "softmax"),),
                "weight_opt": (("0", "0"),),
                "out_planes": 2,
            },
            [2],
            "mixes a cross-entropy",
        ),
    ],
)
def test_criterion_config_errors_name_the_keys(kwargs, channels, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Criterion(loss_cfg(**kwargs), channels)


def test_prediction_activation_per_target():
    cfg = loss_cfg(
        targets=("0", "6", "9-2"),
        losses=(("WeightedBCE",),) * 3,
        weights=((1.0,),) * 3,
        acts=(("none",),) * 3,
        weight_opt=(("0",),) * 3,
        out_planes=4,
        inference_act=("sigmoid", "tanh", "softmax"),
    )
    act = prediction_activation(cfg, [1, 1, 2])
    x = torch.tensor([0.0, 0.0, math.log(3.0), 0.0]).reshape(1, 4, 1)
    out = act(x).flatten().tolist()
    assert out == pytest.approx([0.5, 0.5, 0.75, 0.25], rel=1e-6)
    # tanh is rescaled to [0, 1]: -inf -> 0, +inf -> 1
    lo = act(torch.full((1, 4, 1), -50.0)).flatten().tolist()
    hi = act(torch.full((1, 4, 1), 50.0)).flatten().tolist()
    assert lo[1] == pytest.approx(0.0, abs=1e-12) and hi[1] == pytest.approx(1.0)
    assert lo[2:] == pytest.approx([0.5, 0.5]) and hi[2:] == pytest.approx([0.5, 0.5])


def test_prediction_activation_length_mismatch():
    cfg = loss_cfg(targets=("0", "0"), out_planes=2, inference_act=("sigmoid",))
    with pytest.raises(ConfigError, match="INFERENCE.OUTPUT_ACT"):
        prediction_activation(cfg, [1, 1])


def test_prediction_activation_extra_entries_ignored_as_in_pytc():
    cfg = loss_cfg(inference_act=("tanh", "softmax"))
    act = prediction_activation(cfg, [1])
    assert act.acts == ["tanh"]
