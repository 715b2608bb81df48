"""Volume writers (HDF5, zarr, TIFF, PNG slices), each through :func:`atomic_output`.

A writer builds its output under a temporary sibling name and renames it into place only when
complete, so a crash or an exception never leaves a half-written file, and an earlier output
at the same path survives a failed overwrite.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tifffile
import zarr
from PIL import Image

from ..errors import OutputError
from .atomic import atomic_output


def _named_arrays(arrays: Mapping[str, Any] | Sequence[Any] | np.ndarray) -> dict[str, Any]:
    """PyTC layout: one array -> 'main'; a list -> 'vol0', 'vol1', ...; a dict as given."""
    if isinstance(arrays, np.ndarray):
        return {"main": arrays}
    if isinstance(arrays, Mapping):
        return dict(arrays)
    if isinstance(arrays, (list, tuple)):
        return {f"vol{i}": a for i, a in enumerate(arrays)}
    raise TypeError(
        f"arrays must be an ndarray, a list of them or a dict, got {type(arrays).__name__}"
    )


def write_hdf5(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
    compression: str | None = "gzip",
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write one HDF5 dataset per array (PyTC's ``writeh5`` layout), atomically.

    Args:
        path: the output ``.h5`` file (replaced only when the new one is complete).
        arrays: one array (dataset 'main'), a list (datasets 'vol0', 'vol1', ...) or a dict
            ``{dataset name: array}``; any shape and dtype, written as given.
        compression: h5py compression filter ('gzip', 'lzf') or ``None``.
        attrs: attributes set on every dataset (e.g. ``{'resolution': [50, 4, 4]}``).

    Returns:
        The final path.
    """
    named = _named_arrays(arrays)
    if not named:
        raise OutputError(f"{path}: nothing to write (no arrays given)")
    with atomic_output(path) as tmp:
        # no chunk cache: a failed chunk write (disk full) then raises in create_dataset, where
        # a failed flush of cached chunks at close crashes h5py (segmentation fault)
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            for name, array in named.items():
                data = np.asarray(array)
                use = compression if data.size > 0 else None
                ds = f.create_dataset(name, data=data, compression=use)
                for key, value in (attrs or {}).items():
                    ds.attrs[key] = value
    return Path(path)


def write_zarr(
    path: str | os.PathLike,
    array: np.ndarray,
    chunks: Sequence[int] | None = None,
    *,
    zarr_format: int = 3,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write an array as a zarr store directory (format 3 by default, or 2), atomically.

    Args:
        path: the output directory (e.g. ``out.zarr``); an existing one is replaced only after
            the new store is complete.
        array: any shape and dtype, written as given.
        chunks: chunk shape; ``None`` lets zarr choose.
        zarr_format: 2 or 3.
        attrs: array attributes.
    """
    data = np.asarray(array)
    with atomic_output(path, is_dir=True) as tmp:
        z = zarr.create_array(
            store=str(tmp),
            shape=data.shape,
            dtype=data.dtype,
            chunks=tuple(chunks) if chunks is not None else "auto",
            zarr_format=zarr_format,
            overwrite=True,
        )
        z[...] = data
        if attrs:
            z.attrs.update(dict(attrs))
    return Path(path)


def _tiff_axes(ndim: int) -> str:
    axes = {2: "YX", 3: "ZYX", 4: "CZYX"}
    if ndim not in axes:
        raise OutputError(f"write_tiff: expected a 2D, 3D or 4D (c, z, y, x) array, got {ndim}D")
    return axes[ndim]


def write_tiff(path: str | os.PathLike, array: np.ndarray, compression: str | None = None) -> Path:
    """Write ``(y, x)``, ``(z, y, x)`` or ``(c, z, y, x)`` as a TIFF stack, atomically.

    The axes are recorded in tifffile's metadata, so :class:`TiffVolume` reads ``(c, z, y, x)``
    back unchanged. Uncompressed files (the default) are memory-mappable when read.
    """
    data = np.asarray(array)
    axes = _tiff_axes(data.ndim)
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, data, photometric="minisblack", metadata={"axes": axes}, compression=compression
        )
    return Path(path)


_PNG_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.bool_))


def write_png_slices(
    directory: str | os.PathLike, array: np.ndarray, name_format: str = "{:04d}.png"
) -> list[Path]:
    """Write ``(z, y, x)`` (uint8, uint16 or bool) or ``(c, z, y, x)`` RGB/RGBA uint8 as PNGs.

    One file per z slice, named ``name_format.format(z)``, in ``directory``; the whole
    directory is written atomically (an existing one is replaced only when complete).

    Returns:
        The slice paths in z order.
    """
    data = np.asarray(array)
    if data.ndim == 4:
        if data.shape[0] not in (3, 4) or data.dtype != np.uint8:
            raise OutputError(
                f"{directory}: PNG slices hold 3 or 4 uint8 channels, got shape {list(data.shape)} "
                f"and dtype {data.dtype}"
            )
        data = np.moveaxis(data, 0, -1)
    elif data.ndim != 3 or data.dtype not in _PNG_DTYPES:
        raise OutputError(
            f"{directory}: PNG slices need a (z, y, x) uint8/uint16/bool array, got shape "
            f"{list(data.shape)} and dtype {data.dtype}"
        )
    names = [name_format.format(z) for z in range(data.shape[0])]
    with atomic_output(directory, is_dir=True) as tmp:
        for name, plane in zip(names, data):
            Image.fromarray(np.ascontiguousarray(plane)).save(tmp / name, format="PNG")
    return [Path(directory) / name for name in names]
