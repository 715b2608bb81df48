"""The training loop behind ``scripts/train.py``: loader -> model -> losses -> optimizer, with
validation by sliding-window prediction, atomic checkpoints, and logs a user can read.

What the user sees: a progress bar (iteration, loss, learning rate, samples/s and the share of
time the loop waited for data), a JSON-lines log (always) and TensorBoard scalars and image
grids (when tensorboard is installed), checkpoints every ``SOLVER.ITERATION_SAVE``, at
every validation a PNG of a validation slice (outlines, probability map, errors in colour; the
iteration and Dice in its name and caption), ``validation.png`` for the last one and, as the
last line printed, ``validation dice=<D> iou=<I>``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from yacs.config import CfgNode

from ..errors import OutputError
from ..io.atomic import atomic_output, ensure_directory
from ..loader import DevicePrefetcher, build_dataloader
from ..targets import parse_targets
from .checkpoint import load_checkpoint, save_checkpoint, unwrap_model
from .chunk_monitor import ChunkMonitor
from .losses import Criterion, prediction_activation
from .metrics import DiceIoU
from .solver import (
    amp_enabled,
    build_grad_scaler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
)


def target_channels(cfg: CfgNode) -> list[int]:
    codes = [t for t in cfg.MODEL.TARGET_OPT if t != "all"]
    return [spec.channels for spec in parse_targets(codes, do_2d=bool(cfg.DATASET.DO_2D))]


class JsonLinesLog:
    """Append-only JSON-lines log (flushed per line, so a crash loses at most one line)."""

    def __init__(self, path: Path):
        ensure_directory(path.parent, "log directory")
        try:
            self.file = open(path, "a", buffering=1)
        except OSError as err:
            raise OutputError(f"cannot open the log {path}: {err.strerror or err}") from err

    def write(self, **record: Any) -> None:
        """One record, stamped with ``time`` (Unix seconds) unless it has one."""
        self.file.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def close(self) -> None:
        self.file.close()


def _tensorboard(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: JSON-lines log only
        return None
    return SummaryWriter(str(log_dir))


@dataclasses.dataclass
class ValidationResult:
    dice: float
    iou: float
    prediction: np.ndarray  # (C, z, y, x) float32 probabilities of the first volume
    image: np.ndarray  # (z, y, x) raw image of the first volume
    label: np.ndarray  # (z, y, x) ground truth of the first volume


class Trainer:
    """Train a model described by ``cfg`` on ``device``.

    Args:
        cfg: a frozen config from :func:`connectomics_data.config.load_cfg`.
        device: torch device.
        checkpoint: resume from this file (SOLVER.ITERATION_RESTART restarts at iteration 0).
        rank, world_size: distributed position (rank 0 alone logs and saves).
        model: optionally a prebuilt (possibly DDP-wrapped) model.
    """

    def __init__(self, cfg: CfgNode, device: torch.device | str = "cpu", checkpoint: str | None = None,
                 rank: int = 0, world_size: int = 1, model: torch.nn.Module | None = None,
                 show_progress: bool = True, dist_info=None):
        from ..models import build_model, check_input_size

        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.output_dir = Path(cfg.DATASET.OUTPUT_PATH)
        self.channels = target_channels(cfg)
        check_input_size(cfg)
        generator = torch.Generator().manual_seed(int(cfg.SYSTEM.SEED))
        self.model = model if model is not None else build_model(cfg, self.device, generator=generator)
        self.criterion = Criterion(cfg, self.channels)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.scaler = build_grad_scaler(cfg, self.device)
        self.amp = amp_enabled(cfg, self.device)
        self.start_iteration = 0
        if checkpoint:
            self.start_iteration = load_checkpoint(
                checkpoint, unwrap_model(self.model), self.optimizer, self.scheduler,
                restart=bool(cfg.SOLVER.ITERATION_RESTART), scaler=self.scaler,
            )
        if dist_info is not None:
            from .distributed import wrap_model

            self.model = wrap_model(self.model, dist_info, str(cfg.MODEL.NORM_MODE))
            # the optimizer holds the same parameter objects, so it needs no rebuild
        self.activation = prediction_activation(cfg, self.channels)
        self.show_progress = show_progress and rank == 0
        self.is_main = rank == 0
        if self.is_main:  # keys set but unable to act here: one warning each, saying what happens
            from .startup import warn_ignored_settings

            warn_ignored_settings(cfg, self.device, world_size)

    # ------------------------------------------------------------------ training
    def train(self) -> ValidationResult | None:
        cfg = self.cfg
        total = int(cfg.SOLVER.ITERATION_TOTAL)
        batch_size = int(cfg.SOLVER.SAMPLES_PER_BATCH)
        log_every, vis_every = (list(cfg.MONITOR.ITERATION_NUM) + [20, 200])[:2]
        loader = build_dataloader(cfg, "train", rank=self.rank, world_size=self.world_size,
                                  start_index=self.start_iteration * batch_size)
        if self.show_progress:
            from .startup import startup_line

            print(startup_line(self.device, loader, self.world_size), flush=True)
        log = JsonLinesLog(self.output_dir / "log.jsonl") if self.is_main else None
        chunks = ChunkMonitor.for_loader(loader, self.start_iteration)  # DO_CHUNK_TITLE training
        if chunks is not None and self.show_progress:
            print(chunks.startup_line(), file=sys.stderr, flush=True)
        writer = _tensorboard(self.output_dir / "tensorboard") if self.is_main else None
        progress = None
        if self.show_progress:
            from tqdm import tqdm

            progress = tqdm(total=total, initial=self.start_iteration, desc="train", dynamic_ncols=True)
        self.model.train()
        iteration = self.start_iteration
        result = None
        t_window, wait_window, n_window = time.perf_counter(), 0.0, 0
        try:
            while iteration < total:
                prefetcher = DevicePrefetcher(loader, self.device)
                wait_before = 0.0
                for batch in prefetcher:
                    waited = prefetcher.wait_seconds - wait_before
                    wait_before = prefetcher.wait_seconds
                    wait_window += waited
                    if chunks is not None:
                        chunks.step_started()
                    loss, terms = self._step(batch)
                    iteration += 1
                    switch = chunks.step_done(iteration, waited) if chunks is not None else None
                    if switch is not None and log is not None:
                        log.write(**switch)
                    n_window += len(batch)
                    if progress is not None:
                        progress.update(1)
                    if iteration % max(1, log_every) == 0 or iteration == total:
                        elapsed = time.perf_counter() - t_window
                        record = {
                            "iteration": iteration, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                            "samples_per_s": n_window / max(elapsed, 1e-9),
                            "data_wait_share": wait_window / max(elapsed, 1e-9),
                            "rejection_trials_per_sample": float(batch.trials.float().mean()) if batch.trials is not None else 1.0,
                            **terms,
                            **(chunks.fields() if chunks is not None else {}),
                        }
                        if progress is not None:
                            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}",
                                                 sps=f"{record['samples_per_s']:.1f}",
                                                 wait=f"{100 * record['data_wait_share']:.0f}%",
                                                 **({"chunk": record["chunk"]} if chunks is not None else {}))
                        if log is not None:
                            log.write(**record)
                        if writer is not None:
                            for key in ("loss", "lr", "samples_per_s", "data_wait_share"):
                                writer.add_scalar(f"train/{key}", record[key], iteration)
                        t_window, wait_window, n_window = time.perf_counter(), 0.0, 0
                    if writer is not None and vis_every and iteration % vis_every == 0:
                        self._log_images(writer, batch, iteration)
                    if self.is_main and iteration % int(cfg.SOLVER.ITERATION_SAVE) == 0:
                        self.save(iteration)
                    if cfg.DATASET.VAL_IMAGE_NAME and iteration % int(cfg.SOLVER.ITERATION_VAL) == 0 and iteration < total:
                        val = self.validate() if self.is_main else None
                        if val is not None:
                            self._report_val(log, writer, iteration, val)
                        self._barrier()
                        self.model.train()
                    if iteration >= total:
                        break
        finally:
            if progress is not None:
                progress.close()
        if chunks is not None:  # report the reads' cost, free /dev/shm before the final validation
            summary = chunks.summary()
            if log is not None:
                log.write(**summary)
            if self.show_progress:
                print(chunks.summary_line(summary), file=sys.stderr, flush=True)
            chunks.release(loader)
        if self.is_main and iteration % int(cfg.SOLVER.ITERATION_SAVE) != 0:
            self.save(iteration)
        if cfg.DATASET.VAL_IMAGE_NAME:
            result = self.validate() if self.is_main else None
            self._barrier()
            if result is not None:
                self._report_val(log, writer, iteration, result)
                self.save_validation_png(result, self.output_dir / "validation.png", iteration)
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()
        return result

    def _barrier(self) -> None:
        from .distributed import barrier

        barrier()

    def _step(self, batch) -> tuple[float, dict[str, float]]:
        device_type = self.device.type
        with torch.autocast(device_type=device_type, enabled=self.amp):
            pred = self.model(batch.image)
            loss, terms = self.criterion(pred, batch.targets, batch.weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {float(loss)}; lower SOLVER.BASE_LR or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            clip_gradients(self.cfg, self.model)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            clip_gradients(self.cfg, self.model)
            self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), {k: float(v) for k, v in terms.items()}

    def save(self, iteration: int) -> Path:
        path = self.output_dir / f"checkpoint_{iteration:06d}.pth.tar"
        save_checkpoint(path, unwrap_model(self.model), self.optimizer, self.scheduler, iteration, self.cfg, scaler=self.scaler)
        latest = self.output_dir / "checkpoint_latest.txt"
        with atomic_output(latest) as tmp:
            Path(tmp).write_text(path.name + "\n")
        return path

    # ------------------------------------------------------------------ validation
    def validate(self) -> ValidationResult | None:
        """Sliding-window prediction of the validation volume(s); foreground Dice and IoU of the
        first target ('0' style binary channel 0) thresholded at 0.5, over all volumes."""
        from ..datasets import load_inputs
        from ..inference import build_inference_from_cfg, build_normalizer_fn_from_cfg

        cfg = self.cfg
        inputs = load_inputs(cfg, "val")
        engine = build_inference_from_cfg(cfg, unwrap_model(self.model), self.activation, self.device)
        engine.settings = dataclasses.replace(
            engine.settings, input_size=tuple(cfg.MODEL.INPUT_SIZE), output_size=tuple(cfg.MODEL.OUTPUT_SIZE),
            pad=tuple(cfg.DATASET.VAL_PAD_SIZE), aug_num=None, output_dtype="float32", unpad=True,
            stride=tuple(max(1, s // 2) for s in cfg.MODEL.INPUT_SIZE), output_scale=(1.0, 1.0, 1.0),
        )
        from ..inference.tta import TestTimeAugmentation

        engine.tta = TestTimeAugmentation(None, "mean", bool(cfg.DATASET.DO_2D))
        engine.show_progress = self.show_progress
        normalizer_fn = build_normalizer_fn_from_cfg(cfg)
        metric = DiceIoU()
        first = None
        for image, label in zip(inputs.images, inputs.labels):
            if label is None:
                continue
            pred = engine.predict(image, normalizer_fn(image),
                                  progress_desc=f"validation {Path(str(image.path)).name}")
            gt = label.read()
            metric.update(pred[0] > 0.5, gt > 0)
            if first is None:
                first = (pred, image.read(), gt)
        self.model.train()
        if first is None:
            return None
        dice, iou = metric.dice, metric.iou
        return ValidationResult(float(dice), float(iou), first[0], first[1], first[2])

    def _report_val(self, log, writer, iteration: int, val: ValidationResult) -> None:
        if log is not None:
            log.write(iteration=iteration, val_dice=val.dice, val_iou=val.iou)
        if writer is not None:
            writer.add_scalar("val/dice", val.dice, iteration)
            writer.add_scalar("val/iou", val.iou, iteration)
            z = val.image.shape[-3] // 2
            writer.add_image("val/overlay", overlay_slice(val, z), iteration, dataformats="HWC")
        if self.is_main:  # one picture per validation, iteration and Dice in its name and caption
            from .validation_figure import validation_file_name

            self.save_validation_png(val, self.output_dir / validation_file_name(iteration, val.dice), iteration)
        if self.show_progress:
            from tqdm import tqdm

            tqdm.write(f"iteration {iteration}: validation dice={val.dice:.4f} iou={val.iou:.4f}")

    def _log_images(self, writer, batch, iteration: int) -> None:
        img = batch.image[0, 0].detach().float().cpu().numpy()
        tgt = batch.targets[0][0, 0].detach().float().cpu().numpy() if batch.targets else np.zeros_like(img)
        with torch.no_grad():
            self.model.eval()
            pred = self.activation(unwrap_model(self.model)(batch.image[:1]))[0, 0].float().cpu().numpy()
            self.model.train()
        if img.ndim == 3:
            z = img.shape[0] // 2
            img, tgt, pred = img[z], tgt[z], pred[z]
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / max(hi - lo, 1e-6)
        grid = np.concatenate([img, tgt, pred], axis=1)
        writer.add_image("train/input_target_prediction", grid[None], iteration)

    def save_validation_png(self, val: ValidationResult, path: Path, iteration: int | None = None) -> Path:
        """The middle section's panels (see :mod:`.validation_figure`) under a caption."""
        from PIL import Image

        from .validation_figure import caption_text, validation_figure

        z = val.image.shape[-3] // 2
        rgb = validation_figure(overlay_slice(val, z), caption_text(iteration, val.dice, val.iou, z))

        with atomic_output(path) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        return path


def overlay_slice(val: ValidationResult, z: int) -> np.ndarray:
    """(y, 4x, 3) uint8 panels of section ``z``: ground truth outlined, prediction outlined,
    probability map, errors in colour (see :mod:`.validation_figure`)."""
    from .validation_figure import validation_panels

    return validation_panels(val.image, val.label, val.prediction, z)


def set_threads(cfg: CfgNode, world_size: int = 1) -> None:
    """Share the cores: ranks on one machine split them, and data workers get about half a core
    each on small machines."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    cpus = max(1, (os.cpu_count() or 1) // max(1, local))
    workers = int(cfg.SYSTEM.NUM_CPUS) // max(1, local)
    torch.set_num_threads(max(1, cpus - workers // 2) if workers else cpus)


def format_final_line(val: ValidationResult | None) -> str:
    if val is None:
        return "validation skipped (no DATASET.VAL_IMAGE_NAME)"
    return f"validation dice={val.dice:.4f} iou={val.iou:.4f}"


__all__ = ["Trainer", "ValidationResult", "format_final_line", "overlay_slice", "set_threads", "target_channels"]
