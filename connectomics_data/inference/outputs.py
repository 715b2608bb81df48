"""Prediction files: HDF5 or zarr, written atomically, marked as ours, never clobbering others.

Layout (PyTC): one dataset per input volume, ``vol0``, ``vol1``, ... of shape ``(C, z, y, x)``,
in one HDF5 file or one zarr group. The root carries the attribute
``connectomics_data = "prediction"``; an existing path without it (any other file, a directory,
an HDF5 file of someone else) is refused with :class:`OutputError` unless ``overwrite=True``.
Our own earlier outputs are replaced (the replacement is atomic: temp file, then rename).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import ConfigError, OutputError
from ..io.atomic import atomic_output, ensure_directory
from .sinks import MARK_ATTR, MARK_VALUE, Hdf5Sink, Sink, ZarrSink

OUTPUT_FORMATS = ("h5", "zarr")
EXTENSIONS = {"h5": (".h5", ".hdf5", ".hdf"), "zarr": (".zarr",)}


def check_output_format(fmt: str) -> str:
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"INFERENCE.OUTPUT_FORMAT must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    return fmt


def with_extension(name: str, fmt: str) -> str:
    """``name`` with the format's extension: kept if present, '.h5' <-> '.zarr' swapped, else added."""
    check_output_format(fmt)
    lower = name.lower()
    if lower.endswith(EXTENSIONS[fmt]):
        return name
    for other, exts in EXTENSIONS.items():
        for ext in exts:
            if other != fmt and lower.endswith(ext):
                return name[: -len(ext)] + EXTENSIONS[fmt][0]
    return name + EXTENSIONS[fmt][0]


def is_our_output(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file or zarr group carrying our marker attribute."""
    p = Path(path)
    try:
        if p.is_file():
            import h5py

            if not h5py.is_hdf5(p):
                return False
            with h5py.File(p, "r") as f:
                return _attr_str(f.attrs.get(MARK_ATTR)) == MARK_VALUE
        if p.is_dir() and (p / "zarr.json").is_file():
            import zarr

            group = zarr.open_group(str(p), mode="r")
            return group.attrs.get(MARK_ATTR) == MARK_VALUE
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return False


def _attr_str(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Fail early (before any computation) when ``path`` cannot or must not be written.

    Raises:
        OutputError: the directory cannot be created or written, or ``path`` exists and is
            not one of our outputs (and ``overwrite`` is False). The message names ``path``.
    """
    p = Path(path)
    if p.exists() and not overwrite and not is_our_output(p):
        raise OutputError(
            f"{p} exists and is not a prediction written by connectomics_data (no "
            f"'{MARK_ATTR}' attribute); refusing to overwrite it (pass overwrite=True, or choose "
            "another INFERENCE.OUTPUT_PATH / OUTPUT_NAME)"
        )
    parent = p.parent if str(p.parent) else Path(".")
    ensure_directory(parent, "output directory", output=p)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise OutputError(f"cannot write the output {p}: directory {parent} is not writable ({err})") from err


class PredictionFile:
    """An open prediction file (inside :func:`prediction_file`); hands out one sink per volume."""

    def __init__(self, handle, fmt: str, path: Path, work_dir: Path):
        self.handle = handle
        self.format = fmt
        self.path = path
        self.work_dir = work_dir  # where temporary accumulators go (the output directory)

    def sink(
        self,
        name: str,
        chunks: Sequence[int] | None = None,
        attrs: dict | None = None,
        compression: str | None = "gzip",
        compression_opts: int | None = 1,
        voxel_size: Sequence[float] | None = None,
    ) -> Sink:
        """A sink for dataset ``name`` (HDF5: ``compression`` applies; zarr: zarr's default,
        and OME-Zarr metadata with ``voxel_size`` ``(z, y, x)`` nm, the input's)."""
        if self.format == "h5":
            return Hdf5Sink(self.handle, name, compression, compression_opts, chunks, attrs)
        return ZarrSink(self.handle, name, chunks, attrs, voxel_size=voxel_size)


@contextlib.contextmanager
def prediction_file(
    path: str | os.PathLike,
    fmt: str = "h5",
    overwrite: bool = False,
    attrs: dict | None = None,
) -> Iterator[PredictionFile]:
    """Create a prediction file atomically: nothing appears at ``path`` unless the block succeeds.

    Raises:
        OutputError: see :func:`check_output_path`.
    """
    check_output_format(fmt)
    final = Path(path)
    check_output_path(final, overwrite)
    if final.exists() and fmt == "h5" and final.is_dir() or (fmt == "zarr" and final.is_file()):
        raise OutputError(f"{final} exists as a {'directory' if final.is_dir() else 'file'}; cannot write a {fmt} output there")
    with atomic_output(final, is_dir=(fmt == "zarr")) as tmp:
        if fmt == "h5":
            import h5py

            with h5py.File(tmp, "w") as handle:
                handle.attrs[MARK_ATTR] = MARK_VALUE
                for key, value in (attrs or {}).items():
                    handle.attrs[key] = value
                yield PredictionFile(handle, fmt, final, final.parent)
        else:
            import zarr

            group = zarr.open_group(str(tmp), mode="w")
            group.attrs.update({MARK_ATTR: MARK_VALUE, **(attrs or {})})
            yield PredictionFile(group, fmt, final, final.parent)
