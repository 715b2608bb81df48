"""What a training run says before its first step: the settings it cannot act on here (one
warning each, saying what happens instead) and one line with the device, the data workers and
the sample size."""

from __future__ import annotations

import importlib.util
import warnings

import torch
from yacs.config import CfgNode


class IgnoredSettingWarning(UserWarning):
    """A config key is set but cannot act in this run; the message says what happens instead."""


def _tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def ignored_settings(cfg: CfgNode, device: torch.device | str, world_size: int = 1) -> list[str]:
    """One message per key that is set but cannot act with ``device`` and ``world_size``."""
    device = torch.device(device)
    out = []
    if bool(cfg.MODEL.get("MIXED_PRECESION", False)) and device.type != "cuda":
        out.append(f"MODEL.MIXED_PRECESION is True but the device is {device.type}: mixed precision "
                   "needs CUDA, so training runs in float32")
    if str(cfg.MODEL.NORM_MODE) == "sync_bn" and world_size <= 1:
        out.append("MODEL.NORM_MODE 'sync_bn' in a single process: there is nothing to synchronise, "
                   "so it acts as plain batch norm ('bn')")
    vis_every = (list(cfg.MONITOR.ITERATION_NUM) + [20, 200])[1]
    if vis_every and not _tensorboard_installed():
        out.append(f"MONITOR.ITERATION_NUM asks for image grids every {vis_every} iterations, but "
                   "tensorboard is not installed: scalars go to log.jsonl only and no images are "
                   "written (pip install tensorboard, or set MONITOR.ITERATION_NUM '[20, 0]')")
    warmup, total = int(cfg.SOLVER.WARMUP_ITERS), int(cfg.SOLVER.ITERATION_TOTAL)
    if warmup > total:
        out.append(f"SOLVER.WARMUP_ITERS {warmup} is larger than SOLVER.ITERATION_TOTAL {total}: the "
                   "run ends during the warmup, so the learning rate never reaches SOLVER.BASE_LR")
    return out


def warn_ignored_settings(cfg: CfgNode, device: torch.device | str, world_size: int = 1) -> list[str]:
    """Issue :func:`ignored_settings` as :class:`IgnoredSettingWarning` s; returns them."""
    messages = ignored_settings(cfg, device, world_size)
    for message in messages:
        warnings.warn(message, IgnoredSettingWarning, stacklevel=3)
    return messages


def startup_line(device: torch.device | str, loader, world_size: int = 1) -> str:
    """``device cpu (2 threads), 2 data workers, batch 2 x [12, 180, 180] voxels read per
    sample (model input [9, 129, 129])`` for a training DataLoader."""
    device = torch.device(device)
    threads = torch.get_num_threads()
    where = f"{device} ({threads} thread{'s' if threads != 1 else ''})" if device.type == "cpu" else str(device)
    dataset = loader.dataset
    read = getattr(dataset, "sample_size", None)
    model_in = getattr(getattr(dataset, "augmentor", None), "input_size", None)
    size = f" x {list(read)} voxels read per sample" if read is not None else ""
    if model_in is not None and read is not None and tuple(model_in) != tuple(read):
        size += f" (model input {list(model_in)})"
    ranks = f", {world_size} ranks" if world_size > 1 else ""
    if hasattr(loader, "num_threads"):  # SYSTEM.LOADER_MODE 'thread'
        workers = f"{loader.num_threads} loader threads"
    else:
        workers = f"{loader.num_workers} data workers"
    return (f"device {where}{ranks}, {workers}"
            f"{' per rank' if world_size > 1 else ''}, batch {loader.batch_size}{size}")


__all__ = ["IgnoredSettingWarning", "ignored_settings", "startup_line", "warn_ignored_settings"]
