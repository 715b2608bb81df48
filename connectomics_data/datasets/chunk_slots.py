"""The on-disk layout of chunk slots in shared memory, and the reader side (any process).

A slot is one chunk loaded for ``DATA_CHUNK_ITER`` iterations. The owner (:class:`.ChunkStore`,
main process) writes its arrays as ``.npy`` files in a directory on a RAM-backed file system
(``/dev/shm``: these files *are* POSIX shared-memory objects), then publishes the slot by an
atomic rename of its ``ready`` marker. Readers (DataLoader workers, or the main process with
``num_workers=0``) wait for that marker and map the arrays read-only with
``np.load(mmap_mode='r')``: every process reads the same physical pages, no copy per worker.

Files of slot ``s`` in the store directory (``s`` zero-padded to 6 digits)::

    s000004.requested     the owner has queued the slot (created before any index of it is handed out)
    s000004.img0.npy      image of volume 0, chunk box grown by the halo, (z, y, x) or (c, z, y, x)
    s000004.lab0.npy      label of volume 0 (JSON dtype kept, e.g. uint32), (z, y, x)
    s000004.msk0.npy      valid mask of volume 0, (z, y, x)
    s000004.derived.pkl   optional per-slot data computed once by the owner (screening tables)
    s000004.ready         JSON: slot, chunk id, grown boxes, array file names (published last)
    s000004.error         JSON: type and message of a failed load (instead of ``ready``)
    s000004.freed         the owner released the slot (its arrays are gone)

The markers are written whole-then-renamed, so a reader never sees half a marker; the arrays are
complete before ``ready`` exists.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import errors
from ..geometry import Box

KINDS = ("img", "lab", "msk")


def slot_path(directory: str, slot: int, name: str) -> str:
    """Path of file ``name`` (``'ready'``, ``'img0.npy'``...) of ``slot``."""
    return os.path.join(directory, f"s{int(slot):06d}.{name}")


def write_marker(directory: str, slot: int, name: str, content: dict[str, Any] | None = None) -> None:
    """Write marker ``name`` of ``slot`` atomically (temporary file, then rename)."""
    final = slot_path(directory, slot, name)
    tmp = f"{final}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(content or {}, f)
    os.replace(tmp, final)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def error_from_marker(info: dict[str, Any], slot: int, directory: str) -> BaseException:
    """Rebuild the exception of a failed load: the project's own type when it is one."""
    name, message = str(info.get("type", "")), str(info.get("message", ""))
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.ConnectomicsDataError):
        return cls(message)
    builtin = getattr(builtins, name, None)
    text = f"loading slot {slot} (chunk {info.get('chunk')}) into {directory} failed in the main process: {name}: {message}"
    if isinstance(builtin, type) and issubclass(builtin, OSError):
        return OSError(text)
    return RuntimeError(text)


@dataclass
class SlotData:
    """A loaded slot, mapped read-only.

    Attributes:
        slot, chunk: the slot and its chunk id.
        boxes: per volume, the chunk box grown by the halo (volume coordinates, may leave the
            volume: that part holds reflected data).
        images, labels, masks: per volume, arrays of the grown box (labels/masks may be None).
        derived: what the owner's ``derive`` hook computed for this slot, or None.
    """

    slot: int
    chunk: int
    boxes: list[Box]
    images: list[np.ndarray]
    labels: list[np.ndarray | None]
    masks: list[np.ndarray | None]
    derived: Any = None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_ready(directory: str, slot: int, timeout: float, owner_pid: int | None = None) -> dict[str, Any]:
    """Block until ``slot`` is published and return its ``ready`` JSON.

    Raises:
        the load's own error (a missing tile names the file) when the owner failed to load it;
        RuntimeError: the slot was never requested (the DataLoader does not use the dataset's
            :meth:`~.TileDataset.sampler`), was already freed (more batches in flight than
            DATA_CHUNK_ITER allows), the owner process died, or ``timeout`` seconds passed.
    """
    ready, error = slot_path(directory, slot, "ready"), slot_path(directory, slot, "error")
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            with open(ready) as f:
                return json.load(f)
        except FileNotFoundError:
            pass
        try:
            with open(error) as f:
                failed = json.load(f)
        except FileNotFoundError:
            failed = None
        if failed is not None:
            raise error_from_marker(failed, slot, directory)
        if not os.path.isdir(directory):
            raise RuntimeError(f"chunk store {directory} is gone: the dataset was closed or its process exited")
        if os.path.exists(slot_path(directory, slot, "freed")):
            raise RuntimeError(
                f"slot {slot} in {directory} was freed before this process read it: more batches "
                "were in flight than DATASET.DATA_CHUNK_ITER iterations (lower SYSTEM.PREFETCH_FACTOR "
                "or SYSTEM.NUM_CPUS, or raise DATA_CHUNK_ITER), or samples were requested out of order"
            )
        if not os.path.exists(slot_path(directory, slot, "requested")):
            raise RuntimeError(
                f"slot {slot} was never requested from the chunk store {directory}: build the "
                "DataLoader with sampler=dataset.sampler(...) (a ChunkSampler drives chunk loading)"
            )
        if owner_pid is not None and owner_pid != os.getpid() and not pid_alive(owner_pid):
            raise RuntimeError(f"the process {owner_pid} that loads chunks into {directory} has exited")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"slot {slot} was not loaded into {directory} within {timeout:.0f} s (the chunk read "
                "is slower than this wait_timeout, or the loading thread is stuck)"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def open_slot(directory: str, slot: int, timeout: float, owner_pid: int | None = None) -> SlotData:
    """Wait for ``slot`` and map its arrays read-only (``np.load(mmap_mode='r')``)."""
    info = wait_ready(directory, slot, timeout, owner_pid)
    arrays = info["arrays"]
    n = len(info["boxes"])

    def load(kind: str, v: int) -> np.ndarray | None:
        name = arrays.get(f"{kind}{v}")
        return None if name is None else np.load(os.path.join(directory, name), mmap_mode="r")

    derived = None
    if info.get("derived"):
        with open(os.path.join(directory, info["derived"]), "rb") as f:
            derived = pickle.load(f)
    images = [load("img", v) for v in range(n)]
    return SlotData(
        slot=int(info["slot"]),
        chunk=int(info["chunk"]),
        boxes=[Box(a, b) for a, b in info["boxes"]],
        images=images,  # type: ignore[arg-type]
        labels=[load("lab", v) for v in range(n)],
        masks=[load("msk", v) for v in range(n)],
        derived=derived,
    )
