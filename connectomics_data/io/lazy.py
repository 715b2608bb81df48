"""A volume whose file is opened lazily, once per process, and never pickled open.

HDF5 and other file handles are not fork-safe and cannot travel to DataLoader workers. A
:class:`LazyArrayVolume` keeps only the path and metadata (shape, dtype, axis layout) in its
pickled state; the handle is opened on the first read in the reading process, and reopened
when the process id changes (a forked worker inherits the object but not a usable handle).
"""

from __future__ import annotations

import os
import threading
import zlib
from abc import abstractmethod
from typing import Any

import numpy as np

from ..errors import ConnectomicsDataError, VolumeError, VolumeNotFoundError
from ..geometry import Box
from .base import Volume
from .layout import AxisLayout

# Opening is rare, so one lock for all volumes is enough; it is recreated in a forked child
# (a lock held by another thread at fork time would otherwise stay locked forever).
_OPEN_LOCK = threading.Lock()


def _reset_lock_after_fork() -> None:
    global _OPEN_LOCK
    _OPEN_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)

READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    EOFError,
    zlib.error,
)
"""Exceptions a format library raises on corrupt or truncated data; wrapped in VolumeError."""


def check_exists(path: str | os.PathLike) -> str:
    """Return ``path`` as a string; :class:`VolumeNotFoundError` naming it when it is missing."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise VolumeNotFoundError(f"volume file not found: {p}")
    return p


def wrap_error(path: str, what: str, err: BaseException) -> ConnectomicsDataError:
    """A project error for a failure of a format library (a missing file stays 'not found')."""
    if isinstance(err, FileNotFoundError):
        return VolumeNotFoundError(f"{path}: {what}: {err}")
    return VolumeError(f"{path}: {what}: {type(err).__name__}: {err}")


class LazyArrayVolume(Volume):
    """Base of file-backed volumes: an array-like handle opened lazily per process.

    Subclasses set ``path``, ``layout`` (an :class:`AxisLayout`) and ``_dtype`` in
    ``__init__`` (reading only metadata) and implement :meth:`_open`, which returns
    ``(array, resource)``: an object indexable with a tuple of slices in stored order, and
    something with ``close()`` (or ``None``). Reads index only the requested box.
    """

    layout: AxisLayout
    _dtype: np.dtype
    _array: Any = None
    _resource: Any = None
    _pid: int | None = None

    @abstractmethod
    def _open(self) -> tuple[Any, Any]:
        """Open the file in this process; return ``(array_like, closable_or_None)``."""

    # ------------------------------------------------------------------ Volume interface
    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        array = self._handle()
        try:
            block = np.asarray(array[self.layout.index(box)])
        except ConnectomicsDataError as err:  # e.g. a corrupt slice of a stack: add the box
            raise type(err)(f"{err} (while reading box {box} of {self.path})") from err
        except READ_ERRORS as err:
            raise wrap_error(self.path, f"cannot read box {box}", err) from err
        out = self.layout.to_volume_order(block, box)
        if out.dtype != self._dtype:
            out = out.astype(self._dtype)
        if isinstance(array, np.ndarray) and np.may_share_memory(out, array):
            out = out.copy()  # never hand out views of a memory map or a cached decode
        return out

    # ------------------------------------------------------------------ handle management
    def _handle(self) -> Any:
        pid = os.getpid()
        array = self._array
        if array is None or self._pid != pid:
            with _OPEN_LOCK:
                if self._array is None or self._pid != pid:
                    # A handle inherited through fork is replaced, never closed or used here:
                    # it belongs to the parent process.
                    try:
                        opened, resource = self._open()
                    except ConnectomicsDataError:
                        raise
                    except READ_ERRORS as err:
                        raise wrap_error(self.path, "cannot open", err) from err
                    self._array, self._resource, self._pid = opened, resource, pid
                array = self._array
        return array

    @property
    def is_open(self) -> bool:
        """True when this process holds an open handle."""
        return self._array is not None and self._pid == os.getpid()

    def close(self) -> None:
        """Close this process's handle (the next read reopens it)."""
        if self._resource is not None and self._pid == os.getpid():
            close = getattr(self._resource, "close", None)
            if close is not None:
                close()
        self._array, self._resource, self._pid = None, None, None

    def __enter__(self) -> LazyArrayVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None
        state["_resource"] = None
        state["_pid"] = None
        return state
