"""A Lightning ``LightningDataModule`` over the same loaders as :func:`build_dataloader`.

Needs the optional extra: ``pip install "connectomics_data[lightning]"`` (Lightning >= 2.0;
``lightning.pytorch`` is used, ``pytorch_lightning`` when only that is installed)::

    import lightning.pytorch as pl
    from connectomics_data.lightning import ConnectomicsDataModule

    dm = ConnectomicsDataModule(cfg)
    trainer = pl.Trainer(max_steps=cfg.SOLVER.ITERATION_TOTAL, use_distributed_sampler=False)
    trainer.fit(my_lightning_module, datamodule=dm)

What it guarantees:

* ``train_dataloader()`` / ``val_dataloader()`` / ``predict_dataloader()`` are
  ``build_dataloader(cfg, 'train' | 'val' | 'test', ...)``, with the rank and world size the
  Trainer reports in :meth:`~ConnectomicsDataModule.setup`. Every rank draws its own seeded
  stream, as in the package's own DDP path, so on one device the first training batch equals
  ``build_dataloader(cfg, 'train')``'s first batch, and with N devices rank r sees what
  ``build_dataloader(cfg, 'train', rank=r, world_size=N)`` yields.
* Resuming (``trainer.fit(..., ckpt_path=...)``): the training loader starts at sample
  ``global_step * accumulate_grad_batches * SOLVER.SAMPLES_PER_BATCH``, so the resumed run
  sees the batches the uninterrupted run would have seen.
* ``transfer_batch_to_device`` is ``batch.to(device)``: the compact batch is copied and
  normalised on the device, and ``training_step`` receives a ready
  :class:`~connectomics_data.loader.Batch` (float32 image, float32 / int64 targets, weights as
  tensors or None).

Lightning's ``DistributedSampler`` must stay off with more than one device
(``Trainer(use_distributed_sampler=False)``): it would split a stream that is already per rank.
:meth:`~ConnectomicsDataModule.setup` raises a :class:`~connectomics_data.errors.ConfigError`
saying so instead of training on the wrong samples.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.data
from yacs.config import CfgNode

from .errors import ConfigError
from .loader import Batch, SampleIndexSampler, build_dataloader, num_workers_for

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl
    except ImportError as err:
        raise ImportError(
            "connectomics_data.lightning needs Lightning: pip install 'connectomics_data[lightning]' "
            "(or pip install lightning)"
        ) from err

__all__ = ["ConnectomicsDataModule"]


class _PositionedSampler(torch.utils.data.Sampler[int]):
    """A :class:`SampleIndexSampler` whose every pass starts at ``position()``."""

    def __init__(self, inner: SampleIndexSampler, position):
        self.inner, self.position = inner, position

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        self.inner.next_start = int(self.position())
        return iter(self.inner)


class ConnectomicsDataModule(pl.LightningDataModule):
    """Training, validation and prediction loaders described by a config.

    Args:
        cfg: a loaded config (:func:`~connectomics_data.config.load_cfg`).
        seed: overrides SYSTEM.SEED for the sample streams (as ``build_dataloader``'s ``seed``).

    Attributes:
        rank, world_size: taken from the Trainer in :meth:`setup` (0 and 1 without one).
        start_index: the first training sample of the last ``train_dataloader()`` (resume).
    """

    def __init__(self, cfg: CfgNode, seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.rank, self.world_size = 0, 1
        self.start_index = 0

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str | None = None) -> None:
        """Read the rank and world size from the Trainer (called on every process)."""
        trainer = self.trainer
        if trainer is None:
            return
        self.rank, self.world_size = int(trainer.global_rank), int(trainer.world_size)
        connector = getattr(trainer, "_accelerator_connector", None)
        if self.world_size > 1 and getattr(connector, "use_distributed_sampler", False):
            raise ConfigError(
                f"ConnectomicsDataModule on {self.world_size} processes: every rank already draws "
                "its own seeded sample stream; create the Trainer with "
                "use_distributed_sampler=False so Lightning does not split it again"
            )

    def _workers(self) -> int:
        """SYSTEM.NUM_CPUS split across the ranks on this machine (the Trainer's devices)."""
        trainer = self.trainer
        local = int(getattr(trainer, "num_devices", 1) or 1) if trainer is not None else 1
        return num_workers_for(self.cfg, local)

    def _loader(self, mode: str, start_index: int = 0):
        return build_dataloader(self.cfg, mode, rank=self.rank, world_size=self.world_size,
                                seed=self.seed, start_index=start_index,
                                num_workers=self._workers())

    # ------------------------------------------------------------------ loaders
    def _position(self) -> int:
        """The next training sample: batches consumed (optimizer steps x accumulation) x B."""
        trainer = self.trainer
        if trainer is None:
            return 0
        steps = int(trainer.global_step) * int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        return steps * int(self.cfg.SOLVER.SAMPLES_PER_BATCH)

    def train_dataloader(self):
        """``build_dataloader(cfg, 'train')`` for this rank, resumed at the Trainer's step.

        Every pass over the loader (each Lightning epoch) starts at the sample the Trainer's
        global step points to, so step ``s`` trains on samples ``[s * B, (s + 1) * B)`` of this
        rank's stream whether the run was resumed or not, as in the package's own trainer.
        (A TileDataset's chunk schedule is fixed when the loader is built: there the position
        is read once, here.)
        """
        self.start_index = self._position()
        loader = self._loader("train", self.start_index)
        # the sampler sits in the DataLoader's batch sampler (processes) or on the ThreadLoader
        holder = getattr(loader, "batch_sampler", None) or loader
        if isinstance(getattr(holder, "sampler", None), SampleIndexSampler):
            holder.sampler = _PositionedSampler(holder.sampler, self._position)
            # tell Lightning the loader resumes (its warning about mid-epoch checkpoints does
            # not apply): the position comes from the restored global step, not from this state
            loader.state_dict = lambda: {"position": "from the trainer's global step"}
            loader.load_state_dict = lambda state: None
        return loader

    def val_dataloader(self):
        """The validation volume's window grid in order (DATASET.VAL_IMAGE_NAME); an empty list
        (no validation) when none is configured."""
        if not self.cfg.DATASET.VAL_IMAGE_NAME:
            return []
        return self._loader("val")

    def predict_dataloader(self):
        """The test volume's window grid in order (INFERENCE.IMAGE_NAME, batch
        INFERENCE.SAMPLES_PER_BATCH); ``batch.pos`` says where each window starts."""
        return self._loader("test")

    # ------------------------------------------------------------------ device
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """``batch.to(device)`` for a :class:`Batch` (normalised on the device); anything else
        goes through Lightning's default."""
        if isinstance(batch, Batch):
            return batch.to(device, non_blocking=device.type == "cuda")
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
