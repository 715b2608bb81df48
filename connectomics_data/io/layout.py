"""How a stored array's axes map onto a volume's ``(c, z, y, x)`` axes.

Files store data in several axis orders: HDF5/zarr/npy as ``(z, y, x)`` or ``(c, z, y, x)``,
TIFF stacks sometimes as ``(z, c, y, x)`` or ``(z, y, x, c)``, single images as ``(y, x)`` or
``(y, x, c)``. An :class:`AxisLayout` names the stored order with the letters ``c z y x`` (for
example ``"zcyx"``) and turns a spatial box of the volume into an index of the stored array
and the block read back into ``(c, z, y, x)`` order. A stored array without a ``z`` axis
becomes a volume with one z slice, ``(1, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import VolumeError
from ..geometry import Box

NUMERIC_KINDS = "biuf"


def native_dtype(dtype: np.dtype | str, path: str) -> np.dtype:
    """The dtype in native byte order; a non-numeric dtype is a :class:`VolumeError`."""
    dt = np.dtype(dtype)
    if dt.kind not in NUMERIC_KINDS:
        raise VolumeError(
            f"{path}: dtype {dt} is not a numeric type (expected bool, integer or float data)"
        )
    return dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt


def average_channels(block: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average the channel axis to gray, keeping the dtype (integers rounded half to even)."""
    dtype = block.dtype
    mean = block.mean(axis=axis, dtype=np.float64)
    if dtype.kind == "f":
        return mean.astype(dtype)
    return np.rint(mean).astype(dtype)


@dataclass(frozen=True)
class AxisLayout:
    """The axis order of a stored array, e.g. ``"zyx"``, ``"czyx"``, ``"zcyx"``, ``"yxc"``.

    Attributes:
        axes: one letter per stored axis from ``c z y x``; ``y`` and ``x`` are required.
        stored_shape: the stored array's shape.
        drop_channel: average the ``c`` axis away (gray volume ``(z, y, x)``).
    """

    axes: str
    stored_shape: tuple[int, ...]
    drop_channel: bool = False

    def __post_init__(self) -> None:
        letters = self.axes
        if (
            len(letters) != len(self.stored_shape)
            or len(set(letters)) != len(letters)
            or not set(letters) <= set("czyx")
            or "y" not in letters
            or "x" not in letters
        ):
            raise ValueError(f"bad axis layout {letters!r} for stored shape {self.stored_shape}")

    @property
    def has_channel(self) -> bool:
        return "c" in self.axes and not self.drop_channel

    @property
    def shape(self) -> tuple[int, ...]:
        """The volume shape: ``(z, y, x)`` or ``(c, z, y, x)``."""
        size = dict(zip(self.axes, self.stored_shape))
        spatial = (size.get("z", 1), size["y"], size["x"])
        return ((size["c"],) if self.has_channel else ()) + spatial

    def index(self, box: Box) -> tuple[slice, ...]:
        """The stored-array index of a spatial box (that lies inside the volume)."""
        ranges = {
            "z": box.slices()[0],
            "y": box.slices()[1],
            "x": box.slices()[2],
            "c": slice(None),
        }
        return tuple(ranges[a] for a in self.axes)

    def to_volume_order(self, block: np.ndarray, box: Box) -> np.ndarray:
        """Turn a block read with :meth:`index` into ``(c, z, y, x)`` / ``(z, y, x)`` order."""
        order = [a for a in "czyx" if a in self.axes]
        block = np.transpose(block, [self.axes.index(a) for a in order])
        if "z" not in self.axes:
            zaxis = 1 if "c" in self.axes else 0
            block = np.expand_dims(block, zaxis)
            if box.shape[0] == 0:
                block = np.take(block, [], axis=zaxis)
        if "c" in self.axes and self.drop_channel:
            block = average_channels(block, axis=0)
        return block


def layout_for_ndim(
    shape: tuple[int, ...], path: str, allow_2d: bool, drop_channel: bool
) -> AxisLayout:
    """The layout of an array stored channel-first: ``(y, x)``, ``(z, y, x)``, ``(c, z, y, x)``.

    A 2D array is accepted only with ``allow_2d`` (it becomes a ``(1, y, x)`` volume).
    """
    ndim = len(shape)
    if ndim == 2:
        if not allow_2d:
            raise_2d(path, shape)
        return AxisLayout("yx", tuple(shape), drop_channel)
    if ndim == 3:
        return AxisLayout("zyx", tuple(shape), drop_channel)
    if ndim == 4:
        return AxisLayout("czyx", tuple(shape), drop_channel)
    raise VolumeError(
        f"{path}: expected a 3D (z, y, x) or 4D (c, z, y, x) volume, got shape {list(shape)}"
    )


def raise_2d(path: str, shape: tuple[int, ...]) -> None:
    """Raise the error for a 2D image where a 3D volume is needed."""
    raise VolumeError(
        f"{path}: is a 2D image of shape {list(shape)}, but a 3D (z, y, x) or 4D (c, z, y, x) "
        f"volume is needed; pass allow_2d=True (DATASET.LOAD_2D) to read it as a (1, y, x) "
        f"volume, or list the slices as a stack"
    )
