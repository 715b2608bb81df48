"""Neuroglancer precomputed volumes (local), read through TensorStore.

A precomputed volume is a directory holding an ``info`` JSON and one sub-directory per scale.
``info`` lists sizes, resolutions and voxel offsets in ``(x, y, z)`` order plus a channel count;
the volume is ``(z, y, x)`` (``(c, z, y, x)`` when ``num_channels > 1``), starting at the
scale's voxel offset, with voxel size ``resolution`` reversed (nanometres). Encodings 'raw',
'jpeg', 'png', 'compressed_segmentation' and 'compresso', sharded or not; segmentation ids keep
their dtype (uint64 stays uint64).

Names accepted: the directory (``/data/em``), ``precomputed://file:///data/em`` or
``file:///data/em``. ``dataset`` may name a scale by its ``key`` (e.g. ``'8_8_40'``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ...errors import VolumeError, VolumeNotFoundError
from ..layout import native_dtype
from ..scales import choose_level
from .tensorstore_array import DEFAULT_CACHE_BYTES, TensorStoreVolume

PRECOMPUTED_PREFIXES = ("precomputed://file://", "precomputed://", "file://")
ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "compresso")
DATA_TYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32")


def strip_precomputed_url(path: str) -> str | None:
    """The local directory of a ``precomputed://file://`` / ``file://`` URL; None for a plain path."""
    for prefix in PRECOMPUTED_PREFIXES:
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if "://" in rest:
                raise VolumeError(
                    f"{path}: only local precomputed volumes (file://) are read; got {rest.split('://')[0]}://"
                )
            return rest
    return None


def is_precomputed(path: str) -> bool:
    """True when ``path`` is a directory holding an ``info`` file."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "info"))


def read_info(path: str) -> dict:
    """The parsed ``info`` of the precomputed directory ``path`` (checked for required keys)."""
    info_path = os.path.join(path, "info")
    if not os.path.isfile(info_path):
        raise VolumeNotFoundError(
            f"{path}: no 'info' file; a Neuroglancer precomputed volume is a directory holding "
            "an 'info' JSON"
        )
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as err:
        raise VolumeError(f"{info_path}: cannot read the precomputed info JSON: {err}") from err
    if not isinstance(info, dict) or not isinstance(info.get("scales"), list) or not info["scales"]:
        raise VolumeError(f"{info_path}: expected a JSON object with a non-empty 'scales' list")
    dtype = info.get("data_type")
    if dtype not in DATA_TYPES:
        raise VolumeError(f"{info_path}: data_type {dtype!r} is not one of {list(DATA_TYPES)}")
    for i, scale in enumerate(info["scales"]):
        where = f"{info_path}: scales[{i}]"
        if not isinstance(scale, dict):
            raise VolumeError(f"{where}: expected an object, got {scale!r}")
        for key in ("key", "size", "resolution", "encoding"):
            if key not in scale:
                raise VolumeError(f"{where}: missing {key!r}")
        if scale["encoding"] not in ENCODINGS:
            raise VolumeError(
                f"{where}: unknown encoding {scale['encoding']!r}; expected one of {list(ENCODINGS)}"
            )
        for key in ("size", "resolution"):
            value = scale[key]
            if not (isinstance(value, list) and len(value) == 3):
                raise VolumeError(f"{where}: {key} must be three numbers (x, y, z), got {value!r}")
    return info


def _voxel_size(scale: dict, where: str) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in scale["resolution"])
    except (TypeError, ValueError) as err:
        raise VolumeError(f"{where}: resolution must be numbers, got {scale['resolution']!r}") from err
    return (z, y, x)


class PrecomputedVolume(TensorStoreVolume):
    """One scale of a local Neuroglancer precomputed volume, ``(z, y, x)`` / ``(c, z, y, x)``.

    Args:
        path: the directory holding ``info`` (or a ``precomputed://file://`` URL).
        dataset: a scale ``key`` (optional; alternative to ``scale``).
        scale: level index (0 = first listed scale) or voxel size ``(z, y, x)`` nm.
        allow_2d: accepted for symmetry with the other formats (precomputed is always 3D).
        drop_channel: average channels to gray.
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
        p = os.fspath(path)
        local = strip_precomputed_url(p)
        directory = (local if local is not None else p).rstrip("/") or "/"
        if not os.path.isdir(directory):
            raise VolumeNotFoundError(f"precomputed volume not found: {directory}")
        info = read_info(directory)
        scales = info["scales"]
        sizes = [_voxel_size(s, f"{directory}/info: scales[{i}]") for i, s in enumerate(scales)]
        if dataset not in (None, ""):
            keys = [str(s["key"]) for s in scales]
            if scale is not None:
                raise VolumeError(f"{directory}: give either dataset={dataset!r} (a scale key) or scale={scale!r}, not both")
            if dataset.strip("/") not in keys:
                raise VolumeNotFoundError(f"{directory}: no scale with key {dataset!r}; scales: {keys}")
            level = keys.index(dataset.strip("/"))
        else:
            level = choose_level(directory, sizes, scale)
        chosen = scales[level]
        self.level = level
        self.scale_key = str(chosen["key"])
        self.encoding = str(chosen["encoding"])
        channels = int(info.get("num_channels", 1))
        shape = tuple(int(n) for n in chosen["size"]) + (channels,)
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": os.path.abspath(directory) + "/"},
            "scale_index": level,
        }
        super().__init__(
            directory,
            spec,
            "xyzc",
            shape,
            native_dtype(np.dtype(info["data_type"]), directory),
            sizes[level],
            drop_channel=drop_channel,
            cache_bytes=cache_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"PrecomputedVolume(path={self.path!r}, scale={self.scale_key!r}, "
            f"shape={list(self.shape)}, dtype={self.dtype.name}, encoding={self.encoding!r})"
        )
