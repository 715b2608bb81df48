"""Volume sources behind one interface (shape, dtype, read(box)) and atomic writers."""

from .atomic import atomic_output, ensure_directory
from .base import PAD_MODES, ArrayVolume, Volume, source_indices
from .formats.hdf5 import Hdf5Volume
from .formats.images import ImageStackVolume, ImageVolume
from .formats.n5 import N5Volume
from .formats.npy import NpyVolume
from .formats.ome_zarr import open_ome_zarr, write_ome_zarr_metadata
from .formats.precomputed import PrecomputedVolume
from .formats.tensorstore_array import TensorStoreVolume, worker_start_method
from .formats.tiff import TiffVolume
from .formats.zarr_array import ZarrVolume
from .layout import AxisLayout
from .lazy import LazyArrayVolume
from .names import resolve_names, resolve_volume_specs
from .open import SUPPORTED_EXTENSIONS, open_volume
from .scales import choose_level, format_voxel_size
from .shared import SharedArrayVolume
from .tiles.cache import TileCache
from .tiles.make import make_tile_json
from .tiles.spec import TileSpec, load_tile_json
from .tiles.to_zarr import volume_to_zarr
from .tiles.volume import TiledVolume, open_tiled_volume
from .writers import write_hdf5, write_png_slices, write_tiff, write_zarr

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
    "N5Volume",
    "NpyVolume",
    "PrecomputedVolume",
    "TensorStoreVolume",
    "TiffVolume",
    "Volume",
    "ZarrVolume",
    "atomic_output",
    "ensure_directory",
    "choose_level",
    "format_voxel_size",
    "open_ome_zarr",
    "worker_start_method",
    "write_ome_zarr_metadata",
    "open_volume",
    "resolve_names",
    "resolve_volume_specs",
    "source_indices",
    "write_hdf5",
    "write_png_slices",
    "write_tiff",
    "write_zarr",
]
