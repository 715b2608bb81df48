"""torch.distributed set-up for ``torchrun``-launched runs (no home-made process management).

``torchrun --nproc_per_node=N scripts/train.py --distributed --config-file F`` sets RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; :func:`init_distributed` reads them, picks
the backend (NCCL on CUDA, gloo on CPU; ``SYSTEM.DISTRIBUTED_BACKEND`` is honoured on CUDA) and
the device of this rank. Data needs no sampler: every rank draws from its own seeded stream (the
rank is part of each sample's seed key), so ranks never see the same sample and nothing is
materialised.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or bool(self.backend)


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"--distributed: environment variable {name} is not set; launch with torchrun")
    return int(value)


def init_distributed(cfg) -> DistInfo:
    """Join the process group described by the environment (torchrun)."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    backend = str(cfg.SYSTEM.DISTRIBUTED_BACKEND) if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, device, backend)


def wrap_model(model: torch.nn.Module, info: DistInfo, norm_mode: str = "bn") -> torch.nn.Module:
    """DistributedDataParallel around ``model``; SyncBatchNorm on CUDA when NORM_MODE is
    'sync_bn' (on CPU, gloo has no SyncBatchNorm: per-rank batch norm is used, with a warning)."""
    if info.world_size <= 1 and not dist.is_initialized():
        return model
    if norm_mode == "sync_bn":
        if info.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = _sync_bn_to_bn(model)
            warnings.warn("MODEL.NORM_MODE 'sync_bn' needs CUDA; using per-rank batch norm on CPU", stacklevel=2)
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


class _BatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm for 2D or 3D inputs (what SyncBatchNorm accepts), used on CPU."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")


def _sync_bn_to_bn(module: torch.nn.Module) -> torch.nn.Module:
    if isinstance(module, torch.nn.SyncBatchNorm):
        bn = _BatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        bn.load_state_dict(module.state_dict())
        return bn
    for name, child in module.named_children():
        module.add_module(name, _sync_bn_to_bn(child))
    return module


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
