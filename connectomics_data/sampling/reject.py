"""Rejection tests (PyTC v1 semantics) and the cheap screen that precedes them.

A training sample is rejected when

* its valid-mask fraction is not above ``valid_ratio`` (deterministic), or
* with probability ``p``, its foreground count is below ``size_thres`` (when > 0), or
* with probability ``p``, its number of distinct ids (background included) is below
  ``diversity`` (when > 0).

The tests are applied to the final, augmented crop, as PyTC users expect.

Why screening keeps the distribution (the argument behind ``SCREEN``): each trial draws, from
its own generator and in a fixed order, the volume, the position and the two coins ``u_fg`` and
``u_div`` that decide the probabilistic rejections; augmentation parameters come from a separate
stream. The final decision is therefore a deterministic function of (position, coins,
augmentation stream). The screen only looks at quantities that *bound* the final crop: every
voxel of the final crop is a copy of a voxel of the source region the crop was read from
(geometric transforms gather, they never invent label or mask values; copy-paste only copies
existing objects). So when the source region has no foreground, the final crop has none either,
and when it has no valid voxel the final valid fraction is 0. A screened-out trial is exactly a
trial that the full pipeline would have rejected with the same coins, and a trial that passes
the screen goes through the full pipeline. Accepted samples are thus identical, sample for
sample, with and without the screen; only the cost of hopeless trials changes (tested).
Without augmentation the crop *is* the source region and the block-table bound decides more
trials up front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RejectionPolicy:
    """``DATASET.VALID_RATIO`` and ``DATASET.REJECT_SAMPLING.*``."""

    size_thres: int = -1
    diversity: int = -1
    p: float = 0.95
    valid_ratio: float = 0.5
    num_trial: int = 50
    exhausted: str = "raise"  # 'raise' | 'warn'
    screen: bool = True

    @property
    def tests_foreground(self) -> bool:
        return self.size_thres > 0 or self.diversity > 0


@dataclass(frozen=True)
class Coins:
    """The uniform draws that decide the probabilistic rejections of one trial."""

    fg: float
    diversity: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Coins:
        u = rng.random(2)
        return cls(float(u[0]), float(u[1]))


@dataclass
class Verdict:
    accepted: bool
    reason: str = ""
    fg_count: int = -1
    distinct: int = -1
    valid_fraction: float = -1.0


def judge(policy: RejectionPolicy, coins: Coins, label: np.ndarray | None, valid: np.ndarray | None) -> Verdict:
    """Apply the rejection tests to a final (augmented) crop."""
    v = Verdict(True)
    if valid is not None:
        v.valid_fraction = float(np.count_nonzero(valid)) / max(valid.size, 1)
        if not v.valid_fraction > policy.valid_ratio:
            v.accepted, v.reason = False, "valid ratio"
            return v
    if label is None:
        return v
    if policy.size_thres > 0:
        v.fg_count = int(np.count_nonzero(label))
        if v.fg_count < policy.size_thres and coins.fg < policy.p:
            v.accepted, v.reason = False, "foreground size"
            return v
    if policy.diversity > 0:
        v.distinct = int(np.unique(label).size)
        if v.distinct < policy.diversity and coins.diversity < policy.p:
            v.accepted, v.reason = False, "diversity"
            return v
    return v


def screen(policy: RejectionPolicy, coins: Coins, fg_bound: int | None, valid_bound: int | None,
           crop_voxels: int, exact_crop: bool) -> str:
    """Decide a trial from upper bounds alone; returns the rejection reason or '' (go on).

    ``fg_bound`` / ``valid_bound`` bound the foreground / valid voxels of the source region.
    ``exact_crop``: no augmentation, so the final crop is the source region itself (the bounds
    then bound the final counts directly); otherwise only a zero bound is conclusive.
    """
    if valid_bound is not None:
        if exact_crop:
            if not valid_bound / max(crop_voxels, 1) > policy.valid_ratio:
                return "valid ratio"
        elif valid_bound == 0:
            return "valid ratio"
    if fg_bound is not None:
        fg_max = fg_bound if exact_crop else (0 if fg_bound == 0 else crop_voxels)
        if policy.size_thres > 0 and fg_max < policy.size_thres and coins.fg < policy.p:
            return "foreground size"
        if policy.diversity > 0 and coins.diversity < policy.p:
            distinct_max = 1 if fg_max == 0 else crop_voxels
            if distinct_max < policy.diversity:
                return "diversity"
    return ""


@dataclass
class SamplingStats:
    """Counters of one dataset (per process); summed over batches by the loader."""

    trials: int = 0
    accepted: int = 0
    screened: int = 0

    @property
    def rejection_rate(self) -> float:
        return 0.0 if self.trials == 0 else 1.0 - self.accepted / self.trials
