"""The owner of the chunk slots: loads chunks (with halo) into shared memory in the background.

Lives in the main process only (the DataLoader's sampler drives it, see
:class:`~.tile_dataset.ChunkSampler`). :meth:`ChunkStore.advance` to slot ``s`` queues slots
``s`` and ``s + 1`` on one background loader thread (FIFO) and frees every slot but
``s - 1, s, s + 1``: while the training loop works on chunk ``k`` the next chunk is read, and
at most three slots exist at once (memory: about 3 x the bytes of one chunk grown by the halo).

A chunk is read through :meth:`Volume.read` of the chunk box grown by the halo with
``pad_mode='reflect'``: neighbouring data inside the volume, reflected data outside it
(PyTC's ``loadchunk`` + ``np.pad(..., 'reflect')``), in z-slabs of about ``slab_bytes`` written
straight into the slot's ``.npy`` file (peak extra memory: one slab; see :mod:`.chunk_write`).
Layout and readers: :mod:`.chunk_slots`.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OutputError
from ..geometry import Box, ChunkGrid, normalize_halo
from ..io.base import Volume
from . import chunk_cleanup
from .chunk_cleanup import DIR_PREFIX
from .chunk_schedule import ChunkSchedule
from .chunk_slots import KINDS, remove_quietly, slot_path, write_marker
from .chunk_write import write_volume_box

MARKER_KEEP = 8
"""The ``requested``/``freed`` markers of slots this far from the current one are removed."""

def _reader(volume: Volume | None, threads: int | None) -> Volume | None:
    """The volume the loader thread reads: a private copy with ``threads`` decode threads for
    tiled volumes (see :meth:`~..io.TiledVolume.reader_copy`), else the volume itself."""
    if volume is None or threads is None or not hasattr(volume, "reader_copy"):
        return volume
    volume.clear_cache()  # tiles decoded so far (intensity sampling) would stay a second cache
    return volume.reader_copy(threads)


def _lower_priority(nice: int) -> None:
    """Loader-thread initializer: add ``nice`` to this thread's niceness (Linux: per thread;
    threads it starts inherit it). Failures (no permission, other systems) are ignored."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


def default_root() -> str:
    """``/dev/shm`` when it is a writable directory (RAM-backed), else the temp directory."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


@dataclass
class ChunkSource:
    """One training volume cut into chunks.

    Attributes:
        image: ``(z, y, x)`` or ``(c, z, y, x)`` volume (e.g. a :class:`~..io.TiledVolume`).
        label, mask: same spatial shape, or None.
        grid: the chunk boxes of this volume (``ChunkGrid``, overlapping in training).
        name: for messages.
    """

    image: Volume
    label: Volume | None
    mask: Volume | None
    grid: ChunkGrid
    name: str

    def volumes(self) -> dict[str, Volume | None]:
        return {"img": self.image, "lab": self.label, "msk": self.mask}


@dataclass
class SlotStats:
    """Timings of one slot load (``time.perf_counter`` seconds; ``cpu_s``: CPU seconds of the
    loader thread and of the decode threads it used)."""

    slot: int
    chunk: int
    queued_at: float
    started_at: float = float("nan")
    ready_at: float = float("nan")
    read_s: float = float("nan")
    cpu_s: float = float("nan")
    nbytes: int = 0
    reused_from: int | None = None


@dataclass
class _Slot:
    stats: SlotStats
    future: Future | None = None
    state: str = "queued"  # queued | loading | ready | failed
    cancelled: bool = False
    files: list[str] = field(default_factory=list)


class _Resources:
    """What must be released even if the store is never closed: the thread and the directory."""

    def __init__(self, directory: str, owner_pid: int, lock_fd: int):
        self.directory = directory
        self.owner_pid = owner_pid
        self.lock_fd: int | None = lock_fd
        self.executor: ThreadPoolExecutor | None = None
        self.stopping = threading.Event()  # set: running loads stop at their next slab

    def release(self) -> None:
        if os.getpid() != self.owner_pid:  # a forked worker's copy: the owner cleans up
            return
        self.stopping.set()
        if self.executor is not None:
            # the last reference may drop inside the loader thread, which cannot join itself
            inside = threading.current_thread().name.startswith("chunk-load")
            self.executor.shutdown(wait=not inside, cancel_futures=True)
            self.executor = None
        self.remove_files()

    def remove_files(self) -> None:
        """Remove the directory now (SIGTERM: from the signal handler, without waiting for the
        loader thread, whose next write then fails)."""
        if os.getpid() != self.owner_pid:
            return
        self.stopping.set()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


class ChunkStore:
    """Loads the chunk of each slot of ``schedule`` into shared-memory files, one slot ahead.

    Args:
        sources: the volumes (several JSONs: all use the same chunk id in a slot).
        schedule: slot -> chunk id.
        halo: ``DATASET.PAD_SIZE`` (3 ints, or 6 before/after), read around each chunk.
        root: parent of the store directory (default :func:`default_root`).
        prefetch_next: also load slot ``s + 1`` while ``s`` is used (the point of the store;
            False only for measuring what it saves).
        pad_mode: how the halo outside the volume is filled (PyTC: 'reflect').
        derive: optional ``f(images, labels, masks) -> picklable`` run once per slot in the
            loader thread; readers get its result as :attr:`SlotData.derived`.
        slab_bytes: read granularity.
        read_threads: decode threads of the background read per tiled volume (a private copy
            of each :class:`~..io.TiledVolume` with its own cache; None keeps the volume's own).
        read_nice: niceness added to the loader thread and its decode threads (Linux: per
            thread; 0 = same priority as training). Lowering priority makes the read yield CPU
            to the training loop; too low and the read may not finish within DATA_CHUNK_ITER
            iterations (the loop then waits at the switch).
        last_slot: no slot after this one is prefetched (the run ends there).

    The store directory and its files are removed by :meth:`close`, when the store is
    garbage-collected, at interpreter exit, and on SIGTERM / SIGHUP (handled like Ctrl-C, see
    :mod:`.chunk_cleanup`). After SIGKILL the next store created in the same root removes the
    leftovers (``scripts/chunk_stores.py --remove`` does it by hand).
    """

    def __init__(
        self,
        sources: Sequence[ChunkSource],
        schedule: ChunkSchedule,
        halo: int | Sequence[int] = 0,
        *,
        root: str | None = None,
        prefetch_next: bool = True,
        pad_mode: str = "reflect",
        derive: Callable[[list[np.ndarray], list[np.ndarray | None], list[np.ndarray | None]], Any] | None = None,
        slab_bytes: int = 64 << 20,
        read_threads: int | None = None,
        read_nice: int = 0,
        last_slot: int | None = None,
    ):
        self.sources = list(sources)
        self.schedule = schedule
        self.halo = normalize_halo(halo, 3)
        self.prefetch_next = bool(prefetch_next)
        self.pad_mode = pad_mode
        self.derive = derive
        self.slab_bytes = int(slab_bytes)
        self.read_nice = int(read_nice)
        self.last_slot = None if last_slot is None else int(last_slot)
        self._readers = [{kind: _reader(vol, read_threads) for kind, vol in src.volumes().items()}
                         for src in self.sources]
        self.owner_pid = os.getpid()
        root = root or default_root()
        chunk_cleanup.remove_leftovers(root)
        try:
            self.directory = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{self.owner_pid}-", dir=root)
            lock_fd = chunk_cleanup.take_ownership(self.directory)
        except OSError as err:
            raise OutputError(f"cannot create the chunk store directory in {root}: {err}") from err
        self._res = _Resources(self.directory, self.owner_pid, lock_fd)
        self._finalizer = weakref.finalize(self, self._res.release)
        chunk_cleanup.install_signal_handlers()
        self._on_signal = chunk_cleanup.register(self._res.remove_files)
        self._lock = threading.RLock()
        self._slots: dict[int, _Slot] = {}
        self._marked: set[int] = set()
        self.history: list[SlotStats] = []

    # ------------------------------------------------------------------ geometry
    def boxes(self, chunk: int) -> list[Box]:
        """Per volume, the box of ``chunk`` grown by the halo (may leave the volume)."""
        flat = [v for pair in self.halo for v in pair]
        return [src.grid[chunk].grow(flat) for src in self.sources]

    def chunk_bytes(self, chunk: int) -> int:
        """Bytes of one slot of ``chunk`` (all volumes and kinds, halo included)."""
        total = 0
        for src, box in zip(self.sources, self.boxes(chunk)):
            for vol in src.volumes().values():
                if vol is not None:
                    total += int(np.prod(vol.channel_shape, dtype=np.int64)) * box.size * np.dtype(vol.dtype).itemsize
        return total

    # ------------------------------------------------------------------ driving
    def _check_owner(self) -> None:
        if os.getpid() != self.owner_pid:
            raise RuntimeError("ChunkStore methods may only be called in the process that created it")

    def advance(self, slot: int) -> None:
        """Make ``slot`` (and ``slot + 1``) loaded or loading; free all but ``slot - 1 .. slot + 1``.

        Re-raises the load error of ``slot`` when its load has already failed.
        """
        self._check_owner()
        with self._lock:
            ahead = self.prefetch_next and (self.last_slot is None or slot + 1 <= self.last_slot)
            wanted = [slot, slot + 1] if ahead else [slot]
            for s in wanted:
                self.request(s)
            keep = {slot - 1, *wanted}
            for s in [s for s in self._slots if s not in keep]:
                self.free(s)
            for s in [s for s in self._marked if abs(s - slot) > MARKER_KEEP and s not in self._slots]:
                remove_quietly(slot_path(self.directory, s, "freed"))
                remove_quietly(slot_path(self.directory, s, "requested"))
                self._marked.discard(s)
            fut = self._slots[slot].future
        if fut is not None and fut.done() and fut.exception() is not None:
            raise fut.exception()  # type: ignore[misc]

    def request(self, slot: int) -> None:
        """Queue ``slot`` for loading unless it is loaded or queued already."""
        self._check_owner()
        if slot < 0:
            return
        with self._lock:
            if slot in self._slots:
                return
            for name in ("freed", "error", "ready"):
                remove_quietly(slot_path(self.directory, slot, name))
            write_marker(self.directory, slot, "requested")
            self._marked.add(slot)
            stats = SlotStats(slot=slot, chunk=self.schedule.chunk_of_slot(slot), queued_at=time.perf_counter())
            entry = _Slot(stats=stats)
            self._slots[slot] = entry
            self.history.append(stats)
            if self._res.executor is None:
                self._res.executor = ThreadPoolExecutor(1, thread_name_prefix="chunk-load",
                                                        initializer=_lower_priority, initargs=(self.read_nice,))
            entry.future = self._res.executor.submit(self._load, slot, entry)

    def wait(self, slot: int, timeout: float | None = None) -> None:
        """Block until ``slot`` is loaded (requesting it if needed); re-raise its load error."""
        self._check_owner()
        with self._lock:
            if slot not in self._slots:
                self.request(slot)
            fut = self._slots[slot].future
        assert fut is not None
        fut.result(timeout)

    def free(self, slot: int) -> None:
        """Release ``slot``: its files go now (or when its running load ends)."""
        self._check_owner()
        with self._lock:
            entry = self._slots.pop(slot, None)
            if entry is None:
                return
            entry.cancelled = True
            if entry.state in ("ready", "failed"):
                self._delete(slot, entry)
            write_marker(self.directory, slot, "freed")

    def _delete(self, slot: int, entry: _Slot) -> None:
        remove_quietly(slot_path(self.directory, slot, "ready"))
        for path in entry.files:
            remove_quietly(path)
        entry.files = []

    # ------------------------------------------------------------------ loading (loader thread)
    def _load(self, slot: int, entry: _Slot) -> None:
        with self._lock:
            if entry.cancelled:
                return
            entry.state = "loading"
        stats = entry.stats
        stats.started_at = time.perf_counter()
        cpu_start, pool_start = time.thread_time(), self._pool_cpu()
        chunk = stats.chunk
        boxes = self.boxes(chunk)
        try:
            arrays = self._link_twin(slot, entry, chunk) or self._read(slot, entry, chunk, boxes)
            derived_name = None
            if self.derive is not None:
                derived_name = os.path.basename(slot_path(self.directory, slot, "derived.pkl"))
                path = os.path.join(self.directory, derived_name)
                if not os.path.exists(path):
                    data = self._map(arrays)
                    result = self.derive(*data)
                    with open(path, "wb") as f:
                        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
                    entry.files.append(path)
            stats.read_s = time.perf_counter() - stats.started_at
            stats.cpu_s = time.thread_time() - cpu_start + self._pool_cpu() - pool_start
            with self._lock:
                if entry.cancelled:
                    self._delete(slot, entry)
                    return
                write_marker(self.directory, slot, "ready", {
                    "slot": slot, "chunk": chunk, "arrays": arrays, "derived": derived_name,
                    "boxes": [[list(b.start), list(b.stop)] for b in boxes],
                })
                entry.state = "ready"
                stats.ready_at = time.perf_counter()
        except BaseException as err:
            with self._lock:
                entry.state = "failed"
                for path in entry.files:
                    remove_quietly(path)
                entry.files = []
                if not entry.cancelled:
                    write_marker(self.directory, slot, "error", {
                        "type": type(err).__name__, "message": str(err), "chunk": chunk,
                        "traceback": traceback.format_exc(),
                    })
            raise

    def _pool_cpu(self) -> float:
        return sum(float(getattr(v, "pool_cpu_seconds", 0.0)) for r in self._readers for v in r.values()
                   if v is not None)

    def _map(self, arrays: dict[str, str]) -> tuple[list, list, list]:
        out: tuple[list, list, list] = ([], [], [])
        for k, kind in enumerate(KINDS):
            for v in range(len(self.sources)):
                name = arrays.get(f"{kind}{v}")
                out[k].append(None if name is None else np.load(os.path.join(self.directory, name), mmap_mode="r"))
        return out

    def _read(self, slot: int, entry: _Slot, chunk: int, boxes: list[Box]) -> dict[str, str]:
        need = self.chunk_bytes(chunk)
        free = shutil.disk_usage(self.directory).free
        if need > free:
            raise OutputError(
                f"chunk {chunk} (slot {slot}) needs {need / 2**20:.0f} MiB in {self.directory} but only "
                f"{free / 2**20:.0f} MiB are free: raise DATASET.DATA_CHUNK_NUM (smaller chunks), "
                "or free /dev/shm (python scripts/chunk_stores.py lists the chunk stores there, --remove "
                "frees those of killed runs)"
            )
        arrays: dict[str, str] = {}
        stopping = self._res.stopping
        for v, box in enumerate(boxes):
            for kind, vol in self._readers[v].items():
                if vol is None:
                    continue
                path = slot_path(self.directory, slot, f"{kind}{v}.npy")
                entry.files.append(path)
                entry.stats.nbytes += write_volume_box(path, vol, box, self.pad_mode, self.slab_bytes,
                                                       lambda: entry.cancelled or stopping.is_set())
                arrays[f"{kind}{v}"] = os.path.basename(path)
        return arrays

    def _link_twin(self, slot: int, entry: _Slot, chunk: int) -> dict[str, str] | None:
        """Hard-link the files of a loaded slot of the same chunk (a repeat at a cycle edge)."""
        with self._lock:
            twin = next((s for s, e in self._slots.items()
                         if s != slot and e.state == "ready" and e.stats.chunk == chunk), None)
            if twin is None:
                return None
            with open(slot_path(self.directory, twin, "ready")) as f:
                info = json.load(f)
            names = dict(info["arrays"])
            if info.get("derived"):
                names["derived"] = info["derived"]
            arrays: dict[str, str] = {}
            for key, name in names.items():
                dst = slot_path(self.directory, slot, name.split(".", 1)[1])
                src = os.path.join(self.directory, name)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
                entry.files.append(dst)
                if key != "derived":
                    arrays[key] = os.path.basename(dst)
            entry.stats.reused_from = twin
            return arrays

    # ------------------------------------------------------------------ lifetime
    def live_slots(self) -> list[int]:
        """Slots queued, loading or loaded now."""
        with self._lock:
            return sorted(self._slots)

    def reading(self) -> bool:
        """True while a slot is queued or being read."""
        with self._lock:
            return any(e.state in ("queued", "loading") for e in self._slots.values())

    def shm_bytes(self) -> int:
        """Bytes the store's files take in its root (``/dev/shm``) now."""
        total = 0
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    try:
                        total += e.stat().st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            return 0
        return total

    def close(self) -> None:
        """Stop the loader thread (after its current read) and remove the directory."""
        with self._lock:
            for entry in self._slots.values():
                entry.cancelled = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        raise TypeError("a ChunkStore belongs to the process that created it and cannot be pickled")
