"""A few optimizer steps of model + Criterion + solver reduce the loss on a tiny problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from yacs.config import CfgNode as CN

from connectomics_data.engine import (
    Criterion,
    amp_enabled,
    build_grad_scaler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
)
from connectomics_data.models import build_model


def cfg_for(arch: str) -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.ARCHITECTURE = arch
    cfg.MODEL.FILTERS = [4, 8]
    cfg.MODEL.ISOTROPY = [False, False]
    cfg.MODEL.IN_PLANES = 1
    cfg.MODEL.OUT_PLANES = 1
    cfg.MODEL.INPUT_SIZE = [3, 16, 16] if arch == "unet_3d" else [1, 16, 16]
    cfg.MODEL.TARGET_OPT = ["0"]
    cfg.MODEL.LOSS_OPTION = [["WeightedBCEWithLogitsLoss", "DiceLoss"]]
    cfg.MODEL.LOSS_WEIGHT = [[1.0, 0.5]]
    cfg.MODEL.OUTPUT_ACT = [["none", "sigmoid"]]
    cfg.MODEL.WEIGHT_OPT = [["1", "0"]]
    cfg.SOLVER = CN()
    cfg.SOLVER.NAME = "Adam"
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.WARMUP_ITERS = 5
    cfg.SOLVER.ITERATION_TOTAL = 200
    cfg.SOLVER.CLIP_GRADIENTS = CN()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
    return cfg


def run(arch: str, steps: int = 25) -> list[float]:
    cfg = cfg_for(arch)
    rng = np.random.default_rng(0)
    spatial = (3, 16, 16) if arch == "unet_3d" else (16, 16)
    image = rng.random((4, 1, *spatial), dtype=np.float32)
    x = torch.from_numpy(image)
    target = torch.from_numpy((image > 0.6).astype(np.float32))
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))
    criterion = Criterion(cfg, [1])
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = criterion(model(x), [target], [[None, None]])
        loss.backward()
        clip_gradients(cfg, model)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_3d_training_reduces_loss():
    losses = run("unet_3d")
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0]


def test_2d_training_reduces_loss():
    losses = run("unet_2d")
    assert losses[-1] < 0.6 * losses[0]


def test_criterion_inside_cpu_autocast_is_float32():
    cfg = cfg_for("unet_2d")
    model = build_model(cfg, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    target = (x > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss, _ = Criterion(cfg, [1])(out, [target], None)
    assert out.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_training_step_on_cuda():
    cfg = cfg_for("unet_3d")
    cfg.MODEL.MIXED_PRECESION = True
    device = torch.device("cuda")
    model = build_model(cfg, device, generator=torch.Generator().manual_seed(0))
    criterion = Criterion(cfg, [1])
    opt = build_optimizer(cfg, model)
    scaler = build_grad_scaler(cfg, device)
    assert scaler.is_enabled()
    x = torch.rand(2, 1, 3, 16, 16, device=device)
    target = (x > 0.5).float().cpu()
    with torch.autocast("cuda", enabled=amp_enabled(cfg, device)):
        loss, _ = criterion(model(x), [target], [[None, None]])
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    clip_gradients(cfg, model)
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
