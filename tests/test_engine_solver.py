"""Optimizer parameter groups, exact per-iteration learning rates, gradient clipping, AMP switch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from yacs.config import CfgNode as CN

from connectomics_data.engine.solver import (
    amp_enabled,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
)
from connectomics_data.errors import ConfigError


def solver_cfg(**solver: object) -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.MIXED_PRECESION = False
    s = CN()
    s.NAME = "SGD"
    s.BASE_LR = 0.1
    s.MOMENTUM = 0.9
    s.BETAS = [0.9, 0.999]
    s.WEIGHT_DECAY = 1e-4
    s.WEIGHT_DECAY_NORM = 0.0
    s.WEIGHT_DECAY_BIAS = 0.0
    s.BIAS_LR_FACTOR = 1.0
    s.LR_SCHEDULER_NAME = "MultiStepLR"
    s.STEPS = [5, 8]
    s.GAMMA = 0.1
    s.WARMUP_FACTOR = 0.25
    s.WARMUP_ITERS = 4
    s.WARMUP_METHOD = "linear"
    s.ITERATION_TOTAL = 10
    s.CLIP_GRADIENTS = CN()
    s.CLIP_GRADIENTS.ENABLED = False
    s.CLIP_GRADIENTS.CLIP_TYPE = "value"
    s.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    s.CLIP_GRADIENTS.NORM_TYPE = 2.0
    for key, value in solver.items():
        s[key] = value
    cfg.SOLVER = s
    return cfg


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Conv3d(2, 1, 1))


def lrs(cfg: CN, n: int) -> list[float]:
    """Learning rate of the first group at iterations 0 .. n-1 (stepping once per iteration)."""
    model = nn.Linear(1, 1, bias=False)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def group_of(opt: torch.optim.Optimizer, param: torch.Tensor) -> dict:
    (group,) = [g for g in opt.param_groups if any(p is param for p in g["params"])]
    return group


def test_param_groups_norm_bias_and_weights():
    net = tiny_net()
    cfg = solver_cfg(BIAS_LR_FACTOR=2.0, WEIGHT_DECAY_NORM=0.5, WEIGHT_DECAY_BIAS=0.25)
    opt = build_optimizer(cfg, net)
    conv, bn = net[0], net[1]
    assert (group_of(opt, conv.weight)["lr"], group_of(opt, conv.weight)["weight_decay"]) == (
        0.1,
        1e-4,
    )
    assert group_of(opt, conv.bias)["lr"] == pytest.approx(0.2)
    assert group_of(opt, conv.bias)["weight_decay"] == 0.25
    for p in (bn.weight, bn.bias):  # norm parameters: norm decay, base rate
        assert (group_of(opt, p)["lr"], group_of(opt, p)["weight_decay"]) == (0.1, 0.5)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))
    assert opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(
    ("name", "cls"), [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)]
)
def test_adam_family_uses_betas(name, cls):
    opt = build_optimizer(solver_cfg(NAME=name, BETAS=[0.5, 0.9]), tiny_net())
    assert type(opt) is cls
    assert opt.param_groups[0]["betas"] == (0.5, 0.9)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match=r"SOLVER.NAME 'RMSprop'.*SGD, Adam, AdamW"):
        build_optimizer(solver_cfg(NAME="RMSprop"), tiny_net())


def test_warmup_multistep_exact():
    got = lrs(solver_cfg(LR_SCHEDULER_NAME="WarmupMultiStepLR"), 10)
    warm = [0.25 * (1 - i / 4) + i / 4 for i in range(4)]  # 0.25, 0.4375, 0.625, 0.8125
    expected = [0.1 * w for w in warm] + [0.1, 0.01, 0.01, 0.01, 0.001, 0.001]
    assert got == pytest.approx(expected, rel=1e-12)


def test_warmup_constant():
    got = lrs(solver_cfg(LR_SCHEDULER_NAME="WarmupMultiStepLR", WARMUP_METHOD="constant"), 6)
    assert got == pytest.approx([0.025] * 4 + [0.1, 0.01], rel=1e-12)


def test_warmup_cosine_exact_and_zero_after_total():
    cfg = solver_cfg(
        LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=1.0, WARMUP_ITERS=2, WARMUP_FACTOR=0.5
    )
    got = lrs(cfg, 13)
    warm = [0.5, 0.75] + [1.0] * 11
    expected = [w * 0.5 * (1 + math.cos(math.pi * min(i, 10) / 10)) for i, w in enumerate(warm)]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert got[5] == pytest.approx(0.5) and got[10:] == [0.0, 0.0, 0.0]


def test_multistep_and_cosine_match_torch():
    cfg = solver_cfg()
    model = nn.Linear(1, 1)
    ref_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, [5, 8], 0.1)
    expected = []
    for _ in range(10):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert lrs(cfg, 10) == pytest.approx(expected, rel=1e-12)

    ref_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=10)
    expected = []
    for _ in range(11):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    got = lrs(solver_cfg(LR_SCHEDULER_NAME="CosineAnnealingLR"), 11)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_schedule_keeps_bias_lr_factor():
    cfg = solver_cfg(LR_SCHEDULER_NAME="WarmupMultiStepLR", BIAS_LR_FACTOR=2.0)
    net = nn.Linear(2, 1)
    opt = build_optimizer(cfg, net)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(5):
        opt.step()
        sched.step()
    assert group_of(opt, net.weight)["lr"] == pytest.approx(0.01)
    assert group_of(opt, net.bias)["lr"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"LR_SCHEDULER_NAME": "ReduceLROnPlateau"}, "ReduceLROnPlateau.*not supported"),
        ({"LR_SCHEDULER_NAME": "WarmupMultiStepLR", "STEPS": [8, 5]}, "SOLVER.STEPS"),
        ({"WARMUP_METHOD": "exp"}, "SOLVER.WARMUP_METHOD"),
    ],
)
def test_scheduler_config_errors(overrides, pattern):
    cfg = solver_cfg(**overrides)
    with pytest.raises(ConfigError, match=pattern):
        build_lr_scheduler(cfg, build_optimizer(cfg, tiny_net()))


def set_grads(net: nn.Linear, values: list[float]) -> None:
    net.weight.grad = torch.tensor([values])


def test_clip_by_value_norm_and_disabled():
    net = nn.Linear(2, 1, bias=False)
    cfg = solver_cfg()
    set_grads(net, [3.0, -4.0])
    assert clip_gradients(cfg, net) is None
    assert net.weight.grad.tolist() == [[3.0, -4.0]]

    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    clip_gradients(cfg, net)
    assert net.weight.grad.tolist() == [[0.5, -0.5]]

    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    set_grads(net, [3.0, -4.0])
    norm = clip_gradients(cfg, net)
    assert norm.item() == pytest.approx(5.0)
    assert net.weight.grad.flatten().tolist() == pytest.approx([0.6, -0.8], rel=1e-5)

    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "elementwise"
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        clip_gradients(cfg, net)


def test_amp_only_on_cuda_and_independent_of_distributed():
    cfg = solver_cfg()
    assert not amp_enabled(cfg, "cuda")
    cfg.MODEL.MIXED_PRECESION = True
    assert amp_enabled(cfg, "cuda:0")
    assert not amp_enabled(cfg, "cpu")
