"""Volume sources behind one interface (shape, dtype, read(box)) and atomic writers."""

from .atomic import atomic_output
from .base import PAD_MODES, ArrayVolume, Volume, source_indices
from .hdf5 import Hdf5Volume
from .images import ImageStackVolume, ImageVolume
from .layout import AxisLayout
from .lazy import LazyArrayVolume
from .names import resolve_names, resolve_volume_specs
from .numpy_io import NpyVolume
from .open import SUPPORTED_EXTENSIONS, open_volume
from .shared import SharedArrayVolume
from .tiff import TiffVolume
from .tile_cache import TileCache
from .tile_json import TileSpec, load_tile_json
from .tile_make import make_tile_json
from .tile_zarr import volume_to_zarr
from .tiles import TiledVolume, open_tiled_volume
from .writers import write_hdf5, write_png_slices, write_tiff, write_zarr
from .zarr_io import ZarrVolume

__all__ = [
    "SharedArrayVolume",
    "TileCache",
    "TileSpec",
    "TiledVolume",
    "load_tile_json",
    "make_tile_json",
    "open_tiled_volume",
    "volume_to_zarr",
    "PAD_MODES",
    "SUPPORTED_EXTENSIONS",
    "ArrayVolume",
    "AxisLayout",
    "Hdf5Volume",
    "ImageStackVolume",
    "ImageVolume",
    "LazyArrayVolume",
    "NpyVolume",
    "TiffVolume",
    "Volume",
    "ZarrVolume",
    "atomic_output",
    "open_volume",
    "resolve_names",
    "resolve_volume_specs",
    "source_indices",
    "write_hdf5",
    "write_png_slices",
    "write_tiff",
    "write_zarr",
]
