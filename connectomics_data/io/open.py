"""``open_volume``: one entry point that picks the source class from the path.

Dispatch:

========================================  ============================================
``numpy.ndarray``                          :class:`ArrayVolume` (no copy)
list/tuple of paths, or a string with ``*``  :class:`ImageStackVolume` (one 2D file per z)
``.h5`` ``.hdf5`` ``.hdf``                 :class:`Hdf5Volume` (``file.h5/dataset`` also works)
``.tif`` ``.tiff``                         :class:`TiffVolume` (a stack; 2D with ``allow_2d``)
``.png`` ``.jpg`` ``.jpeg``                :class:`ImageVolume` (one 2D image; needs ``allow_2d``)
``.npy``                                   :class:`NpyVolume` (memory-mapped)
``.zarr`` or a zarr directory              :class:`ZarrVolume` (``store.zarr/array`` works)
an OME-Zarr group (``multiscales``)        :func:`open_ome_zarr`: a level as :class:`ZarrVolume`
``.n5`` or an N5 directory                 :class:`N5Volume` (``c.n5/path/to/dataset`` works)
a directory with ``info``, ``precomputed://file:///dir``  :class:`PrecomputedVolume`
``.json``                                  ``io.tiles.volume.open_tiled_volume`` (tile mosaics)
========================================  ============================================

``scale`` picks a level of a pyramid (OME-Zarr, precomputed, N5 ``s0, s1, ...``): a level
index (0 = finest) or a voxel size ``(z, y, x)`` in nm. For single-level formats it must be
None, 0 or the volume's own voxel size. Every volume has ``voxel_size`` (or None).
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from ..errors import VolumeError, VolumeNotFoundError
from .base import ArrayVolume, Volume
from .formats.hdf5 import HDF5_EXTENSIONS, Hdf5Volume
from .formats.images import IMAGE_EXTENSIONS, ImageStackVolume, ImageVolume
from .formats.n5 import N5_EXTENSIONS, N5Volume, is_n5
from .formats.npy import NPY_EXTENSIONS, NpyVolume
from .formats.ome_zarr import is_ome_zarr, open_ome_zarr
from .formats.precomputed import PrecomputedVolume, is_precomputed, strip_precomputed_url
from .formats.tiff import TIFF_EXTENSIONS, TiffVolume
from .formats.zarr_array import ZARR_EXTENSIONS, ZarrVolume, is_zarr_store
from .layout import average_channels, raise_2d
from .scales import check_scale, check_single_level

TILE_EXTENSIONS = (".json",)
SUPPORTED_EXTENSIONS = (
    HDF5_EXTENSIONS
    + TIFF_EXTENSIONS
    + IMAGE_EXTENSIONS
    + NPY_EXTENSIONS
    + ZARR_EXTENSIONS
    + N5_EXTENSIONS
    + TILE_EXTENSIONS
)


def is_glob(path: str) -> bool:
    """True when ``path`` is a glob pattern (contains ``*`` or ``?``)."""
    return "*" in path or "?" in path


def extension(path: str) -> str:
    """The lower-case extension of ``path`` (``'.h5'``), ignoring a trailing slash."""
    return os.path.splitext(path.rstrip("/\\"))[1].lower()


def split_container_path(path: str) -> tuple[str, str] | None:
    """Split ``'a/b.h5/volumes/raw'`` into ``('a/b.h5', 'volumes/raw')``.

    The container is the longest existing prefix that is an HDF5 file or a zarr store; ``None``
    when there is none (or the path itself exists).
    """
    if os.path.exists(path):
        return None
    head, tail = path.rstrip("/"), ""
    while head and head not in ("/", "."):
        head, part = os.path.split(head)
        tail = part if not tail else f"{part}/{tail}"
        if not head:
            break
        if os.path.isfile(head) and extension(head) in HDF5_EXTENSIONS:
            return head, tail
        if is_zarr_store(head) or is_n5(head):
            return head, tail
        if os.path.exists(head):
            return None
    return None


def array_volume(array: np.ndarray, allow_2d: bool = False, drop_channel: bool = False) -> Volume:
    """An in-memory array ``(z, y, x)`` / ``(c, z, y, x)`` (``(y, x)`` with ``allow_2d``)."""
    if array.ndim == 2:
        if not allow_2d:
            raise_2d("<memory>", array.shape)
        array = array[None]
    if array.ndim == 4 and drop_channel:
        array = average_channels(array, axis=0)
    if array.ndim not in (3, 4):
        raise VolumeError(
            f"<memory>: expected a 3D (z, y, x) or 4D (c, z, y, x) array, got shape {list(array.shape)}"
        )
    return ArrayVolume(array)


def _no_dataset(path: str, dataset: str | None) -> None:
    if dataset is not None:
        raise VolumeError(f"{path}: this format holds one array; dataset={dataset!r} cannot apply")


def _unsupported(path: str) -> VolumeError:
    return VolumeError(
        f"{path}: unsupported volume format {extension(path) or '(no extension)'!r}; supported: "
        f"{list(SUPPORTED_EXTENSIONS)}, a zarr directory, a glob of 2D slices or a list of them"
    )


def open_volume(
    path: str | os.PathLike | np.ndarray | list | tuple,
    dataset: str | None = None,
    allow_2d: bool = False,
    drop_channel: bool = False,
    *,
    scale: int | tuple[float, float, float] | list[float] | None = None,
    **kwargs: Any,
) -> Volume:
    """Open a volume lazily (only metadata is read here); see the module doc for the dispatch.

    Args:
        path: a file, directory, glob pattern, list of 2D slice files or numpy array.
        dataset: dataset (HDF5) or array (zarr group) inside the file.
        allow_2d: read a single 2D image as a ``(1, y, x)`` volume (PyTC ``LOAD_2D``); an RGB
            image becomes ``(3, 1, y, x)``.
        drop_channel: average channels (RGB or 4D ``c``) to gray.
        scale: pyramid level: index (0 = finest) or voxel size ``(z, y, x)`` nm.
        **kwargs: passed to the source class (e.g. ``strategy`` for TIFF, ``threads`` for slice
            stacks, ``cache_bytes`` for HDF5) or to ``open_tiled_volume`` for ``.json``.

    Returns:
        A :class:`Volume` of shape ``(z, y, x)`` or ``(c, z, y, x)`` keeping the stored dtype.

    Raises:
        VolumeNotFoundError: the path, a slice, or the dataset inside the file is missing.
        VolumeError: corrupt file, wrong shape, unsupported extension, ambiguous dataset, a
            scale the volume does not have (the message lists the voxel sizes it has).
    """
    where = path if isinstance(path, (str, os.PathLike)) else "<memory>"
    check_scale(scale, str(where))
    if isinstance(path, (str, os.PathLike)) and _is_multiscale_path(os.fspath(path), dataset):
        return _open_multiscale(os.fspath(path), dataset, allow_2d, drop_channel, scale, kwargs)
    volume = _open_single(path, dataset, allow_2d, drop_channel, kwargs)
    check_single_level(volume.path, volume.voxel_size, scale)
    return volume


def _is_multiscale_path(p: str, dataset: str | None) -> bool:
    if strip_precomputed_url(p) is not None or is_precomputed(p):
        return True
    if not os.path.exists(p):
        split = split_container_path(p)
        if split is None:
            return False
        p = split[0]
    return is_n5(p) or is_ome_zarr(p) or _ome_level(p) is not None


def _ome_level(p: str) -> tuple[str, str] | None:
    """``(group, level path)`` when ``p`` is a level array of an OME-Zarr group."""
    parent, name = os.path.split(p.rstrip("/"))
    if parent and is_zarr_store(p) and is_ome_zarr(parent):
        return parent, name
    return None


def _open_multiscale(p, dataset, allow_2d, drop_channel, scale, kwargs) -> Volume:
    if strip_precomputed_url(p) is not None or is_precomputed(p):
        return PrecomputedVolume(p, dataset, scale=scale, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
    if not os.path.exists(p):
        split = split_container_path(p)
        if dataset is not None:
            raise VolumeError(f"{p}: names a path inside {split[0]} and also dataset={dataset!r}")
        p, dataset = split
    if is_n5(p):
        return N5Volume(p, dataset, scale=scale, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
    level = _ome_level(p) if not is_ome_zarr(p) else None
    if level is not None:
        if dataset is not None:
            raise VolumeError(f"{p}: is a level of the OME-Zarr image {level[0]}; it holds no dataset {dataset!r}")
        p, dataset = level
    return open_ome_zarr(p, dataset, scale=scale, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)


def _open_single(path, dataset, allow_2d, drop_channel, kwargs) -> Volume:
    """Single-level formats (everything but OME-Zarr, N5 and precomputed)."""
    if isinstance(path, Volume):
        return path
    if isinstance(path, np.ndarray):
        return array_volume(path, allow_2d, drop_channel)
    if isinstance(path, (list, tuple)):
        return ImageStackVolume(path, drop_channel=drop_channel, **kwargs)
    p = os.fspath(path)
    if is_glob(p):
        files = sorted(glob.glob(p, recursive=True))
        if not files:
            raise VolumeNotFoundError(f"no files match the pattern {p!r}")
        return ImageStackVolume(files, drop_channel=drop_channel, name=p, **kwargs)
    ext = extension(p)
    if ext in TILE_EXTENSIONS:
        from .tiles.volume import open_tiled_volume

        return open_tiled_volume(p, **kwargs)
    if not os.path.exists(p):
        split = split_container_path(p)
        if split is None:
            if ext and ext not in SUPPORTED_EXTENSIONS:
                raise _unsupported(p)
            raise VolumeNotFoundError(f"volume file not found: {p}")
        if dataset is not None:
            raise VolumeError(f"{p}: names a path inside {split[0]} and also dataset={dataset!r}")
        p, dataset = split
        ext = extension(p)
    if os.path.isdir(p):
        if is_zarr_store(p):
            return ZarrVolume(p, dataset, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
        raise VolumeError(
            f"{p}: is a directory but not a zarr store (no zarr.json, .zarray or .zgroup), an N5 "
            f"container (attributes.json) or a Neuroglancer precomputed volume (info); for a "
            f"stack of 2D slices pass a glob such as '{os.path.join(p, '*.png')}'"
        )
    if ext in HDF5_EXTENSIONS:
        return Hdf5Volume(p, dataset, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
    if ext in TIFF_EXTENSIONS:
        _no_dataset(p, dataset)
        return TiffVolume(p, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
    if ext in IMAGE_EXTENSIONS:
        _no_dataset(p, dataset)
        return ImageVolume(p, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
    if ext in NPY_EXTENSIONS:
        _no_dataset(p, dataset)
        return NpyVolume(p, allow_2d=allow_2d, drop_channel=drop_channel, **kwargs)
    raise _unsupported(p)
