"""Checkpoint round trips, resume/restart, PyTC-style files, and every failure mode."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from torch import nn
from yacs.config import CfgNode as CN

from connectomics_data.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from connectomics_data.engine.solver import build_lr_scheduler, build_optimizer
from connectomics_data.errors import CheckpointError
from connectomics_data.models import build_model


def make_cfg(arch: str = "unet_3d", filters=(4, 8)) -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.ARCHITECTURE = arch
    cfg.MODEL.FILTERS = list(filters)
    cfg.MODEL.ISOTROPY = [False] * len(filters)
    cfg.MODEL.IN_PLANES = 1
    cfg.MODEL.OUT_PLANES = 1
    cfg.MODEL.INPUT_SIZE = [1, 8, 8] if arch == "unet_2d" else [2, 8, 8]
    cfg.SOLVER = CN()
    cfg.SOLVER.NAME = "Adam"
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.BETAS = [0.9, 0.999]
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.ITERATION_TOTAL = 100
    cfg.SOLVER.WARMUP_ITERS = 10
    return cfg


def training_state(cfg: CN, seed: int, steps: int):
    model = build_model(cfg, generator=torch.Generator().manual_seed(seed))
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    shape = (2, 1, 1, 8, 8) if cfg.MODEL.ARCHITECTURE == "unet_3d" else (2, 1, 8, 8)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_weights_optimizer_scheduler_and_iteration(tmp_path):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=3)
    path = save_checkpoint(tmp_path / "ckpt.pth.tar", model, opt, sched, 7, cfg)
    assert os.listdir(tmp_path) == ["ckpt.pth.tar"]

    fresh, fresh_opt, fresh_sched = training_state(cfg, seed=1, steps=0)
    assert not params_equal(model, fresh)
    assert load_checkpoint(path, fresh, fresh_opt, fresh_sched) == 7
    assert params_equal(model, fresh)
    assert fresh_sched.last_epoch == sched.last_epoch == 3
    assert fresh_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    p = next(iter(model.parameters()))
    q = next(iter(fresh.parameters()))
    assert torch.equal(opt.state[p]["exp_avg"], fresh_opt.state[q]["exp_avg"])

    state = torch.load(path, weights_only=True)  # only safe types inside
    assert state["architecture"] == "unet_3d" and state["format_version"] == 1
    assert CN.load_cfg(state["config"]) == cfg


def test_restart_loads_weights_only(tmp_path):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=2)
    save_checkpoint(tmp_path / "c.pth", model, opt, sched, 2, cfg)
    fresh, fresh_opt, fresh_sched = training_state(cfg, seed=1, steps=0)
    assert load_checkpoint(tmp_path / "c.pth", fresh, fresh_opt, fresh_sched, restart=True) == 0
    assert params_equal(model, fresh)
    assert fresh_opt.state == {} and fresh_sched.last_epoch == 0


def test_data_parallel_wrapper_saves_plain_keys(tmp_path):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=0)
    save_checkpoint(tmp_path / "c.pth", nn.DataParallel(model), opt, sched, 1, cfg)
    keys = read_checkpoint(tmp_path / "c.pth")["model"].keys()
    assert not any(k.startswith("module.") for k in keys)


def test_pytc_style_checkpoint_with_module_prefix(tmp_path):
    cfg = make_cfg()
    model, _, _ = training_state(cfg, seed=0, steps=0)
    weights = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"iteration": 5, "state_dict": weights}, tmp_path / "pytc.pth.tar")
    fresh, fresh_opt, _ = training_state(cfg, seed=1, steps=0)
    with pytest.warns(UserWarning, match="no optimizer state"):
        assert load_checkpoint(tmp_path / "pytc.pth.tar", fresh, fresh_opt) == 5
    assert params_equal(model, fresh)


def test_missing_file(tmp_path):
    model, _, _ = training_state(make_cfg(), seed=0, steps=0)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.pth"):
        load_checkpoint(tmp_path / "nope.pth", model)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_checkpoint(tmp_path, keep):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=1)
    path = save_checkpoint(tmp_path / "c.pth", model, opt, sched, 1, cfg)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"c\.pth: the file is truncated or corrupt"):
        load_checkpoint(path, model)


def test_garbage_and_non_weight_files(tmp_path):
    model, _, _ = training_state(make_cfg(), seed=0, steps=0)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "junk.pth", model)
    torch.save({"iteration": 3}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="has no model weights"):
        load_checkpoint(tmp_path / "empty.pth", model)


def test_unsafe_pickle_is_refused(tmp_path):
    model, _, _ = training_state(make_cfg(), seed=0, steps=0)
    torch.save({"model": model.state_dict(), "extra": nn.Linear(1, 1)}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear\.Linear.*for safety"):
        load_checkpoint(tmp_path / "obj.pth", model)


def test_other_architecture_names_architecture_and_keys(tmp_path):
    cfg2d = make_cfg("unet_2d")
    m2d, opt, sched = training_state(cfg2d, seed=0, steps=0)
    save_checkpoint(tmp_path / "2d.pth", m2d, opt, sched, 4, cfg2d)
    m3d, _, _ = training_state(make_cfg(), seed=0, steps=0)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "2d.pth", m3d)
    msg = str(info.value)
    assert "'unet_2d'" in msg and "'unet_3d'" in msg
    assert "stem.0.weight: checkpoint (4, 1, 5, 5) vs model (4, 1, 1, 5, 5)" in msg


def test_same_architecture_different_filters_lists_shapes(tmp_path):
    small = make_cfg(filters=(4, 8))
    model, opt, sched = training_state(small, seed=0, steps=0)
    save_checkpoint(tmp_path / "c.pth", model, opt, sched, 1, small)
    other, _, _ = training_state(make_cfg(filters=(6, 8)), seed=0, steps=0)
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the model: shape mismatch: "
        r"stem\.0\.weight: checkpoint \(4, 1, 1, 5, 5\) vs model \(6, 1, 1, 5, 5\)",
    ):
        load_checkpoint(tmp_path / "c.pth", other)
    deeper, _, _ = training_state(make_cfg(filters=(4, 8, 8)), seed=0, steps=0)
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: down\.2\."):
        load_checkpoint(tmp_path / "c.pth", deeper)


def test_optimizer_state_that_does_not_fit(tmp_path):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=1)
    save_checkpoint(tmp_path / "c.pth", model, opt, sched, 1, cfg)
    wrong_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))])
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_checkpoint(tmp_path / "c.pth", model, wrong_opt)


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=1)
    path = save_checkpoint(tmp_path / "c.pth", model, opt, sched, 1, cfg)
    before = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("simulated crash mid-save")

    monkeypatch.setattr(torch, "save", crashing_save)
    model2, opt2, sched2 = training_state(cfg, seed=3, steps=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(path, model2, opt2, sched2, 2, cfg)
    monkeypatch.setattr(torch, "save", real_save)

    assert os.listdir(tmp_path) == ["c.pth"]
    assert path.read_bytes() == before
    fresh, _, _ = training_state(cfg, seed=5, steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(path, fresh) == 1
    assert params_equal(model, fresh)


def test_resume_follows_the_configured_schedule(tmp_path):
    cfg = make_cfg()
    model, opt, sched = training_state(cfg, seed=0, steps=20)
    save_checkpoint(tmp_path / "c.pth", model, opt, sched, 20, cfg)
    longer = make_cfg()
    longer.SOLVER.ITERATION_TOTAL = 200
    fresh, fresh_opt, fresh_sched = training_state(longer, seed=1, steps=0)
    assert load_checkpoint(tmp_path / "c.pth", fresh, fresh_opt, fresh_sched) == 20
    assert fresh_sched.last_epoch == 20
    expected = 0.01 * 0.5 * (1 + math.cos(math.pi * 20 / 200))
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(
        0.01 * 0.5 * (1 + math.cos(math.pi * 20 / 100)), rel=1e-12
    )
