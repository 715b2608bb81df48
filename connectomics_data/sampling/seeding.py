"""Counter-based random streams: a sample is a pure function of (seed, epoch, rank, index).

Every random choice of a training sample comes from a ``numpy.random.Generator`` derived with
``numpy.random.SeedSequence(seed, spawn_key=(epoch, rank, index, trial, stream))``. Nothing
depends on which DataLoader worker computes the sample or in what order, so batches are
identical for 0, 1 or N workers, and two ranks never draw the same stream.
"""

from __future__ import annotations

import numpy as np

STREAM_POSITION = 0  # volume choice, position, rejection coins
STREAM_AUGMENT = 1  # augmentation parameters


def sample_rng(seed: int, epoch: int, rank: int, index: int, trial: int = 0, stream: int = STREAM_POSITION) -> np.random.Generator:
    """The generator of one stream of one trial of one sample."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(epoch), int(rank), int(index), int(trial), int(stream)))
    return np.random.Generator(np.random.PCG64(ss))
