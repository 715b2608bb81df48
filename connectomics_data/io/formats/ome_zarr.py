"""OME-Zarr (OME-NGFF 0.4 and 0.5) multiscale images: read a level, write the metadata.

Reading: a zarr group whose attributes hold ``multiscales`` (0.4: in ``.zattrs``; 0.5: in
``zarr.json`` under ``ome``). The first multiscale image is read; its ``datasets`` are the
levels, finest first. A level is chosen by index or by voxel size; the voxel size is the
level's ``scale`` transform (times the multiscale's own, if any) on the ``z, y, x`` axes,
converted from the axes' units to nanometres. Axes may come in any order of ``c z y x``
(e.g. ``czyx``, ``zcyx``, ``zyx``); a time axis is refused.

Writing: :func:`write_ome_zarr_metadata` adds one single-level multiscale image entry for an
array of a group (0.5 for zarr v3 groups, 0.4 for v2), so Neuroglancer and napari place it at
the right scale. Prediction outputs (``INFERENCE.OUTPUT_FORMAT zarr``) call it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import zarr

from ...errors import VolumeError, VolumeNotFoundError
from ..lazy import READ_ERRORS, wrap_error
from ..scales import choose_level, unit_factor
from .zarr_array import ZarrVolume, is_zarr_store

NGFF_AXES = {
    "c": {"name": "c", "type": "channel"},
    "z": {"name": "z", "type": "space", "unit": "nanometer"},
    "y": {"name": "y", "type": "space", "unit": "nanometer"},
    "x": {"name": "x", "type": "space", "unit": "nanometer"},
}


def _group_attrs(path: str) -> dict | None:
    """The group's attributes (0.5 ``ome`` lifted to the top), or None if not a group."""
    try:
        node = zarr.open(store=path, mode="r")
    except READ_ERRORS:
        return None
    if not isinstance(node, zarr.Group):
        return None
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):
        merged = dict(ome)
        merged.setdefault("version", ome.get("version"))
        return merged
    return attrs


def ome_multiscales(path: str) -> list | None:
    """The ``multiscales`` list of the zarr group at ``path``; None when it has none."""
    if not is_zarr_store(path):
        return None
    attrs = _group_attrs(path)
    if attrs is None or "multiscales" not in attrs:
        return None
    return attrs["multiscales"]


def is_ome_zarr(path: str) -> bool:
    """True for a zarr group with ``multiscales`` or an ``ome`` (0.5) attribute."""
    if not is_zarr_store(path):
        return False
    attrs = _group_attrs(path)
    return attrs is not None and ("multiscales" in attrs or "version" in attrs)


def _axes(multiscale: dict, ndim: int, where: str) -> tuple[str, list[str | None]]:
    """Axis letters (from ``czyx``) and units, from 0.4/0.5 axis objects or 0.3 names."""
    raw = multiscale.get("axes")
    if raw is None:
        raw = ["t", "c", "z", "y", "x"][-ndim:] if ndim <= 5 else None
    if not isinstance(raw, list) or len(raw) != ndim:
        raise VolumeError(f"{where}: 'axes' must list {ndim} axes, got {raw!r}")
    letters, units = [], []
    for axis in raw:
        if isinstance(axis, str):
            axis = {"name": axis}
        if not isinstance(axis, dict) or "name" not in axis:
            raise VolumeError(f"{where}: bad axis {axis!r}")
        name, kind = str(axis["name"]).lower(), axis.get("type")
        if kind == "channel" or (kind is None and name == "c"):
            letter = "c"
        elif name in ("z", "y", "x") and kind in (None, "space"):
            letter = name
        elif kind == "time" or name == "t":
            raise VolumeError(f"{where}: has a time axis {axis['name']!r}; only (c,) z, y, x images are read")
        else:
            raise VolumeError(f"{where}: axis {axis!r} is not one of c, z, y, x")
        letters.append(letter)
        units.append(axis.get("unit"))
    if len(set(letters)) != len(letters):
        raise VolumeError(f"{where}: repeated axes {letters}")
    return "".join(letters), units


def _scale_of(transforms: Any, ndim: int, where: str) -> list[float]:
    if transforms is None:
        return [1.0] * ndim
    if not isinstance(transforms, list):
        raise VolumeError(f"{where}: coordinateTransformations must be a list, got {transforms!r}")
    out = [1.0] * ndim
    for t in transforms:
        if isinstance(t, dict) and t.get("type") == "scale":
            values = t.get("scale")
            if not isinstance(values, list) or len(values) != ndim:
                raise VolumeError(f"{where}: scale transform must have {ndim} values, got {values!r}")
            out = [a * float(b) for a, b in zip(out, values)]
    return out


def open_ome_zarr(
    path: str,
    dataset: str | None = None,
    *,
    scale: object = None,
    allow_2d: bool = False,
    drop_channel: bool = False,
) -> ZarrVolume:
    """One level of the OME-Zarr image at ``path`` as a :class:`ZarrVolume` with ``voxel_size``.

    Args:
        path: the OME-Zarr group (the one holding ``multiscales``).
        dataset: a level's path (e.g. ``'1'``) instead of ``scale``, or the path of an
            OME-Zarr image group inside ``path`` (e.g. ``'labels/cells'``).
        scale: level index (0 = finest) or voxel size ``(z, y, x)`` nm.
    """
    if dataset not in (None, ""):
        inner = os.path.join(path, dataset.strip("/"))
        if is_ome_zarr(inner):
            return open_ome_zarr(inner, None, scale=scale, allow_2d=allow_2d, drop_channel=drop_channel)
    multiscales = ome_multiscales(path)
    if multiscales is None:
        raise VolumeError(f"{path}: is not an OME-Zarr image (the group has no 'multiscales' metadata)")
    where = f"{path} (OME-Zarr multiscales[0])"
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise VolumeError(f"{path}: 'multiscales' must be a non-empty list of objects")
    ms = multiscales[0]
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, dict) and "path" in d for d in datasets):
        raise VolumeError(f"{where}: 'datasets' must be a non-empty list of {{'path': ...}} objects")
    first = os.path.join(path, str(datasets[0]["path"]))
    try:
        ndim = len(zarr.open_array(store=first, mode="r").shape)
    except READ_ERRORS as err:
        raise wrap_error(first, "cannot open the OME-Zarr level as a zarr array", err) from err
    letters, units = _axes(ms, ndim, where)
    outer = _scale_of(ms.get("coordinateTransformations"), ndim, where)
    sizes = []
    for i, d in enumerate(datasets):
        level_scale = _scale_of(d.get("coordinateTransformations"), ndim, f"{where} datasets[{i}]")
        nm = {
            a: s * o * unit_factor(u, where)
            for a, s, o, u in zip(letters, level_scale, outer, units)
            if a != "c"
        }
        sizes.append((nm["z"], nm["y"], nm["x"]) if "z" in nm else None)
    paths = [str(d["path"]).strip("/") for d in datasets]
    if dataset not in (None, ""):
        if scale is not None:
            raise VolumeError(f"{path}: give either dataset={dataset!r} (a level path) or scale={scale!r}, not both")
        if dataset.strip("/") not in paths:
            raise VolumeNotFoundError(f"{path}: no OME-Zarr level or image {dataset!r}; levels: {paths}")
        level = paths.index(dataset.strip("/"))
    else:
        level = choose_level(path, sizes, scale)
    vol = ZarrVolume(
        os.path.join(path, paths[level]),
        allow_2d=allow_2d,
        drop_channel=drop_channel,
        axes=letters,
        voxel_size=sizes[level],
    )
    vol.level = level
    return vol


def write_ome_zarr_metadata(
    group: zarr.Group | str | os.PathLike,
    array_path: str,
    axes: str = "czyx",
    voxel_size: Sequence[float] | None = None,
    *,
    name: str | None = None,
) -> dict:
    """Add (or replace) the OME-Zarr multiscale entry of one array of ``group``.

    The entry is a single-level multiscale image named ``name`` (default ``array_path``)
    whose one dataset is ``array_path``, with axes ``axes`` (letters from ``czyx``: channel
    axis typed 'channel', the others 'space' in nanometres) and a ``scale`` transform of 1 on
    the channel axis and ``voxel_size`` ``(z, y, x)`` nm on the others (1 and no unit when
    ``voxel_size`` is None). A zarr v3 group gets OME-NGFF 0.5 (``attributes.ome``), a v2
    group 0.4 (``.zattrs``). Entries of other arrays are kept; only attributes change.

    Args:
        group: an open writable ``zarr.Group`` or the path of one.
        array_path: the array's path inside the group (e.g. ``'vol0'``).
        axes: the array's axis order, e.g. ``'czyx'`` or ``'zyx'``.
        voxel_size: ``(z, y, x)`` in nanometres, or None.
        name: the multiscale's name.

    Returns:
        The multiscale entry written.
    """
    if isinstance(group, (str, os.PathLike)):
        group = zarr.open_group(str(group), mode="r+")
    if not axes or set(axes) - set("czyx") or len(set(axes)) != len(axes) or not {"y", "x"} <= set(axes):
        raise ValueError(f"axes must be distinct letters from 'czyx' including y and x, got {axes!r}")
    size = dict(zip("zyx", (float(v) for v in voxel_size))) if voxel_size is not None else None
    axis_list = []
    scale = []
    for a in axes:
        entry = dict(NGFF_AXES[a])
        if a != "c" and size is None:
            entry.pop("unit")
        axis_list.append(entry)
        scale.append(1.0 if a == "c" or size is None else size[a])
    entry = {
        "name": name or array_path,
        "axes": axis_list,
        "datasets": [
            {"path": array_path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }
    v3 = group.metadata.zarr_format == 3
    attrs = dict(group.attrs)
    if v3:
        ome = dict(attrs.get("ome") or {})
        ome["version"] = "0.5"
        ome["multiscales"] = [m for m in ome.get("multiscales", []) if m.get("name") != entry["name"]] + [entry]
        group.attrs.update({"ome": ome})
    else:
        entry = {"version": "0.4", **entry}
        multiscales = [m for m in attrs.get("multiscales", []) if m.get("name") != entry["name"]] + [entry]
        group.attrs.update({"multiscales": multiscales})
    return entry
