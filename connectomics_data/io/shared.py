"""Volumes in POSIX shared memory: loaded once, read by every DataLoader worker without a copy.

Pickling a :class:`SharedArrayVolume` sends only the segment's name, shape and dtype, so a
worker started with 'spawn' or 'forkserver' attaches to the same pages instead of receiving a
copy (with 'fork' the pages are shared anyway). The process that created the segment owns it
and unlinks it when the volume is garbage-collected or the process exits.
"""

from __future__ import annotations

import os
import sys
import weakref
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from ..geometry import Box
from .base import Volume


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach without telling the resource tracker: the owner alone registers and unlinks.

    Before Python 3.13, attaching registers the segment with the resource tracker, and
    DataLoader workers (spawn or fork) share the owner's tracker process: unregistering after
    the attach would drop the *owner's* registration (no cleanup if the owner crashes, and a
    KeyError traceback from the tracker when the owner unlinks), keeping it would unlink the
    segment when a worker exits. So the registration is skipped while attaching.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, create=False, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name, create=False)
    finally:
        resource_tracker.register = register


def _release(shm: shared_memory.SharedMemory, owner: bool) -> None:
    try:
        shm.close()
    except BufferError:  # a view is still alive: the mapping stays until it is gone
        pass
    if owner:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


class SharedArrayVolume(Volume):
    """A read-only array in shared memory, ``(z, y, x)`` or ``(c, z, y, x)``, any dtype."""

    def __init__(self, array: np.ndarray, path: str = "<memory>", spatial_ndim: int = 3):
        array = np.asarray(array)
        self.path = path
        self.spatial_ndim = spatial_ndim
        self._shape = tuple(array.shape)
        self._dtype = array.dtype
        shm = shared_memory.SharedMemory(create=True, size=max(array.nbytes, 1))
        view = np.ndarray(self._shape, dtype=self._dtype, buffer=shm.buf)
        view[...] = array
        self._name = shm.name
        self._owner_pid = os.getpid()
        self._open(shm)
        self._finalizer = weakref.finalize(self, _release, shm, True)

    def _open(self, shm: shared_memory.SharedMemory) -> None:
        self._shm = shm
        arr = np.ndarray(self._shape, dtype=self._dtype, buffer=shm.buf)
        arr.flags.writeable = False
        self._array = arr

    @property
    def array(self) -> np.ndarray:
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        nch = len(self.channel_shape)
        return self._array[(slice(None),) * nch + box.slices()]

    def __getstate__(self) -> dict:
        return {
            "path": self.path, "spatial_ndim": self.spatial_ndim, "_shape": self._shape,
            "_dtype": self._dtype, "_name": self._name, "_owner_pid": self._owner_pid,
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        shm = _attach(self._name)
        self._open(shm)
        self._finalizer = weakref.finalize(self, _release, shm, False)
