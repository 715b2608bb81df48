"""Optimizer, per-iteration learning-rate schedules, gradient clipping and AMP switches.

Config keys are PyTC v1's ``SOLVER`` section (its detectron2-derived semantics):

* Parameter groups: parameters of normalisation layers get ``WEIGHT_DECAY_NORM``; other
  biases get ``BASE_LR * BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``; everything else
  ``BASE_LR`` and ``WEIGHT_DECAY``.
* Schedules are stepped once per iteration (call ``scheduler.step()`` after
  ``optimizer.step()``). At iteration ``i`` (0-based, before its optimizer step) the rate is:

  - ``MultiStepLR``: ``base * GAMMA ** #{s in STEPS: s <= i}``
  - ``WarmupMultiStepLR``: the same times the warmup factor
  - ``WarmupCosineLR``: ``base * warmup(i) * 0.5 * (1 + cos(pi * min(i, T) / T))`` with
    ``T = ITERATION_TOTAL`` (reaches 0 at T and stays there)
  - ``CosineAnnealingLR``: ``base * 0.5 * (1 + cos(pi * min(i, T) / T))``
  - warmup factor for ``i < WARMUP_ITERS``: ``WARMUP_FACTOR`` ('constant') or
    ``WARMUP_FACTOR * (1 - i / WARMUP_ITERS) + i / WARMUP_ITERS`` ('linear'); 1 afterwards.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..errors import ConfigError

OPTIMIZERS = ("SGD", "Adam", "AdamW")
LR_SCHEDULERS = ("MultiStepLR", "WarmupMultiStepLR", "WarmupCosineLR", "CosineAnnealingLR")

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _solver(cfg: Any) -> Any:
    try:
        return cfg.SOLVER
    except AttributeError as err:
        raise ConfigError("the config has no SOLVER section") from err


def _param_groups(cfg: Any, model: nn.Module) -> list[dict[str, Any]]:
    s = _solver(cfg)
    base_lr = float(s.BASE_LR)
    wd = float(s.get("WEIGHT_DECAY", 1e-4))
    wd_norm = float(s.get("WEIGHT_DECAY_NORM", 0.0))
    wd_bias = float(s.get("WEIGHT_DECAY_BIAS", 0.0))
    bias_lr = base_lr * float(s.get("BIAS_LR_FACTOR", 1.0))
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NORM_TYPES):
                key = (base_lr, wd_norm)
            elif name == "bias":
                key = (bias_lr, wd_bias)
            else:
                key = (base_lr, wd)
            groups.setdefault(key, []).append(param)
    return [{"params": p, "lr": lr, "weight_decay": w} for (lr, w), p in groups.items()]


def build_optimizer(cfg: Any, model: nn.Module) -> Optimizer:
    """SOLVER.NAME ('SGD' with MOMENTUM, 'Adam' / 'AdamW' with BETAS) over ``model``'s params.

    Raises:
        ConfigError: unknown SOLVER.NAME (listing the available ones).
    """
    s = _solver(cfg)
    name = s.get("NAME", "SGD")
    groups = _param_groups(cfg, model)
    lr = float(s.BASE_LR)
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=float(s.get("MOMENTUM", 0.9)))
    if name in ("Adam", "AdamW"):
        betas = tuple(float(b) for b in s.get("BETAS", (0.9, 0.999)))
        cls = torch.optim.Adam if name == "Adam" else torch.optim.AdamW
        return cls(groups, lr=lr, betas=betas)
    raise ConfigError(f"SOLVER.NAME {name!r} is not available; available: {', '.join(OPTIMIZERS)}")


def warmup_factor(iteration: int, method: str, warmup_iters: int, factor: float) -> float:
    """Multiplier on the learning rate during warmup (1.0 from ``warmup_iters`` on)."""
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return factor
    if method == "linear":
        alpha = iteration / warmup_iters
        return factor * (1.0 - alpha) + alpha
    raise ConfigError(f"SOLVER.WARMUP_METHOD {method!r} is not one of 'linear', 'constant'")


class _ClosedFormLR(LRScheduler):
    """A schedule whose rate is a pure function of the iteration (``last_epoch``)."""

    def factor(self, iteration: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position (iteration) only; the schedule itself comes from the config.

        So a run resumed with, say, a longer SOLVER.ITERATION_TOTAL follows the new schedule
        from the saved iteration on. The optimizer's rates are set for that iteration.
        """
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


class WarmupMultiStepLR(_ClosedFormLR):
    """``base * warmup(i) * gamma ** bisect_right(milestones, i)`` (see the module docstring)."""

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ConfigError(f"SOLVER.STEPS {list(milestones)} must be increasing")
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        warm = warmup_factor(iteration, self.warmup_method, self.warmup_iters, self.warmup_factor)
        return warm * self.gamma ** bisect.bisect_right(self.milestones, iteration)


class WarmupCosineLR(_ClosedFormLR):
    """``base * warmup(i) * 0.5 * (1 + cos(pi * min(i, T) / T))``; 0 from ``T`` on."""

    def __init__(
        self,
        optimizer: Optimizer,
        max_iters: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if max_iters < 1:
            raise ConfigError(f"SOLVER.ITERATION_TOTAL must be >= 1, got {max_iters}")
        self.max_iters = int(max_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        warm = warmup_factor(iteration, self.warmup_method, self.warmup_iters, self.warmup_factor)
        progress = min(iteration, self.max_iters) / self.max_iters
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(cfg: Any, optimizer: Optimizer) -> LRScheduler:
    """SOLVER.LR_SCHEDULER_NAME as a per-iteration schedule (see the module docstring).

    Raises:
        ConfigError: an unsupported name (ReduceLROnPlateau needs a validation metric the
            training loop does not provide), unsorted STEPS or an unknown WARMUP_METHOD.
    """
    s = _solver(cfg)
    name = s.get("LR_SCHEDULER_NAME", "MultiStepLR")
    steps = [int(v) for v in s.get("STEPS", (30000, 35000))]
    gamma = float(s.get("GAMMA", 0.1))
    total = int(s.get("ITERATION_TOTAL", 40000))
    warmup = {
        "warmup_factor": float(s.get("WARMUP_FACTOR", 1.0 / 1000)),
        "warmup_iters": int(s.get("WARMUP_ITERS", 1000)),
        "warmup_method": s.get("WARMUP_METHOD", "linear"),
    }
    if warmup["warmup_method"] not in ("linear", "constant"):
        warmup_factor(0, warmup["warmup_method"], 1, 1.0)  # raises the ConfigError
    if name == "MultiStepLR":
        # no warmup: equivalent to torch's MultiStepLR, but with plain-list state (safe to load)
        return WarmupMultiStepLR(optimizer, steps, gamma, 1.0, 0, "constant")
    if name == "WarmupMultiStepLR":
        return WarmupMultiStepLR(optimizer, steps, gamma, **warmup)
    if name == "WarmupCosineLR":
        return WarmupCosineLR(optimizer, total, **warmup)
    if name == "CosineAnnealingLR":
        return WarmupCosineLR(optimizer, total, 1.0, 0, "constant")
    raise ConfigError(
        f"SOLVER.LR_SCHEDULER_NAME {name!r} is not supported; available: {', '.join(LR_SCHEDULERS)}"
    )


def _grad_params(model: nn.Module) -> Iterator[torch.Tensor]:
    return (p for p in model.parameters() if p.grad is not None)


def clip_gradients(cfg: Any, model: nn.Module) -> torch.Tensor | None:
    """Clip ``model``'s gradients in place per SOLVER.CLIP_GRADIENTS; no-op when disabled.

    'value' clamps each element to ``[-CLIP_VALUE, CLIP_VALUE]``; 'norm' rescales so that the
    ``NORM_TYPE``-norm of all gradients is at most ``CLIP_VALUE`` and returns the norm before
    clipping. Under AMP call ``scaler.unscale_(optimizer)`` first.
    """
    clip = _solver(cfg).get("CLIP_GRADIENTS")
    if clip is None or not clip.get("ENABLED", False):
        return None
    kind = clip.get("CLIP_TYPE", "value")
    value = float(clip.get("CLIP_VALUE", 1.0))
    if kind == "value":
        nn.utils.clip_grad_value_(list(_grad_params(model)), value)
        return None
    if kind == "norm":
        norm_type = float(clip.get("NORM_TYPE", 2.0))
        return nn.utils.clip_grad_norm_(list(_grad_params(model)), value, norm_type)
    raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE {kind!r} is not one of 'value', 'norm'")


def amp_enabled(cfg: Any, device: torch.device | str) -> bool:
    """Mixed precision iff MODEL.MIXED_PRECESION (sic) and ``device`` is CUDA (any DDP mode)."""
    return bool(cfg.MODEL.get("MIXED_PRECESION", False)) and torch.device(device).type == "cuda"


def build_grad_scaler(cfg: Any, device: torch.device | str) -> torch.amp.GradScaler:
    """A ``GradScaler`` that is active only when :func:`amp_enabled`."""
    return torch.amp.GradScaler("cuda", enabled=amp_enabled(cfg, device))
