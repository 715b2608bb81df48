"""Zarr v2 and v3 arrays (zarr-python 3), opened read-only in the reading process."""

from __future__ import annotations

import os
from typing import Any

import zarr

from ...errors import ConnectomicsDataError, VolumeError, VolumeNotFoundError
from ..layout import AxisLayout, layout_for_ndim, native_dtype, raise_2d
from ..lazy import READ_ERRORS, LazyArrayVolume, check_exists, wrap_error
from ..scales import voxel_size_attribute

ZARR_EXTENSIONS = (".zarr",)
ZARR_METADATA_FILES = ("zarr.json", ".zarray", ".zgroup")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding zarr v2 or v3 metadata."""
    p = os.fspath(path)
    return os.path.isdir(p) and any(os.path.isfile(os.path.join(p, m)) for m in ZARR_METADATA_FILES)


def list_arrays(group: zarr.Group) -> list[str]:
    """Paths of all arrays in ``group`` (recursively), sorted."""
    return sorted(
        name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)
    )


def _open_node(path: str) -> zarr.Array | zarr.Group:
    try:
        return zarr.open(store=path, mode="r")
    except READ_ERRORS as err:
        raise wrap_error(path, "cannot open as zarr", err) from err


def _resolve_array(path: str, dataset: str | None) -> tuple[zarr.Array, str]:
    """Open the array at ``path`` (or ``dataset`` inside the group at ``path``)."""
    node = _open_node(path)
    if isinstance(node, zarr.Array):
        if dataset not in (None, ""):
            raise VolumeError(f"{path}: is a zarr array, not a group; it has no array {dataset!r}")
        return node, path
    try:
        available = list_arrays(node)
    except READ_ERRORS as err:
        raise wrap_error(path, "cannot list the zarr group", err) from err
    if dataset is None:
        if len(available) == 1:
            dataset = available[0]
        elif not available:
            raise VolumeError(f"{path}: the zarr group holds no arrays")
        else:
            raise VolumeError(
                f"{path}: the zarr group holds {len(available)} arrays {available}; name one "
                f"(dataset='{available[0]}' or the path '{path}/{available[0]}')"
            )
    name = dataset.strip("/")
    if name not in available:
        raise VolumeNotFoundError(
            f"{path}: no array {dataset!r} in the zarr group; available arrays: {available}"
        )
    array_path = os.path.join(path, name)
    return node[name], array_path


class ZarrVolume(LazyArrayVolume):
    """A zarr array ``(z, y, x)`` or ``(c, z, y, x)`` (v2 or v3 format), dtype as stored.

    Reads index only the chunks the box touches. Pickling carries only the path.

    Args:
        path: an array directory (``store.zarr`` or ``store.zarr/raw``) or a group directory.
        dataset: array path inside a group; ``None`` means the only array (or ``path`` itself).
        allow_2d: accept a 2D ``(y, x)`` array as a ``(1, y, x)`` volume.
        drop_channel: average the channel axis of a 4D array to gray ``(z, y, x)``.
        axes: the stored axis order as letters from ``czyx`` (e.g. ``"zcyx"``, from OME-Zarr
            metadata); ``None`` means channel-first ``(y, x)``, ``(z, y, x)``, ``(c, z, y, x)``.
        voxel_size: ``(z, y, x)`` nm; ``None`` reads the array's ``resolution`` attribute
            (``(z, y, x)``, the gunpowder / funlib convention) when present.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dataset: str | None = None,
        *,
        allow_2d: bool = False,
        drop_channel: bool = False,
        axes: str | None = None,
        voxel_size: tuple[float, float, float] | None = None,
    ):
        self.path = check_exists(path)
        try:
            arr, self.array_path = _resolve_array(self.path, dataset)
            shape, dtype = tuple(arr.shape), arr.dtype
            resolution = arr.attrs.get("resolution") if voxel_size is None else None
        except ConnectomicsDataError:
            raise
        except READ_ERRORS as err:
            raise wrap_error(self.path, "cannot read the zarr metadata", err) from err
        if axes is None:
            self.layout = layout_for_ndim(shape, self.array_path, allow_2d, drop_channel)
        else:
            if "z" not in axes and not allow_2d:
                raise_2d(self.array_path, shape)
            self.layout = AxisLayout(axes, shape, drop_channel)
        if voxel_size is None and resolution is not None:
            voxel_size = voxel_size_attribute(resolution)
        self.voxel_size = voxel_size
        self._dtype = native_dtype(dtype, self.array_path)

    def _open(self) -> tuple[Any, Any]:
        return zarr.open_array(store=self.array_path, mode="r"), None
