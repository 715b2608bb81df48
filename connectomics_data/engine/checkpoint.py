"""Save and resume training checkpoints, atomically and with errors that say what is wrong.

A checkpoint is a ``torch.save``d dict holding only tensors, numbers, strings and containers,
so it loads with ``torch.load(weights_only=True)`` (no arbitrary code runs on load):

======================  ====================================================================
``format_version``      int, :data:`FORMAT_VERSION`
``architecture``        MODEL.ARCHITECTURE of the network
``iteration``           the iteration to resume from (number of completed iterations)
``model``               the network's ``state_dict`` (unwrapped from DDP/DataParallel)
``optimizer``           ``optimizer.state_dict()`` or absent
``lr_scheduler``        ``scheduler.state_dict()`` or absent
``scaler``              AMP ``GradScaler.state_dict()`` or absent
``config``              the full config as a YAML string
======================  ====================================================================

PyTC v1 checkpoints (``{'iteration', 'state_dict', 'optimizer', 'lr_scheduler'}``, weights
possibly prefixed ``module.``) load too.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..io.atomic import atomic_output

FORMAT_VERSION = 1
_MAX_LISTED = 5


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel / DataParallel wrapper (or ``model``)."""
    while isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        model = model.module
    return model


def _config_yaml(cfg: Any) -> str:
    if cfg is None:
        return ""
    dump = getattr(cfg, "dump", None)
    return dump() if callable(dump) else str(cfg)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    iteration: int,
    cfg: Any,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write a checkpoint to ``path`` via a temporary sibling and an atomic rename.

    A crash mid-write leaves any earlier file at ``path`` intact and no temporary file.
    ``iteration`` is the iteration training resumes from. Returns ``Path(path)``.

    Raises:
        OutputError: the directory is not writable or the disk is full.
    """
    net = unwrap_model(model)
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": getattr(net, "architecture", None)
        or (cfg.MODEL.get("ARCHITECTURE") if cfg is not None else None),
        "iteration": int(iteration),
        "model": net.state_dict(),
        "config": _config_yaml(cfg),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["lr_scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` a checkpoint on the CPU with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, holds objects other than
            tensors and plain containers, or has no model weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise CheckpointError(
                f"checkpoint {path} contains the Python object {found.group(1)}; only tensors, "
                f"numbers, strings and containers are loaded, for safety"
            ) from err
        first = text.splitlines()[0][:120] if text else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt "
            f"({type(err).__name__}: {first})"
        ) from err
    if not isinstance(state, dict) or not isinstance(
        state.get("model", state.get("state_dict")), dict
    ):
        raise CheckpointError(
            f"checkpoint {path} has no model weights (expected a dict with key 'model' or "
            f"'state_dict')"
        )
    return state


def _strip_prefix(weights: dict[str, torch.Tensor], prefix: str = "module.") -> dict:
    if weights and all(k.startswith(prefix) for k in weights):
        return {k[len(prefix) :]: v for k, v in weights.items()}
    return weights


def _describe_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (
        ("missing from the checkpoint", missing),
        ("not in the model", unexpected),
        ("shape mismatch", shapes),
    ):
        if items:
            more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            parts.append(f"{label}: {', '.join(items[:_MAX_LISTED])}{more}")
    return "; ".join(parts)


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restart: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Load weights (and optionally optimizer/scheduler/scaler state) and return the iteration.

    With ``restart`` (SOLVER.ITERATION_RESTART) only the weights are loaded and 0 is
    returned. States absent from the checkpoint (e.g. a PyTC file without scheduler) are
    left as they are, with a warning.

    Raises:
        CheckpointError: missing, truncated or unsafe file; a checkpoint from another
            architecture or with different parameter names/shapes (listing the first few keys
            and both shapes); optimizer state that does not fit ``optimizer``.
    """
    state = read_checkpoint(path)
    net = unwrap_model(model)
    weights = _strip_prefix(state.get("model", state.get("state_dict")))
    expected = net.state_dict()
    mismatch = _describe_mismatch(expected, weights)
    saved_arch = state.get("architecture")
    model_arch = getattr(net, "architecture", None)
    if saved_arch and model_arch and saved_arch != model_arch:
        raise CheckpointError(
            f"checkpoint {path} is from architecture {saved_arch!r} but the model is "
            f"{model_arch!r}" + (f"; {mismatch}" if mismatch else "")
        )
    if mismatch:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {mismatch}")
    net.load_state_dict(weights)
    if restart:
        return 0
    for obj, key in ((optimizer, "optimizer"), (scheduler, "lr_scheduler"), (scaler, "scaler")):
        if obj is None:
            continue
        if key not in state:
            warnings.warn(
                f"checkpoint {path} has no {key} state; keeping the fresh one", stacklevel=2
            )
            continue
        try:
            obj.load_state_dict(state[key])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {path}: the saved {key} state does not fit the current {key} "
                f"({err}); set SOLVER.ITERATION_RESTART to load the weights only"
            ) from err
    return int(state.get("iteration", 0))
