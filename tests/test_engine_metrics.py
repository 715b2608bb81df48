"""Streaming Dice/IoU equals the whole-volume computation and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from connectomics_data.engine.metrics import DiceIoU, dice_iou


def test_hand_values():
    pred = np.array([1, 1, 0, 0], dtype=np.uint8)
    gt = np.array([1, 0, 1, 0], dtype=np.uint8)
    assert dice_iou(pred, gt) == (pytest.approx(0.5), pytest.approx(1 / 3))
    acc = DiceIoU().update(pred, gt)
    assert acc.result() == {"dice": 0.5, "iou": pytest.approx(1 / 3), "tp": 1, "fp": 1, "fn": 1}


def test_nonzero_labels_count_as_foreground():
    assert dice_iou(np.array([0, 7, 300]), np.array([0, 1, 1], dtype=bool)) == (1.0, 1.0)


def test_empty_masks_agree_perfectly_and_disjoint_score_zero():
    assert dice_iou(np.zeros((2, 3), bool), np.zeros((2, 3), bool)) == (1.0, 1.0)
    assert dice_iou(np.eye(3, dtype=bool), ~np.eye(3, dtype=bool)) == (0.0, 0.0)


def test_chunked_accumulation_equals_direct_reference():
    rng = np.random.default_rng(0)
    gt = rng.random((6, 20, 24)) < 0.3
    pred = gt ^ (rng.random(gt.shape) < 0.1)
    acc = DiceIoU()
    for z in range(0, 6, 2):
        for y in range(0, 20, 7):  # uneven chunks
            acc.update(pred[z : z + 2, y : y + 7], gt[z : z + 2, y : y + 7])
    # plain reference via set algebra on flat indices
    p, g = set(np.flatnonzero(pred)), set(np.flatnonzero(gt))
    tp, fp, fn = len(p & g), len(p - g), len(g - p)
    assert (acc.tp, acc.fp, acc.fn) == (tp, fp, fn)
    assert acc.dice == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-15)
    assert acc.iou == pytest.approx(tp / (tp + fp + fn), rel=1e-15)
    assert (acc.dice, acc.iou) == dice_iou(pred, gt)


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 2\) != ground truth shape \(2, 3\)"):
        DiceIoU().update(np.zeros((2, 2)), np.zeros((2, 3)))
