"""A volume stored as 2D image tiles described by a PyTC tile JSON (see :mod:`.spec`).

``open_tiled_volume("tile_dataset.json").read(box)`` decodes only the tiles the box touches,
in parallel threads (PNG/TIFF decoding releases the GIL), through a byte-bounded LRU cache of
decoded tiles so neighbouring boxes do not decode the same tile twice. The result has shape
``box.shape`` (z, y, x) and the JSON's dtype; the part of the box outside the volume is padded
by :meth:`Volume.read` exactly like ``np.pad``.

Fixes over PyTC's ``tile2volume``: 16-bit tiles keep their values (no wrap to uint8); a missing
tile is an error unless ``fill_value`` is given (never a silent 128); tiles of the wrong size or
dtype are errors naming the file.

Channel handling of a decoded ``(y, x, c)`` tile:
    * image volumes keep channel 0 (PyTC); palette PNGs are converted to RGB first;
    * ``label_vast=True``: RGB(A) uint8 tiles become 24-bit ids ``R*65536 + G*256 + B``
      (PyTC ``vast2Seg``); single-channel tiles are used as they are;
    * other label volumes (``is_label=True``) must have single-channel tiles (palette PNGs give
      their indices); an RGB tile is an error that suggests ``label_vast=True``.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ...errors import TileJSONError, VolumeError
from ...geometry import Box
from ..base import Volume
from .cache import TileCache
from .decode import decode_tile
from .spec import TileSpec, find_missing, load_tile_json

DEFAULT_CACHE_BYTES = 512 * 2**20
"""Default decoded-tile cache size per volume and per process (512 MiB)."""

API_MISSING_HINT = "pass fill_value=... to fill them, check_files=False to defer"
"""How a missing-tile message tells a Python caller to proceed."""

CONFIG_MISSING_HINT = "set DATASET.TILE_FILL_VALUE (e.g. 0) to fill them"
"""The same for a volume opened from a config (training, validation, inference)."""

_INIT_LOCK = threading.Lock()


def _reset_init_lock() -> None:  # a lock held by another thread at fork() stays held in the child
    global _INIT_LOCK
    _INIT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_init_lock)


class _MissingTile(Exception):
    """Internal: a tile file does not exist and ``fill_value`` is set."""


def default_threads() -> int:
    """Decode threads when none are given: ``min(8, cpu_count)``."""
    return max(1, min(8, os.cpu_count() or 1))


class TiledVolume(Volume):
    """A ``(depth, height, width)`` volume read tile by tile from a PyTC tile JSON.

    Thread-safe: several threads may call :meth:`read` at once. Picklable: the cache and the
    thread pool are dropped and rebuilt lazily in the receiving process (also after ``fork``).

    Args:
        spec: the validated JSON (:func:`~.tile_json.load_tile_json`).
        label_vast: decode RGB tiles as VAST 24-bit ids.
        is_label: nearest-neighbour zoom (``tile_ratio != 1``) and single-channel tiles; default
            ``label_vast or dtype in (uint32, uint64)``.
        cache_bytes: decoded-tile cache limit in bytes per process (0 disables caching).
        fill_value: value for missing tile files; ``None`` (default) makes them an error.
        threads: decode threads per read (default :func:`default_threads`); 1 decodes inline.
        check_files: list every tile file up front and raise if any is missing (skipped when
            ``fill_value`` is given).
        missing_hint: what a missing-tile message tells the user to do (default
            :data:`API_MISSING_HINT`; volumes opened from a config name the config key).
    """

    def __init__(
        self,
        spec: TileSpec,
        *,
        label_vast: bool = False,
        is_label: bool | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        fill_value: float | None = None,
        threads: int | None = None,
        check_files: bool = True,
        missing_hint: str | None = None,
    ):
        self.spec = spec
        self.missing_hint = missing_hint or API_MISSING_HINT
        self.path = spec.json_path
        self.label_vast = bool(label_vast)
        if is_label is None:
            is_label = self.label_vast or spec.dtype in (np.uint32, np.uint64)
        self.is_label = bool(is_label)
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self.cache_bytes = int(cache_bytes)
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.fill_value = None
        if fill_value is not None:
            cast = np.array(fill_value).astype(spec.dtype)
            if cast != fill_value:
                raise ValueError(
                    f"{self.path}: fill_value {fill_value!r} is not representable in {spec.dtype.name}"
                )
            self.fill_value = cast[()]
        self._cache: TileCache | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._cpu_lock = threading.Lock()
        self._pool_cpu_s = 0.0
        self._pid: int | None = None
        if check_files and self.fill_value is None:
            self.check_files()

    # ------------------------------------------------------------------ Volume interface
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.shape

    @property
    def dtype(self) -> np.dtype:
        return self.spec.dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        out = np.empty(box.shape, dtype=self.dtype)
        if box.is_empty:
            return out
        (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
        tasks = [
            (z, r, c) for z in range(z0, z1) for r, c in self.spec.tiles_in_box(z, y0, y1, x0, x1)
        ]

        def copy_tile(task: tuple[int, int, int]) -> None:
            z, r, c = task
            ty0, ty1, tx0, tx1 = self.spec.tile_extent(z, r, c)
            ay0, ay1, ax0, ax1 = max(y0, ty0), min(y1, ty1), max(x0, tx0), min(x1, tx1)
            dst = out[z - z0, ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
            try:
                tile = self.tile(z, r, c)
            except _MissingTile:
                dst[...] = self.fill_value
                return
            dst[...] = tile[ay0 - ty0 : ay1 - ty0, ax0 - tx0 : ax1 - tx0]

        def copy_tile_timed(task: tuple[int, int, int]) -> None:
            start = time.thread_time()
            try:
                copy_tile(task)
            finally:
                spent = time.thread_time() - start
                with self._cpu_lock:
                    self._pool_cpu_s += spent

        executor = self._ensure_resources()[1]
        if executor is None or len(tasks) <= 1:
            for t in tasks:
                copy_tile(t)
        else:
            for _ in executor.map(copy_tile_timed, tasks):
                pass
        return out

    @property
    def pool_cpu_seconds(self) -> float:
        """CPU seconds the decode threads of this process spent for this volume (tiles decoded
        inline, with ``threads=1`` or single-tile reads, count in the calling thread instead)."""
        return self._pool_cpu_s

    def reader_copy(self, threads: int) -> TiledVolume:
        """The same volume with its own cache (same limit), ``threads`` decode threads and CPU
        counter; its decode threads start in the thread that first reads from it (and inherit
        that thread's scheduling priority)."""
        twin = copy.copy(self)
        twin.threads = max(1, int(threads))
        twin._cache, twin._executor, twin._pid = None, None, None
        twin._cpu_lock, twin._pool_cpu_s = threading.Lock(), 0.0
        return twin

    # ------------------------------------------------------------------ tiles
    def tile(self, z: int, row: int, col: int) -> np.ndarray:
        """The decoded, checked tile ``(row, col)`` of slice ``z`` (read-only, cached).

        Shape: the tile's extent inside the volume (:meth:`TileSpec.tile_extent`). Its dtype is
        the decoded one (safely castable to :attr:`dtype`).
        """
        cache = self._ensure_resources()[0]
        return cache.get_or_load((z, row, col), lambda: self._load_tile(z, row, col))

    def _where(self, z: int, row: int, col: int) -> str:
        if self.spec.is_pattern[z]:
            return f"slice z={z}, grid row {row}, column {col} of tile JSON {self.path}"
        return f"slice z={z} of tile JSON {self.path}"

    def _load_tile(self, z: int, row: int, col: int) -> np.ndarray:
        path = self.spec.tile_path(z, row, col)
        try:
            arr = decode_tile(path, palette_indices=self.is_label and not self.label_vast)
        except FileNotFoundError:
            if self.fill_value is not None:
                raise _MissingTile(path) from None
            raise TileJSONError(
                f"tile file {path} ({self._where(z, row, col)}) is missing; {self.missing_hint}"
            ) from None
        except (OSError, ValueError, SyntaxError) as err:
            raise VolumeError(f"cannot decode tile file {path} ({self._where(z, row, col)}): {err}") from None
        arr = self._to_single_channel(arr, path, z, row, col)
        self._check_dtype(arr, path, z, row, col)
        if self.spec.tile_ratio != 1:
            return self._zoom_to_extent(arr, path, z, row, col)
        return self._crop_to_extent(arr, path, z, row, col)

    def _to_single_channel(self, arr: np.ndarray, path: str, z: int, row: int, col: int) -> np.ndarray:
        if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[2] > 4:  # (1, y, x) TIFF page
            arr = arr[0]
        if arr.ndim == 2:
            return arr
        if arr.ndim != 3 or arr.shape[2] > 4:
            raise VolumeError(
                f"tile file {path} ({self._where(z, row, col)}) has shape {list(arr.shape)}; "
                "expected a 2D image (y, x) or (y, x, channels <= 4)"
            )
        nch = arr.shape[2]
        if nch == 1:
            return arr[:, :, 0]
        if self.label_vast:
            if nch < 3 or arr.dtype != np.uint8:
                raise TileJSONError(
                    f"tile file {path} ({self._where(z, row, col)}) has {nch} channels of "
                    f"{arr.dtype.name}; VAST labels need uint8 RGB(A) tiles"
                )
            rgb = arr[:, :, :3].astype(np.uint32)
            return (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
        if self.is_label:
            raise TileJSONError(
                f"tile file {path} ({self._where(z, row, col)}) has {nch} channels but the volume "
                "holds labels; pass label_vast=True for VAST RGB-encoded labels"
            )
        return np.ascontiguousarray(arr[:, :, 0])

    def _check_dtype(self, arr: np.ndarray, path: str, z: int, row: int, col: int) -> None:
        dt = self.dtype
        if np.can_cast(arr.dtype, dt, "safe"):
            return
        if self.label_vast and arr.dtype == np.uint32:
            top = int(arr.max(initial=0))
            if top <= np.iinfo(dt).max:
                return
            raise TileJSONError(
                f"tile file {path} ({self._where(z, row, col)}) holds VAST id {top}, which does not "
                f"fit the JSON dtype {dt.name}; use 'uint32' or 'uint64'"
            )
        raise TileJSONError(
            f"tile file {path} ({self._where(z, row, col)}) decodes to {arr.dtype.name}, which "
            f"cannot be represented in the JSON dtype {dt.name}"
        )

    def _expected(self, z: int, row: int, col: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(extent shape, full tile shape): the last row/column may come either way."""
        ty0, ty1, tx0, tx1 = self.spec.tile_extent(z, row, col)
        full = self.spec.tile_shape if self.spec.is_pattern[z] else (ty1 - ty0, tx1 - tx0)
        return (ty1 - ty0, tx1 - tx0), full

    def _shape_error(self, path: str, z: int, row: int, col: int, got: Any, note: str = "") -> TileJSONError:
        (eh, ew), (fh, fw) = self._expected(z, row, col)
        alt = f" or ({fh}, {fw}) padded" if (fh, fw) != (eh, ew) else ""
        return TileJSONError(
            f"tile file {path} ({self._where(z, row, col)}) has shape {tuple(got)}{note}, "
            f"expected ({eh}, {ew}){alt}"
        )

    def _crop_to_extent(self, arr: np.ndarray, path: str, z: int, row: int, col: int) -> np.ndarray:
        (eh, ew), (fh, fw) = self._expected(z, row, col)
        h, w = arr.shape
        if h not in (eh, fh) or w not in (ew, fw):
            raise self._shape_error(path, z, row, col, arr.shape)
        if (h, w) != (eh, ew):
            arr = np.ascontiguousarray(arr[:eh, :ew])
        return arr

    def _zoom_to_extent(self, arr: np.ndarray, path: str, z: int, row: int, col: int) -> np.ndarray:
        from scipy.ndimage import zoom

        ratio = self.spec.tile_ratio
        src_shape = arr.shape
        if arr.dtype == np.bool_:
            arr = arr.view(np.uint8)
        arr = zoom(arr, ratio, order=0 if self.is_label else 1, grid_mode=False)
        (eh, ew), (fh, fw) = self._expected(z, row, col)
        tol = max(1, math.ceil(ratio))
        h, w = arr.shape
        if not (abs(h - eh) <= tol or abs(h - fh) <= tol) or not (abs(w - ew) <= tol or abs(w - fw) <= tol):
            raise self._shape_error(
                path, z, row, col, src_shape, note=f" (zoomed by tile_ratio {ratio:g} to {arr.shape})"
            )
        arr = arr[:eh, :ew]
        ph, pw = eh - arr.shape[0], ew - arr.shape[1]
        if ph or pw:
            arr = np.pad(arr, ((0, ph), (0, pw)), mode="edge")
        return np.ascontiguousarray(arr)

    # ------------------------------------------------------------------ resources
    def _ensure_resources(self) -> tuple[TileCache, ThreadPoolExecutor | None]:
        """Cache and thread pool of this process, built on first use (and after fork/unpickle)."""
        pid = os.getpid()
        if self._pid != pid:
            with _INIT_LOCK:
                if self._pid != pid:
                    self._cpu_lock = threading.Lock()  # may have been held at fork()
                    self._cache = TileCache(self.cache_bytes)
                    self._executor = (
                        ThreadPoolExecutor(self.threads, thread_name_prefix="tile-decode")
                        if self.threads > 1
                        else None
                    )
                    self._pid = pid
        assert self._cache is not None
        return self._cache, self._executor

    def cache_info(self) -> dict[str, Any]:
        """Cache statistics of this process: hits, misses (= tiles decoded), entries, bytes."""
        return self._ensure_resources()[0].info()

    def clear_cache(self) -> None:
        """Drop the decoded tiles held in this process."""
        self._ensure_resources()[0].clear()

    def check_files(self) -> None:
        """Raise :class:`TileJSONError` listing the first 5 missing tile files and the count."""
        paths = list(self.spec.all_tile_paths())
        missing = find_missing(paths)
        if missing:
            shown = "\n  ".join(missing[:5])
            more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise TileJSONError(
                f"tile JSON {self.path}: {len(missing)} of {len(paths)} tile files are missing "
                f"({self.missing_hint}):\n  {shown}{more}"
            )

    def close(self) -> None:
        """Stop the decode threads of this process and drop the cache (reopens lazily)."""
        if self._pid == os.getpid() and self._executor is not None:
            self._executor.shutdown(wait=True)
        self._executor = None
        self._cache = None
        self._pid = None

    def __enter__(self) -> TiledVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None and getattr(self, "_pid", None) == os.getpid():
            executor.shutdown(wait=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_executor"] = None
        state["_pid"] = None
        state["_cpu_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cpu_lock = threading.Lock()


def open_tiled_volume(
    path: str | os.PathLike,
    label_vast: bool = False,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    fill_value: float | None = None,
    threads: int | None = None,
    check_files: bool = True,
    is_label: bool | None = None,
    missing_hint: str | None = None,
) -> TiledVolume:
    """Open the tiled volume a PyTC tile JSON describes; see :class:`TiledVolume` for the args.

    Relative tile paths are resolved against the JSON's directory.

    Raises:
        VolumeNotFoundError: the JSON file does not exist.
        TileJSONError: malformed or invalid JSON, or (with ``check_files``) missing tile files.
    """
    spec = load_tile_json(path)
    return TiledVolume(
        spec,
        label_vast=label_vast,
        is_label=is_label,
        cache_bytes=cache_bytes,
        fill_value=fill_value,
        threads=threads,
        check_files=check_files,
        missing_hint=missing_hint,
    )
