"""Voxel sizes and the choice of a pyramid level.

A voxel size is a tuple of three floats ``(z, y, x)`` in nanometres, or ``None`` when the
format carries none. A *scale* asks for one level of a multiscale volume: an ``int`` level
index (0 = finest, as stored) or a voxel size ``(z, y, x)`` in nm. Every format with levels
(OME-Zarr, Neuroglancer precomputed, N5 ``s0, s1, ...`` groups) calls :func:`choose_level`;
single-level formats call :func:`check_single_level`. A scale that names no level is one
:class:`~connectomics_data.errors.VolumeError` naming the volume and listing what it has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import VolumeError

VoxelSize = tuple[float, float, float]
Scale = int | Sequence[float] | None

UNIT_TO_NM = {
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometer": 1e3,
    "micron": 1e3,
    "um": 1e3,
    "µm": 1e3,
    "millimeter": 1e6,
    "mm": 1e6,
    "centimeter": 1e7,
    "meter": 1e9,
    "m": 1e9,
    "angstrom": 0.1,
    "picometer": 1e-3,
}
"""Length units (OME-NGFF / UDUNITS names and common abbreviations) in nanometres."""


def unit_factor(unit: str | None, where: str) -> float:
    """Nanometres per ``unit``; a missing unit is taken as nanometres (the field's default)."""
    if unit is None or unit == "":
        return 1.0
    factor = UNIT_TO_NM.get(str(unit).strip().lower())
    if factor is None:
        raise VolumeError(
            f"{where}: unknown length unit {unit!r}; expected one of {sorted(set(UNIT_TO_NM))}"
        )
    return factor


def as_voxel_size(value: object, where: str) -> VoxelSize:
    """Three positive finite numbers ``(z, y, x)`` as floats, else a :class:`VolumeError`."""
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise VolumeError(f"{where}: a voxel size is three positive numbers (z, y, x) in nm, got {value!r}")
    return out  # type: ignore[return-value]


def same_voxel_size(a: Sequence[float], b: Sequence[float]) -> bool:
    """Equal up to floating-point noise (relative 1e-6)."""
    return all(math.isclose(float(u), float(v), rel_tol=1e-6, abs_tol=1e-9) for u, v in zip(a, b))


def format_voxel_size(size: Sequence[float] | None) -> str:
    """``'(40, 8, 8) nm'`` (integers shown without '.0'); ``'unknown'`` for None."""
    if size is None:
        return "unknown"
    return "(" + ", ".join(f"{float(v):g}" for v in size) + ") nm"


def _describe(sizes: Sequence[VoxelSize | None]) -> str:
    return ", ".join(f"level {i}: {format_voxel_size(s)}" for i, s in enumerate(sizes))


def check_scale(scale: object, where: str) -> int | VoxelSize | None:
    """Validate a scale argument: None, a level index >= 0, or a voxel size (z, y, x)."""
    if scale is None:
        return None
    if isinstance(scale, bool):
        raise VolumeError(f"{where}: scale must be a level index or a voxel size (z, y, x), got {scale!r}")
    if isinstance(scale, int):
        if scale < 0:
            raise VolumeError(f"{where}: scale level index must be >= 0, got {scale}")
        return scale
    return as_voxel_size(scale, f"{where}: scale")


def choose_level(where: str, sizes: Sequence[VoxelSize | None], scale: object) -> int:
    """The level index ``scale`` asks for among levels of voxel sizes ``sizes`` (finest first).

    Raises:
        VolumeError: the index is out of range or no level has that voxel size; the message
            names ``where`` and lists every level's voxel size.
    """
    s = check_scale(scale, where)
    if s is None:
        return 0
    if isinstance(s, int):
        if s >= len(sizes):
            raise VolumeError(
                f"{where}: scale level {s} does not exist; the volume has {len(sizes)} level(s) "
                f"({_describe(sizes)})"
            )
        return s
    for i, size in enumerate(sizes):
        if size is not None and same_voxel_size(size, s):
            return i
    raise VolumeError(
        f"{where}: no level has the voxel size {format_voxel_size(s)}; the volume has "
        f"{_describe(sizes)}"
    )


def check_single_level(where: str, voxel_size: VoxelSize | None, scale: object) -> None:
    """For single-level formats: ``scale`` must be None, 0 or the volume's own voxel size.

    A volume that carries no voxel size accepts any voxel size (nothing contradicts it), so a
    config's voxel size can pick the level of a pyramid while a plain HDF5 label of the same
    grid is read as it is.
    """
    if voxel_size is None and not isinstance(check_scale(scale, where), int):
        return
    choose_level(where, [voxel_size], scale)


def voxel_size_attribute(value: object) -> VoxelSize | None:
    """A ``resolution`` attribute ``(z, y, x)`` as a voxel size, or None when it is not three
    positive numbers (the attribute belongs to other tools too; it is not ours to reject)."""
    try:
        return as_voxel_size(value, "resolution")
    except VolumeError:
        return None
