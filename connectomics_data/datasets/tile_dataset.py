"""``TileDataset``: training on huge (tiled) volumes chunk by chunk, streamed without stalls.

``DATASET.DO_CHUNK_TITLE = 1`` (PyTC's spelling). The volume (usually a tile JSON, any
:class:`~connectomics_data.io.Volume` works) is cut into ``DATA_CHUNK_NUM`` chunks per axis by
:class:`~connectomics_data.geometry.ChunkGrid` (50 % overlap in training with
``DATA_CHUNK_STRIDE``, optionally inside ``DATA_COORD_RANGE``); each chunk is trained on for
``DATA_CHUNK_ITER`` iterations, with a halo of ``PAD_SIZE`` voxels read from the neighbouring data
and reflect-padded outside the volume.

How it streams (fixes PyTC's ``run_chunk``: no ``__getitem__``, a new DataLoader and re-forked
workers per chunk, synchronous chunk reads that idle the GPU, random chunk draws that skip most
chunks):

* The schedule is a pure function (:class:`~.chunk_schedule.ChunkSchedule`): global sample index
  ``i`` -> slot ``i // (batch_size * DATA_CHUNK_ITER)`` -> chunk id from a seeded permutation per
  cycle, so every chunk is visited before any repeats.
* :class:`ChunkSampler` (the DataLoader's sampler, main process) drives a
  :class:`~.chunk_store.ChunkStore`: when it hands out the first index of slot ``s`` it queues
  slots ``s`` and ``s + 1`` on a background thread and frees slots ``<= s - 2``. The chunk of the
  next slot is read while the current one trains.
* Workers (kept alive across chunks; no new DataLoader) wait for the slot's ``ready`` marker
  and map its arrays from ``/dev/shm`` read-only (:mod:`.chunk_slots`): one copy in RAM for all
  workers. A per-slot :class:`~.volume_dataset.VolumeDataset` over those arrays draws the sample
  with the seed streams of the *global* index, so a sample is a pure function of
  ``(seed, rank, i)``, whatever the number of workers; every sample of a slot comes from the one
  chunk read (``DATA_CHUNK_ITER x SAMPLES_PER_BATCH`` samples per read).

Assumption (checked by :meth:`TileDataset.sampler`): the DataLoader keeps at most
``prefetch_factor x num_workers`` batches in flight and that is ``<= DATA_CHUNK_ITER``, so no
batch still needs slot ``s - 2`` when slot ``s`` begins. A violation is reported by the worker
("slot ... was freed"), never silently.

Sample dict: as :class:`VolumeDataset` (train mode) with ``pos`` = ``[volume, z, y, x]`` in the
coordinates of the whole tiled volume (the crop lies inside the chunk box grown by the halo)
and ``chunk`` = the chunk id.

Memory: at most three slots (previous, current, next) of ``chunk + halo`` voxels x bytes per
voxel of image + label (+ mask) in ``/dev/shm``; labels keep the JSON dtype (uint32 ids); plus
``TILE_CACHE_MB`` per tiled volume in the main process (formula and a measured example:
``tutorials/tiled_volume.md``, Memory). The slots go with :meth:`close`, on SIGTERM / SIGHUP,
and, after ``kill -9``, at the next start (:mod:`.chunk_cleanup`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.utils.data
from yacs.config import CfgNode

from ..errors import ConfigError, VolumeError
from ..geometry import Box, ChunkGrid, normalize_halo
from ..io.base import ArrayVolume, Volume
from ..normalize import ImageNormalizer
from ..sampling import BlockCountTable, RejectionPolicy
from .chunk_schedule import ChunkSchedule, select_chunk_ids
from .chunk_slots import SlotData, open_slot
from .chunk_store import ChunkSource, ChunkStore, SlotStats
from .tile_ranges import sampled_max, sampled_normalizer
from .volume_dataset import LabelTransform, VolumeDataset

SAMPLE_OPTIONS = ("augmentor", "target_specs", "weight_specs", "erosion", "dilation", "rejection",
                  "volume_weights", "do_2d", "reduce_labels", "screen_block")
"""Keyword arguments of :class:`VolumeDataset` that :class:`TileDataset` passes through."""


class _FixedLabelTransform(LabelTransform):
    """A :class:`LabelTransform` whose ``LABEL_BINARY`` decision was taken once for the whole
    volume (not per chunk)."""

    def __init__(self, binary: bool, mag: float, divide_255: Sequence[bool]):
        super().__init__(binary, mag)
        self.divide_255 = list(divide_255)

    def prepare(self, labels: Sequence[Volume]) -> None:
        pass


class _SlotVolumeDataset(VolumeDataset):
    """A :class:`VolumeDataset` over one slot whose screening tables the store built once."""

    def __init__(self, *args: Any, screen_tables: Sequence[tuple[Any, Any]] | None = None, **kwargs: Any):
        self._given_tables = screen_tables
        super().__init__(*args, **kwargs)

    def _build_screen_tables(self, block: Sequence[int]) -> None:
        if self._given_tables is None:
            super()._build_screen_tables(block)
            return
        for i, (fg, valid) in enumerate(self._given_tables):
            self._fg_tables[i], self._valid_tables[i] = fg, valid


class _ScreenTables:
    """``derive`` hook of the store: the screening tables of a slot, built once in the loader
    thread instead of once per worker (the same tables :class:`VolumeDataset` would build)."""

    def __init__(self, policy: RejectionPolicy, block: Sequence[int]):
        self.policy, self.block = policy, tuple(block)

    def __call__(self, images: list, labels: list, masks: list) -> list[tuple[Any, Any]]:
        out = []
        for label, mask in zip(labels, masks):
            fg = BlockCountTable(label, self.block) if label is not None and self.policy.tests_foreground else None
            valid = BlockCountTable(mask, self.block) if mask is not None else None
            out.append((fg, valid))
        return out


def check_in_flight(chunk_iter: int, num_workers: int, prefetch_factor: int | None) -> None:
    """Raise :class:`ConfigError` unless ``prefetch_factor x num_workers <= chunk_iter``."""
    in_flight = (int(prefetch_factor or 2) * int(num_workers)) if num_workers > 0 else 1
    if in_flight > chunk_iter:
        raise ConfigError(
            f"DATASET.DATA_CHUNK_ITER = {chunk_iter} is smaller than the batches a DataLoader keeps in "
            f"flight (SYSTEM.PREFETCH_FACTOR {prefetch_factor} x {num_workers} workers = {in_flight}): "
            "a batch could still need a chunk that was already freed; raise DATA_CHUNK_ITER or lower "
            "SYSTEM.PREFETCH_FACTOR / SYSTEM.NUM_CPUS"
        )


class ChunkSampler(torch.utils.data.Sampler[int]):
    """Global sample indices ``start + epoch * length + k`` that drive the dataset's chunk store.

    Same index semantics as :class:`~connectomics_data.loader.SampleIndexSampler` (each pass
    continues where the previous one stopped; ``start`` resumes). Runs in the main process:
    before it hands out the first index of a slot it calls :meth:`ChunkStore.advance`.
    """

    def __init__(self, dataset: TileDataset, start: int = 0):
        if dataset._store is None:
            raise RuntimeError("ChunkSampler needs the TileDataset of the main process (not a pickled copy)")
        self.dataset = dataset
        self.length = len(dataset)
        self.next_start = int(start)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        start = self.next_start
        self.next_start += self.length
        return self._indices(start, start + self.length)

    def _indices(self, lo: int, hi: int) -> Iterator[int]:
        schedule, store = self.dataset.schedule, self.dataset._store
        assert store is not None
        if self.dataset.stop_index is not None:  # the run ends there: no index (and no chunk) after it
            hi = min(hi, self.dataset.stop_index)
        per_slot = schedule.samples_per_slot
        i = lo
        while i < hi:
            slot = schedule.slot_of(i)
            store.advance(slot)
            end = min(hi, (slot + 1) * per_slot)
            yield from range(i, end)
            i = end


def _as_list(items: Sequence[Any] | None, n: int, what: str) -> list[Any]:
    if items is None:
        return [None] * n
    items = list(items)
    if len(items) != n:
        raise ValueError(f"got {len(items)} {what} for {n} image volumes")
    return items


def parse_coord_ranges(value: Any, n: int) -> list[list[int] | None]:
    """``DATA_COORD_RANGE``: None, one ``[z0, z1, y0, y1, x0, x1]``, or one per volume."""
    if value is None:
        return [None] * n
    vals = list(value)
    if vals and all(isinstance(v, (list, tuple)) for v in vals):
        if len(vals) != n:
            raise ConfigError(f"DATASET.DATA_COORD_RANGE has {len(vals)} ranges for {n} volumes")
        return [None if v is None else [int(x) for x in v] for v in vals]
    return [[int(x) for x in vals] for _ in range(n)]


class TileDataset(torch.utils.data.Dataset):
    """Training samples from huge volumes, one chunk (grown by a halo) in shared memory at a time.

    Use with ``DataLoader(ds, batch_size=batch_size, sampler=ds.sampler(...), ...)``: the
    sampler drives chunk loading. Without workers, ``ds[i]`` also works on its own (the main
    process loads what it needs).

    Args:
        volumes: image volumes ``(z, y, x)`` or ``(c, z, y, x)``, e.g. tiled volumes.
        labels, valid_masks: one per volume or None (same spatial shape; dtype kept).
        sample_size: crop size (z, y, x) read per sample (the augmentor's ``sample_size``).
        chunk_num: ``DATA_CHUNK_NUM`` (z, y, x); every volume is cut the same way.
        chunk_iter: ``DATA_CHUNK_ITER`` iterations per chunk.
        batch_size: ``SOLVER.SAMPLES_PER_BATCH`` (iterations are counted in batches).
        length: samples per epoch.
        halo: ``PAD_SIZE`` (3 ints, or 6 before/after).
        overlap: ``DATA_CHUNK_STRIDE``: 50 %-overlapping chunks (PyTC training).
        coord_ranges: per volume ``[z0, z1, y0, y1, x0, x1]`` or None (``DATA_COORD_RANGE``).
        chunk_ids, chunk_split: ``DATA_CHUNK_IND`` and ``CHUNK_IND_SPLIT``.
        seed, rank: sample and chunk-order streams.
        names: volume names for messages.
        normalizers: per volume; default: uint8 range, or the range of sampled slices
            (:mod:`.tile_ranges`) for other dtypes.
        label_transform: LABEL_BINARY / LABEL_MAG (the binary decision from sampled slices).
        shm_dir: where the slot files go (default ``/dev/shm``).
        prefetch_next: read chunk ``k + 1`` while ``k`` trains (False only to measure it).
        wait_timeout: seconds a reader waits for a slot before raising.
        read_threads, read_nice: decode threads and added niceness of the background chunk read
            (:class:`~.chunk_store.ChunkStore`; ``DATASET.CHUNK_READ_THREADS`` / ``CHUNK_READ_NICE``).
        stop_index: the global sample index at which the run ends (``ITERATION_TOTAL x batch``):
            the sampler hands out no index from there on, and no chunk after the last one used
            is read.
        **sample_options: passed to :class:`VolumeDataset` (see :data:`SAMPLE_OPTIONS`).
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        labels: Sequence[Volume | None] | None = None,
        valid_masks: Sequence[Volume | None] | None = None,
        *,
        sample_size: Sequence[int],
        chunk_num: Sequence[int],
        chunk_iter: int,
        batch_size: int,
        length: int,
        halo: int | Sequence[int] = 0,
        overlap: bool = True,
        coord_ranges: Sequence[Sequence[int] | None] | None = None,
        chunk_ids: Sequence[int] | None = None,
        chunk_split: str | Sequence[int] | None = None,
        seed: int = 0,
        rank: int = 0,
        names: Sequence[str] | None = None,
        normalizers: Sequence[ImageNormalizer] | None = None,
        label_transform: LabelTransform | None = None,
        shm_dir: str | None = None,
        prefetch_next: bool = True,
        wait_timeout: float = 600.0,
        read_threads: int | None = None,
        read_nice: int = 0,
        stop_index: int | None = None,
        **sample_options: Any,
    ):
        unknown = sorted(set(sample_options) - set(SAMPLE_OPTIONS))
        if unknown:
            raise TypeError(f"TileDataset got unexpected keyword arguments {unknown}; allowed: {list(SAMPLE_OPTIONS)}")
        if not volumes:
            raise ValueError("TileDataset needs at least one image volume")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        n = len(volumes)
        labels = _as_list(labels, n, "labels")
        masks = _as_list(valid_masks, n, "valid masks")
        self.names = list(names) if names is not None else [getattr(v, "path", f"volume {i}") for i, v in enumerate(volumes)]
        ranges = _as_list(coord_ranges, n, "coordinate ranges")
        self.sample_size = tuple(int(s) for s in sample_size)
        self.length = int(length)
        self.seed, self.rank = int(seed), int(rank)
        self.halo = normalize_halo(halo, 3)
        self.sample_options = dict(sample_options)
        self.wait_timeout = float(wait_timeout)
        grids = [self._grid(v, chunk_num, overlap, r, name) for v, r, name in zip(volumes, ranges, self.names)]
        ids = select_chunk_ids(len(grids[0]), chunk_ids, chunk_split)
        self.schedule = ChunkSchedule(ids, batch_size, chunk_iter, seed=self.seed, rank=self.rank)
        sources = [ChunkSource(v, lab, m, g, name) for v, lab, m, g, name in zip(volumes, labels, masks, grids, self.names)]
        self._check_fit(sources, ids)
        boxes = [Box([r[0], r[2], r[4]], [r[1], r[3], r[5]]) if r is not None else None for r in ranges]
        if normalizers is None:
            normalizers = [sampled_normalizer(v, b, 0.5, 0.5, "none") for v, b in zip(volumes, boxes)]
        self.normalizers = _as_list(normalizers, n, "normalizers")
        lt = label_transform or LabelTransform()
        divide = [lab is not None and lt.binary and sampled_max(lab, b) > 1 for lab, b in zip(labels, boxes)]
        self.label_transform = _FixedLabelTransform(lt.binary, lt.mag, divide)
        self.has_label = [lab is not None for lab in labels]
        policy = sample_options.get("rejection") or RejectionPolicy()
        derive = None
        if policy.screen and (any(m is not None for m in masks) or (policy.tests_foreground and any(self.has_label))):
            derive = _ScreenTables(policy, sample_options.get("screen_block", (1, 8, 8)))
        self.stop_index = None if stop_index is None else int(stop_index)
        last_slot = None if self.stop_index is None else self.schedule.slot_of(max(0, self.stop_index - 1))
        self._store: ChunkStore | None = ChunkStore(sources, self.schedule, [v for p in self.halo for v in p],
                                                    root=shm_dir, prefetch_next=prefetch_next, derive=derive,
                                                    read_threads=read_threads, read_nice=read_nice,
                                                    last_slot=last_slot)
        self.directory = self._store.directory
        self._owner_pid = os.getpid()
        self._views: dict[int, tuple[VolumeDataset, SlotData]] = {}
        self._views_lock = threading.Lock()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _grid(volume: Volume, chunk_num: Sequence[int], overlap: bool, coord_range: Sequence[int] | None,
              name: str) -> ChunkGrid:
        try:
            return ChunkGrid(volume.spatial_shape, chunk_num, overlap=overlap, coord_range=coord_range)
        except ValueError as err:
            raise ConfigError(
                f"{name} (shape {list(volume.spatial_shape)}): DATASET.DATA_CHUNK_NUM {list(chunk_num)} / "
                f"DATA_COORD_RANGE {coord_range}: {err}"
            ) from err

    def _check_fit(self, sources: Sequence[ChunkSource], ids: Sequence[int]) -> None:
        if len({len(s.grid) for s in sources}) > 1:
            raise ConfigError("all volumes must have the same number of chunks (DATA_CHUNK_NUM)")
        flat = [v for p in self.halo for v in p]
        for src in sources:
            for c in ids:
                grown = src.grid[c].grow(flat)
                if any(g < s for g, s in zip(grown.shape, self.sample_size)):
                    raise ConfigError(
                        f"{src.name}: chunk {c} {src.grid[c]} grown by the halo PAD_SIZE is {list(grown.shape)}, "
                        f"smaller than the sample size {list(self.sample_size)}; use fewer chunks "
                        "(DATASET.DATA_CHUNK_NUM), a larger PAD_SIZE or a smaller MODEL.INPUT_SIZE"
                    )

    # ------------------------------------------------------------------ Dataset
    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        dataset, data = self._view(self.schedule.slot_of(index))
        out = dataset[index]
        vol = int(out["pos"][0])
        out["pos"] = out["pos"].copy()
        out["pos"][1:] += np.asarray(data.boxes[vol].start, dtype=np.int64)
        out["chunk"] = data.chunk
        return out

    def chunk_of(self, index: int) -> int:
        """The chunk id sample ``index`` comes from."""
        return self.schedule.chunk_of(index)

    def chunk_box(self, chunk: int, volume: int = 0, with_halo: bool = True) -> Box:
        """The box of ``chunk`` in ``volume`` (grown by the halo unless ``with_halo=False``)."""
        box = self._grid_of(volume)[chunk]
        return box.grow([v for p in self.halo for v in p]) if with_halo else box

    def _grid_of(self, volume: int) -> ChunkGrid:
        if self._store is None:
            raise RuntimeError("chunk geometry is only available in the process that built the TileDataset")
        return self._store.sources[volume].grid

    @property
    def is_owner(self) -> bool:
        """True in the process that built the dataset (it loads chunks; workers only read)."""
        return self._store is not None and os.getpid() == self._owner_pid

    def _view(self, slot: int) -> tuple[VolumeDataset, SlotData]:
        if self.is_owner:
            assert self._store is not None
            self._store.advance(slot)
            self._store.wait(slot, self.wait_timeout)
        got = self._views.get(slot)
        if got is not None:
            return got
        with self._views_lock:  # loader threads (SYSTEM.LOADER_MODE 'thread') share the views
            got = self._views.get(slot)
            if got is not None:
                return got
            data = open_slot(self.directory, slot, self.wait_timeout, self._owner_pid)
            for old in [s for s in self._views if not slot - 1 <= s <= slot + 1]:
                self._views.pop(old, None)
            got = (self._slot_dataset(data), data)
            self._views[slot] = got
            return got

    def _slot_dataset(self, data: SlotData) -> VolumeDataset:
        def vol(arr: np.ndarray | None, what: str, v: int) -> Volume | None:
            if arr is None:
                return None
            return ArrayVolume(arr, path=f"{self.names[v]} {what} chunk {data.chunk} {data.boxes[v]}")

        n = len(data.images)
        names = [f"{self.names[v]} chunk {data.chunk} {data.boxes[v]}" for v in range(n)]
        try:
            return _SlotVolumeDataset(
                [vol(a, "image", v) for v, a in enumerate(data.images)],
                [vol(a, "label", v) for v, a in enumerate(data.labels)],
                [vol(a, "valid mask", v) for v, a in enumerate(data.masks)],
                screen_tables=data.derived, sample_size=self.sample_size, mode="train", pad=0,
                length=self.length, seed=self.seed, rank=self.rank, normalizers=self.normalizers,
                label_transform=self.label_transform, names=names, **self.sample_options,
            )
        except ValueError as err:
            if isinstance(err, (ConfigError, VolumeError)):
                raise
            raise VolumeError(f"chunk {data.chunk} (slot {data.slot}): {err}") from err

    # ------------------------------------------------------------------ driving
    def sampler(self, start: int = 0, num_workers: int = 0, prefetch_factor: int | None = 2) -> ChunkSampler:
        """The sampler to give the DataLoader; checks the in-flight assumption (module doc).

        Args:
            start: first global sample index (resume at iteration ``it``: ``it * batch_size``).
            num_workers, prefetch_factor: the DataLoader's settings.
        """
        check_in_flight(self.schedule.chunk_iter, num_workers, prefetch_factor)
        return ChunkSampler(self, start)

    @property
    def load_history(self) -> list[SlotStats]:
        """Timings of every slot load of this run (main process)."""
        return [] if self._store is None else list(self._store.history)

    def slot_stats(self, slot: int) -> SlotStats | None:
        """The timings of the latest load of ``slot`` (main process), or None."""
        for stats in reversed(self.load_history):
            if stats.slot == slot:
                return stats
        return None

    def reading(self) -> bool:
        """True while a chunk is queued or being read in the background (main process)."""
        return self._store is not None and not self._store.closed and self._store.reading()

    def shm_bytes(self) -> int:
        """Bytes of the chunk slots in shared memory now (main process)."""
        return 0 if self._store is None or self._store.closed else self._store.shm_bytes()

    def close(self) -> None:
        """Free the shared-memory slots and stop the loader thread (main process)."""
        self._views.clear()
        if self.is_owner and self._store is not None:
            self._store.close()

    def __enter__(self) -> TileDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None  # owner-only: workers read the slot files by name
        state["_views"] = {}
        del state["_views_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._views_lock = threading.Lock()


# ---------------------------------------------------------------------- config
def _check_scales(cfg: CfgNode) -> None:
    d = cfg.DATASET
    for key in ("DATA_SCALE", "IMAGE_SCALE", "LABEL_SCALE", "VALID_MASK_SCALE"):
        value = d[key]
        if value is not None and any(float(s) != 1.0 for s in value):
            raise ConfigError(
                f"DATASET.{key} = {list(value)}: scaling is not supported with DATASET.DO_CHUNK_TITLE "
                "(it would read whole volumes); rescale the tiles or use a scaled tile JSON"
            )


def build_tile_dataset(cfg: CfgNode, mode: str = "train", rank: int = 0, world_size: int = 1,
                       seed: int | None = None, augmentor: Any = "auto",
                       shm_dir: str | None = None) -> torch.utils.data.Dataset:
    """The dataset of ``mode`` for ``DATASET.DO_CHUNK_TITLE = 1``.

    'train': a :class:`TileDataset` (build its DataLoader with ``sampler=ds.sampler(start,
    num_workers, prefetch_factor)``). 'val': the plain :func:`~.build.build_dataset` (the val
    tile JSON is read window by window through the tile cache). 'test': chunked inference
    lives in :mod:`connectomics_data.inference` (``predict_chunked``).

    ``world_size`` is accepted for symmetry: under DDP each rank keeps all chunk ids (after
    ``CHUNK_IND_SPLIT``) and visits them in its own seeded order.
    """
    from ..augment import build_train_augmentor
    from .build import (
        build_dataset,
        load_inputs,
        rejection_policy_from_cfg,
        target_specs_from_cfg,
        train_length,
    )

    if mode == "val":
        return build_dataset(cfg, "val", rank=rank, seed=seed)
    if mode == "test":
        raise ConfigError("DATASET.DO_CHUNK_TITLE inference runs chunk by chunk in connectomics_data.inference "
                          "(predict_chunked), not through a dataset")
    if mode != "train":
        raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
    d, m = cfg.DATASET, cfg.MODEL
    _check_scales(cfg)
    if augmentor == "auto":
        augmentor = build_train_augmentor(cfg)
    sample_size = list(augmentor.sample_size) if augmentor is not None else [int(s) for s in m.INPUT_SIZE]
    inputs = load_inputs(cfg, "train")
    if inputs.extra:
        raise ConfigError("extra 'img' targets (AUGMENTOR.ADDITIONAL_TARGETS_TYPE 'img') are not supported "
                          "with DATASET.DO_CHUNK_TITLE")
    ranges = parse_coord_ranges(d.DATA_COORD_RANGE, len(inputs.images))
    boxes = [None if r is None else Box([r[0], r[2], r[4]], [r[1], r[3], r[5]]) for r in ranges]
    normalizers = [sampled_normalizer(v, b, d.MEAN, d.STD, d.MATCH_ACT, d.NORMALIZE_RANGE)
                   for v, b in zip(inputs.images, boxes)]
    specs, wspecs = target_specs_from_cfg(cfg)
    policy = rejection_policy_from_cfg(cfg)
    batch = int(cfg.SOLVER.SAMPLES_PER_BATCH)
    length = train_length(cfg)
    return TileDataset(
        inputs.images, inputs.labels, inputs.masks,
        sample_size=sample_size, chunk_num=list(d.DATA_CHUNK_NUM), chunk_iter=int(d.DATA_CHUNK_ITER),
        batch_size=batch, length=length, halo=d.PAD_SIZE, overlap=bool(d.DATA_CHUNK_STRIDE),
        coord_ranges=ranges, chunk_ids=d.DATA_CHUNK_IND, chunk_split=d.CHUNK_IND_SPLIT,
        seed=int(cfg.SYSTEM.SEED if seed is None else seed), rank=rank, names=inputs.names,
        normalizers=normalizers, label_transform=LabelTransform(bool(d.LABEL_BINARY), float(d.LABEL_MAG)),
        shm_dir=shm_dir, augmentor=augmentor, target_specs=specs, weight_specs=wspecs,
        erosion=m.LABEL_EROSION, dilation=m.LABEL_DILATION, rejection=policy,
        volume_weights=inputs.weights if d.VOLUME_SAMPLING == "element" else None,
        do_2d=bool(d.DO_2D), reduce_labels=bool(d.REDUCE_LABEL),
        read_threads=int(d.CHUNK_READ_THREADS) or int(d.TILE_THREADS), read_nice=int(d.CHUNK_READ_NICE),
        stop_index=int(cfg.SOLVER.ITERATION_TOTAL) * batch,
    )
