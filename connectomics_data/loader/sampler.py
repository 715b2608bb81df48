"""Index samplers: training hands out global sample indices, never a permutation of positions.

A training sample is a pure function of its index (and the seed and rank), so the sampler only
has to say which indices an epoch covers: epoch ``e`` covers ``[e * n, (e + 1) * n)``. Nothing is
materialised (PyTC's DistributedSampler built a permutation of every voxel position).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch.utils.data


class SampleIndexSampler(torch.utils.data.Sampler[int]):
    """Yields ``epoch * length + i`` for ``i in range(length)``; the epoch advances per pass.

    Args:
        length: samples per epoch.
        start: the first global index (resuming at an iteration skips what was consumed).
    """

    def __init__(self, length: int, start: int = 0):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.length = int(length)
        self.next_start = int(start)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        start = self.next_start
        self.next_start += self.length
        return iter(range(start, start + self.length))
