"""N5 datasets (``container.n5/path/to/dataset``), read through TensorStore.

N5 lists ``dimensions`` fastest first, ``(x, y, z)`` (``(x, y, z, c)`` with channels); the volume
is ``(z, y, x)`` / ``(c, z, y, x)``, as zarr v2's N5 store and gunpowder present it. The voxel
size comes from the dataset's ``resolution`` attribute (``(x, y, z)``, nm) or from
``pixelResolution`` (``{"dimensions": [x, y, z], "unit": "nm"}``), reversed. A group of
``s0, s1, ...`` datasets (the N5 multiscale convention) is a pyramid: ``scale`` picks the level;
a level without its own resolution takes the group's times its ``downsamplingFactors``.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ...errors import VolumeError, VolumeNotFoundError
from ..layout import native_dtype, raise_2d
from ..scales import as_voxel_size, choose_level, unit_factor
from .tensorstore_array import DEFAULT_CACHE_BYTES, TensorStoreVolume

N5_EXTENSIONS = (".n5",)
COMPRESSIONS = ("raw", "gzip", "bzip2", "xz", "blosc", "zstd")
DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
_LEVEL = re.compile(r"^s(\d+)$")


def read_attributes(path: str) -> dict:
    """``attributes.json`` of an N5 group or dataset (``{}`` when absent)."""
    attr_path = os.path.join(path, "attributes.json")
    if not os.path.isfile(attr_path):
        return {}
    try:
        with open(attr_path, encoding="utf-8") as f:
            attrs = json.load(f)
    except (OSError, ValueError) as err:
        raise VolumeError(f"{attr_path}: cannot read the N5 attributes: {err}") from err
    if not isinstance(attrs, dict):
        raise VolumeError(f"{attr_path}: expected a JSON object")
    return attrs


def is_n5_dataset(path: str) -> bool:
    return os.path.isdir(path) and "dimensions" in read_attributes(path)


def is_n5(path: str) -> bool:
    """True for an N5 container, group or dataset directory (``attributes.json``, or ``.n5``)."""
    p = path.rstrip("/")
    if not os.path.isdir(p):
        return False
    if os.path.splitext(p)[1].lower() in N5_EXTENSIONS:
        return True
    attrs = read_attributes(p) if os.path.isfile(os.path.join(p, "attributes.json")) else None
    return attrs is not None and ("n5" in attrs or "dimensions" in attrs)


def _resolution(attrs: dict, where: str) -> tuple[float, float, float] | None:
    """(z, y, x) nm from ``resolution`` or ``pixelResolution`` (both listed x, y, z)."""
    factor = 1.0
    value = attrs.get("resolution")
    if value is None:
        pixel = attrs.get("pixelResolution")
        if isinstance(pixel, dict):
            value = pixel.get("dimensions")
            factor = unit_factor(pixel.get("unit"), where)
        else:
            value = pixel
    if value is None:
        return None
    if not isinstance(value, list) or len(value) < 3:
        raise VolumeError(f"{where}: resolution must list (x, y, z), got {value!r}")
    x, y, z = as_voxel_size(value[:3], where)
    return (z * factor, y * factor, x * factor)


def _list_datasets(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        if is_n5_dataset(dirpath):
            out.append(os.path.relpath(dirpath, root))
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.isdigit())
    return sorted(out)


def _levels(group: str) -> list[str]:
    names = [d for d in os.listdir(group) if _LEVEL.match(d) and is_n5_dataset(os.path.join(group, d))]
    return sorted(names, key=lambda n: int(n[1:]))


class N5Volume(TensorStoreVolume):
    """One N5 dataset as ``(z, y, x)`` / ``(c, z, y, x)``, dtype as stored.

    Args:
        path: the dataset directory, the container (then ``dataset`` names the dataset), or a
            multiscale group holding ``s0, s1, ...``.
        dataset: dataset or group path inside the container.
        scale: level index or voxel size ``(z, y, x)`` nm (multiscale groups).
        allow_2d: accept a 2D ``(x, y)`` dataset as a ``(1, y, x)`` volume.
        drop_channel: average the channel axis to gray.
        cache_bytes: TensorStore decoded-chunk cache.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dataset: str | None = None,
        *,
        scale: object = None,
        allow_2d: bool = False,
        drop_channel: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        root = os.fspath(path).rstrip("/")
        target = os.path.join(root, dataset.strip("/")) if dataset else root
        if not os.path.isdir(target):
            raise VolumeNotFoundError(
                f"{root}: no N5 dataset {dataset!r}; available datasets: {_list_datasets(root)}"
                if dataset
                else f"N5 volume not found: {root}"
            )
        attrs = read_attributes(target)
        group_size = None
        if "dimensions" not in attrs:
            levels = _levels(target)
            if not levels:
                available = _list_datasets(target)
                if len(available) == 1 and scale is None:
                    target = os.path.join(target, available[0])
                    attrs = read_attributes(target)
                else:
                    raise VolumeError(
                        f"{target}: is an N5 group, not a dataset; available datasets: {available} "
                        "(name one as dataset= or in the path)"
                    )
            else:
                group_size = _resolution(attrs, f"{target}/attributes.json")
                level_attrs = [read_attributes(os.path.join(target, n)) for n in levels]
                sizes = []
                for name, la in zip(levels, level_attrs):
                    where = f"{target}/{name}/attributes.json"
                    size = _resolution(la, where)
                    factors = la.get("downsamplingFactors")
                    if size is None and group_size is not None and isinstance(factors, list) and len(factors) >= 3:
                        size = tuple(float(s) * float(f) for s, f in zip(group_size, factors[2::-1]))
                    if size is None and group_size is not None and name == "s0":
                        size = group_size
                    sizes.append(size)
                level = choose_level(target, sizes, scale)
                target = os.path.join(target, levels[level])
                attrs, group_size = level_attrs[level], sizes[level]
                scale = None
        where = f"{target}/attributes.json"
        for key in ("dimensions", "dataType", "blockSize"):
            if key not in attrs:
                raise VolumeError(f"{where}: missing {key!r}; not an N5 dataset")
        dims = attrs["dimensions"]
        if not (isinstance(dims, list) and all(isinstance(n, int) and n >= 0 for n in dims)):
            raise VolumeError(f"{where}: dimensions must be non-negative integers, got {dims!r}")
        if attrs["dataType"] not in DATA_TYPES:
            raise VolumeError(f"{where}: dataType {attrs['dataType']!r} is not one of {list(DATA_TYPES)}")
        compression = attrs.get("compression", {"type": attrs.get("compressionType", "raw")})
        ctype = compression.get("type") if isinstance(compression, dict) else None
        if ctype not in COMPRESSIONS:
            raise VolumeError(f"{where}: unknown compression {compression!r}; expected one of {list(COMPRESSIONS)}")
        if len(dims) == 2:
            if not allow_2d:
                raise_2d(target, tuple(dims[::-1]))
            axes = "xy"
        elif len(dims) == 3:
            axes = "xyz"
        elif len(dims) == 4:
            axes = "xyzc"
        else:
            raise VolumeError(f"{target}: expected a 3D (x, y, z) or 4D (x, y, z, c) N5 dataset, got dimensions {dims}")
        voxel_size = _resolution(attrs, where) or group_size
        choose_level(target, [voxel_size], scale)
        spec = {"driver": "n5", "kvstore": {"driver": "file", "path": os.path.abspath(target) + "/"}}
        super().__init__(
            target,
            spec,
            axes,
            tuple(dims),
            native_dtype(np.dtype(attrs["dataType"]), target),
            voxel_size,
            drop_channel=drop_channel,
            cache_bytes=cache_bytes,
        )
