"""Where a training sample comes from: which volume, which position.

PyTC v1 semantics: a volume is chosen with probability proportional to its number of crop
positions ('automatic'), or by explicit per-volume weights ('element'); the position is uniform
over all crop origins of the volume padded by ``PAD_SIZE``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geometry import Box


def crop_counts(shape: Sequence[int], sample_size: Sequence[int], pad: Sequence[tuple[int, int]]) -> np.ndarray:
    """Crop origins per axis of a volume of ``shape`` padded by ``pad`` ((before, after) per axis)."""
    counts = np.array([n + a + b - s + 1 for n, s, (a, b) in zip(shape, sample_size, pad)], dtype=np.int64)
    return counts


class PositionSampler:
    """Draws (volume index, crop box in unpadded coordinates) for training samples.

    Args:
        shapes: spatial shape (z, y, x) of each volume.
        sample_size: crop size (z, y, x).
        pad: ``((before, after), ...)`` padding per axis (DATASET.PAD_SIZE).
        weights: per-volume weights for 'element' sampling; ``None`` = 'automatic'
            (proportional to the number of crop positions).
        names: volume names for error messages.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], sample_size: Sequence[int],
                 pad: Sequence[tuple[int, int]], weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None):
        self.sample_size = tuple(int(s) for s in sample_size)
        self.pad = tuple((int(a), int(b)) for a, b in pad)
        names = list(names) if names is not None else [f"volume {i}" for i in range(len(shapes))]
        self.counts = []
        for shape, name in zip(shapes, names):
            counts = crop_counts(shape, self.sample_size, self.pad)
            if np.any(counts < 1):
                padded = [n + a + b for n, (a, b) in zip(shape, self.pad)]
                raise ValueError(
                    f"{name}: the sample size {list(self.sample_size)} does not fit the volume "
                    f"{list(shape)} (padded by DATASET.PAD_SIZE to {padded}); use a smaller "
                    "MODEL.INPUT_SIZE, more padding, or DATASET.ENSURE_MIN_SIZE"
                )
            self.counts.append(counts)
        totals = np.array([float(np.prod(c)) for c in self.counts])
        if weights is None:
            probs = totals
        else:
            probs = np.asarray(weights, dtype=np.float64)
            if probs.shape != totals.shape or np.any(probs < 0) or not np.isfinite(probs).all() or probs.sum() <= 0:
                raise ValueError(f"volume weights must be {len(totals)} non-negative numbers with a positive sum, got {list(weights)}")
        self.probabilities = probs / probs.sum()
        self._cdf = np.cumsum(self.probabilities)

    def draw(self, rng: np.random.Generator) -> tuple[int, Box]:
        """One (volume index, crop box) draw; the box may extend into the padding."""
        vol = int(np.searchsorted(self._cdf, rng.random(), side="right"))
        vol = min(vol, len(self.counts) - 1)
        origin = [int(rng.integers(0, c)) for c in self.counts[vol]]
        start = [o - a for o, (a, _) in zip(origin, self.pad)]
        return vol, Box.from_shape(self.sample_size, start)
