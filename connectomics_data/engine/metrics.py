"""Foreground Dice and IoU between binary masks, accumulated over chunks.

``Dice = 2 TP / (2 TP + FP + FN)`` and ``IoU = TP / (TP + FP + FN)`` with counts summed over
every ``update``, so a volume processed chunk by chunk gives exactly the whole-volume numbers.
When neither mask has any foreground both scores are 1.0 (perfect agreement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DiceIoU:
    """Streaming TP/FP/FN counter; any nonzero value counts as foreground."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> DiceIoU:
        """Add one chunk: ``pred`` and ``gt`` of the same shape (any dtype). Returns self."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
        p = pred.astype(bool, copy=False)
        g = gt.astype(bool, copy=False)
        tp = int(np.count_nonzero(p & g))
        self.tp += tp
        self.fp += int(np.count_nonzero(p)) - tp
        self.fn += int(np.count_nonzero(g)) - tp
        return self

    @property
    def dice(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2 * self.tp / denom

    @property
    def iou(self) -> float:
        denom = self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else self.tp / denom

    def result(self) -> dict[str, float]:
        """``{'dice', 'iou', 'tp', 'fp', 'fn'}`` over everything seen so far."""
        return {"dice": self.dice, "iou": self.iou, "tp": self.tp, "fp": self.fp, "fn": self.fn}


def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Foreground ``(dice, iou)`` of two same-shape masks (nonzero = foreground)."""
    acc = DiceIoU().update(pred, gt)
    return acc.dice, acc.iou
