"""Volumes read through TensorStore (Neuroglancer precomputed, N5), opened lazily per process.

TensorStore decodes chunks in its own thread pool and releases the GIL, but it cannot run in a
process forked from one that has used it (it aborts the child). Hence:

* metadata is parsed from the format's JSON by the reader modules, never through TensorStore,
  so building datasets and volumes in the main process starts no TensorStore threads;
* the store is opened on the first read in the reading process (pickling carries only the spec);
* a process forked after its parent used TensorStore gets one clear :class:`VolumeError`
  instead of an abort, and :func:`worker_start_method` tells the DataLoader builder to start
  workers with 'forkserver' (clean processes) whenever a TensorStore volume exists.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ...errors import VolumeError
from ..layout import AxisLayout
from ..lazy import LazyArrayVolume

DEFAULT_CACHE_BYTES = 64 * 2**20
"""Decoded-chunk cache per open volume (TensorStore ``cache_pool``)."""

_USED_IN_PID: int | None = None  # the process that first opened a TensorStore here (or a parent)
_VOLUMES_MADE = False  # a TensorStore-backed volume was constructed in this process


def holds_tensorstore(obj: Any, depth: int = 3) -> bool:
    """True when ``obj`` is, or holds within ``depth`` levels of attributes, lists, tuples and
    dicts, a :class:`TensorStoreVolume` (e.g. a dataset's ``volumes`` / ``labels`` lists)."""
    if isinstance(obj, TensorStoreVolume):
        return True
    if depth <= 0 or isinstance(obj, (str, bytes, np.ndarray)):
        return False
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = list(vars(obj).values())
    else:
        return False
    return any(holds_tensorstore(item, depth - 1) for item in items)


def worker_start_method(obj: Any = None, preload: tuple[str, ...] = ("torch", "connectomics_data.io")):
    """A 'forkserver' multiprocessing context when ``obj`` (a dataset) holds TensorStore volumes.

    DataLoader workers that read TensorStore volumes must not be forked from a process that
    may already have used TensorStore (the main process reads volumes too: statistics,
    validation, inference). The fork server is a fresh process; it imports ``preload`` once
    (importing TensorStore starts no threads) so that each worker forks from it quickly.
    ``obj=None`` asks whether any TensorStore volume was made in this process. Returns None
    when plain ``fork`` is safe.
    """
    if not (_VOLUMES_MADE if obj is None else holds_tensorstore(obj)):
        return None
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


class _TensorStoreArray:
    """Index a (translated, transposed) TensorStore view with slices; returns numpy arrays."""

    def __init__(self, view: Any):
        self.view = view

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.view[index].read().result())


class TensorStoreVolume(LazyArrayVolume):
    """A TensorStore array presented as ``(z, y, x)`` or ``(c, z, y, x)``.

    Args:
        path: the volume's name in messages.
        spec: the TensorStore spec (JSON) to open read-only.
        axes: the stored order of the opened store, fastest axis first as both formats list
            them, e.g. ``"xyzc"`` (precomputed) or ``"xyz"`` (N5). The view is reversed, so
            TensorStore itself delivers C-order ``(c, z, y, x)`` blocks; a singleton ``c`` is
            dropped.
        stored_shape: the store's shape in that order.
        dtype: the stored dtype.
        voxel_size: ``(z, y, x)`` nm or None.
        cache_bytes: decoded-chunk cache of the open store.
        reverse: the store lists axes fastest first (precomputed, N5); False for C-order stores
            (zarr), whose ``axes`` are then given as stored, e.g. ``"zyx"``.
    """

    def __init__(
        self,
        path: str,
        spec: dict,
        axes: str,
        stored_shape: tuple[int, ...],
        dtype: np.dtype,
        voxel_size: tuple[float, float, float] | None,
        *,
        drop_channel: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        reverse: bool = True,
    ):
        global _VOLUMES_MADE
        self.reverse = bool(reverse)
        self.path = path
        self.spec = spec
        self.cache_bytes = int(cache_bytes)
        self._channel_index: int | None = None
        if "c" in axes and stored_shape[axes.index("c")] == 1:
            self._channel_index = axes.index("c")
            stored_shape = tuple(n for i, n in enumerate(stored_shape) if i != self._channel_index)
            axes = axes.replace("c", "")
        if self.reverse:
            axes, stored_shape = axes[::-1], tuple(stored_shape)[::-1]
        self.layout = AxisLayout(axes, tuple(int(n) for n in stored_shape), drop_channel)
        self._dtype = np.dtype(dtype)
        self.voxel_size = voxel_size
        _VOLUMES_MADE = True

    def _open(self) -> tuple[Any, Any]:
        global _USED_IN_PID
        pid = os.getpid()
        if _USED_IN_PID is not None and _USED_IN_PID != pid:
            raise VolumeError(
                f"{self.path}: TensorStore was used in the parent of this process before it was "
                "forked, and cannot run in a forked child; read it in processes started with "
                "'forkserver' or 'spawn' (DataLoader multiprocessing_context)"
            )
        import tensorstore as ts

        _USED_IN_PID = pid
        context = ts.Context({"cache_pool": {"total_bytes_limit": self.cache_bytes}})
        store = ts.open(self.spec, read=True, open=True, context=context).result()
        view = store.translate_to[0]  # precomputed volumes may start at a voxel offset
        if self._channel_index is not None:
            view = view[(slice(None),) * self._channel_index + (0,)]
        return _TensorStoreArray(view.T if self.reverse else view), None
