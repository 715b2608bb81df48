"""Training-side helpers for the scripts: losses, optimizer and schedules, checkpoints, metrics."""

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, unwrap_model
from .losses import LOSSES, Criterion, PredictionActivation, prediction_activation
from .metrics import DiceIoU, dice_iou
from .solver import (
    amp_enabled,
    build_grad_scaler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
)

__all__ = [
    "LOSSES",
    "Criterion",
    "DiceIoU",
    "PredictionActivation",
    "amp_enabled",
    "build_grad_scaler",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "dice_iou",
    "load_checkpoint",
    "prediction_activation",
    "read_checkpoint",
    "save_checkpoint",
    "unwrap_model",
]
