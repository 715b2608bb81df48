"""HDF5 volumes (h5py): one dataset read box by box, opened lazily in the reading process."""

from __future__ import annotations

import os
from typing import Any

import h5py

from ...errors import ConnectomicsDataError, VolumeError, VolumeNotFoundError
from ..layout import layout_for_ndim, native_dtype
from ..lazy import READ_ERRORS, LazyArrayVolume, check_exists, wrap_error
from ..scales import voxel_size_attribute

HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf")

DEFAULT_CACHE_BYTES = 16 * 2**20
"""Per-file chunk cache (h5py ``rdcc_nbytes``): big enough to hold a few compressed chunks."""


def list_datasets(group: h5py.Group) -> list[str]:
    """Paths of all datasets in ``group`` (recursively), sorted, e.g. ``['main', 'volumes/raw']``."""
    names: list[str] = []
    group.visititems(
        lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
    )
    return sorted(names)


def _open_file(path: str, cache_bytes: int) -> h5py.File:
    try:
        return h5py.File(path, "r", rdcc_nbytes=cache_bytes)
    except READ_ERRORS as err:
        raise wrap_error(path, "cannot open as HDF5", err) from err


def choose_dataset(path: str, available: list[str], dataset: str | None) -> str:
    """The dataset to read: ``dataset`` if given, else the only one; errors list the choices."""
    if dataset is not None:
        name = dataset.strip("/")
        if name not in available:
            raise VolumeNotFoundError(
                f"{path}: no dataset {dataset!r} in the file; available datasets: {available}"
            )
        return name
    if len(available) == 1:
        return available[0]
    if not available:
        raise VolumeError(f"{path}: the HDF5 file holds no datasets")
    raise VolumeError(
        f"{path}: the HDF5 file holds {len(available)} datasets {available}; name one "
        f"(dataset='{available[0]}' or the path '{path}/{available[0]}')"
    )


class Hdf5Volume(LazyArrayVolume):
    """One dataset of an HDF5 file: ``(z, y, x)`` or ``(c, z, y, x)``, dtype as stored.

    Reads request only the box (h5py hyperslab), so memory is that of the box. The file is
    opened read-only on the first read in each process; pickling carries only the path.

    Args:
        path: the ``.h5`` file.
        dataset: dataset path inside the file; ``None`` means the only dataset.
        allow_2d: accept a 2D ``(y, x)`` dataset as a ``(1, y, x)`` volume.
        drop_channel: average the channel axis of a 4D dataset to gray ``(z, y, x)``.
            The voxel size is the dataset's ``resolution`` attribute, ``(z, y, x)`` nm (CREMI,
            gunpowder), when present.
        cache_bytes: h5py chunk cache size per open file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dataset: str | None = None,
        *,
        allow_2d: bool = False,
        drop_channel: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        self.path = check_exists(path)
        self.cache_bytes = int(cache_bytes)
        with _open_file(self.path, self.cache_bytes) as f:
            try:
                self.dataset = choose_dataset(self.path, list_datasets(f), dataset)
                ds = f[self.dataset]
                shape, dtype = tuple(ds.shape), ds.dtype
                resolution = ds.attrs.get("resolution")
            except ConnectomicsDataError:
                raise
            except READ_ERRORS as err:
                raise wrap_error(self.path, "cannot read the HDF5 metadata", err) from err
        where = f"{self.path}/{self.dataset}"
        self.layout = layout_for_ndim(shape, where, allow_2d, drop_channel)
        self._dtype = native_dtype(dtype, where)
        if resolution is not None:
            self.voxel_size = voxel_size_attribute(resolution)

    def _open(self) -> tuple[Any, Any]:
        f = _open_file(self.path, self.cache_bytes)
        return f[self.dataset], f

    def __repr__(self) -> str:
        return (
            f"Hdf5Volume(path={self.path!r}, dataset={self.dataset!r}, "
            f"shape={list(self.shape)}, dtype={self.dtype.name})"
        )
