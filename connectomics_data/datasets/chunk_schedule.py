"""Which chunk a training sample comes from: a pure function of (seed, rank, sample index).

Global sample index ``i`` -> iteration ``i // batch_size`` -> slot ``iteration // chunk_iter``
(``DATA_CHUNK_ITER`` iterations per slot) -> chunk id ``order(cycle)[slot % n]`` where
``cycle = slot // n`` and ``order(cycle)`` is a seeded permutation of the ``n`` chunk ids: every
chunk is visited once per cycle, all before any repeats (PyTC v1 drew chunks at random and, with
its shipped MitoEM config, visited 15 of 256 chunks). Nothing depends on the number of workers,
on the epoch boundaries or on resuming: the schedule is the same whoever asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..geometry import parse_chunk_split, split_indices

ORDER_STREAM = 0x43484E4B
"""SeedSequence spawn-key tag of the chunk-order stream (disjoint from the sample streams)."""


def order_rng(seed: int, rank: int, cycle: int) -> np.random.Generator:
    """The generator that orders the chunks of ``cycle`` for ``rank``."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(ORDER_STREAM, int(rank), int(cycle)))
    return np.random.Generator(np.random.PCG64(ss))


def select_chunk_ids(
    num_chunks: int, chunk_ind: Sequence[int] | None = None, split: str | Sequence[int] | None = None
) -> list[int]:
    """The chunk ids this job trains on (PyTC semantics).

    Args:
        num_chunks: ``prod(DATA_CHUNK_NUM)``.
        chunk_ind: ``DATA_CHUNK_IND`` (explicit ids, z-major) or None for all.
        split: ``CHUNK_IND_SPLIT`` (``"rank-world"`` or ``[rank, world]``): contiguous share, the
            last rank taking the remainder.

    Raises:
        ConfigError: an id out of range or repeated, or an empty selection.
    """
    if chunk_ind is None:
        ids = list(range(num_chunks))
    else:
        ids = [int(c) for c in chunk_ind]
        bad = [c for c in ids if not 0 <= c < num_chunks]
        if bad:
            raise ConfigError(
                f"DATASET.DATA_CHUNK_IND {list(chunk_ind)}: ids {bad} are outside [0, {num_chunks}) "
                f"(DATA_CHUNK_NUM gives {num_chunks} chunks)"
            )
        if len(set(ids)) != len(ids):
            raise ConfigError(f"DATASET.DATA_CHUNK_IND {list(chunk_ind)} repeats ids")
    if split is not None:
        try:
            rank, world = parse_chunk_split(split)
        except ValueError as err:
            raise ConfigError(f"DATASET.CHUNK_IND_SPLIT: {err}") from err
        ids = split_indices(ids, rank, world)
    if not ids:
        raise ConfigError(
            f"no chunk to train on: DATA_CHUNK_IND={chunk_ind}, CHUNK_IND_SPLIT={split!r} "
            f"select none of {num_chunks} chunks"
        )
    return ids


class ChunkSchedule:
    """Slot and chunk of every global sample index.

    Args:
        chunk_ids: the chunks to visit (after DATA_CHUNK_IND / CHUNK_IND_SPLIT).
        batch_size: samples per iteration (SOLVER.SAMPLES_PER_BATCH).
        chunk_iter: iterations per slot (DATA_CHUNK_ITER).
        seed, rank: the order stream; ranks draw different orders.
    """

    def __init__(self, chunk_ids: Sequence[int], batch_size: int, chunk_iter: int, seed: int = 0, rank: int = 0):
        if not chunk_ids:
            raise ValueError("ChunkSchedule needs at least one chunk id")
        if batch_size < 1 or chunk_iter < 1:
            raise ValueError(f"batch_size ({batch_size}) and chunk_iter ({chunk_iter}) must be >= 1")
        self.chunk_ids = tuple(int(c) for c in chunk_ids)
        self.batch_size = int(batch_size)
        self.chunk_iter = int(chunk_iter)
        self.seed, self.rank = int(seed), int(rank)
        self._orders: dict[int, tuple[int, ...]] = {}

    @property
    def samples_per_slot(self) -> int:
        return self.batch_size * self.chunk_iter

    def slot_of(self, index: int) -> int:
        """The slot of global sample ``index`` (>= 0)."""
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        return int(index) // self.samples_per_slot

    def first_index(self, slot: int) -> int:
        """The first global sample index of ``slot``."""
        return int(slot) * self.samples_per_slot

    def order(self, cycle: int) -> tuple[int, ...]:
        """The chunk ids of ``cycle`` in visiting order (a permutation of :attr:`chunk_ids`)."""
        got = self._orders.get(cycle)
        if got is None:
            perm = order_rng(self.seed, self.rank, cycle).permutation(len(self.chunk_ids))
            got = tuple(self.chunk_ids[int(p)] for p in perm)
            if len(self._orders) > 64:
                self._orders.clear()
            self._orders[cycle] = got
        return got

    def chunk_of_slot(self, slot: int) -> int:
        """The chunk id trained on during ``slot``."""
        if slot < 0:
            raise IndexError(f"slot must be >= 0, got {slot}")
        cycle, pos = divmod(int(slot), len(self.chunk_ids))
        return self.order(cycle)[pos]

    def chunk_of(self, index: int) -> int:
        """The chunk id of global sample ``index``."""
        return self.chunk_of_slot(self.slot_of(index))
