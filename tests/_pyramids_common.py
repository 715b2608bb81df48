"""Builders of pyramids written by the format's own library (TensorStore, zarr-python), not ours.

Each builder writes under a directory and returns ``(path, levels)``: ``levels`` is a list of
``(array (c,) z, y, x, voxel size (z, y, x) nm)``, finest first; ``array`` is what the file
holds (for lossy jpeg, what TensorStore reads back from it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorstore as ts
import zarr


def precomputed(
    d: Path,
    levels: list[np.ndarray],
    resolutions: list[tuple[float, float, float]],
    encoding: str = "raw",
    kind: str = "image",
    sharded: bool = False,
    chunk=(4, 4, 2),
    offset=(0, 0, 0),
) -> list[tuple[np.ndarray, tuple]]:
    """Write ``levels`` ((c,) z, y, x arrays) as scales of one precomputed volume at ``d``.

    ``resolutions`` are (z, y, x) nm; ``chunk`` and ``offset`` are (x, y, z) as in ``info``.
    """
    out = []
    for arr, res in zip(levels, resolutions):
        arr4 = arr if arr.ndim == 4 else arr[None]
        scale = {
            "size": list(arr4.shape[1:][::-1]),
            "resolution": list(res[::-1]),
            "encoding": encoding,
            "chunk_size": list(chunk),
            "voxel_offset": list(offset),
        }
        if sharded:
            scale["sharding"] = {
                "@type": "neuroglancer_uint64_sharded_v1",
                "preshift_bits": 1,
                "hash": "murmurhash3_x86_128",
                "minishard_bits": 1,
                "shard_bits": 1,
                "minishard_index_encoding": "gzip",
                "data_encoding": "gzip",
            }
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "file", "path": str(d) + "/"},
                "multiscale_metadata": {
                    "type": kind,
                    "data_type": str(arr.dtype),
                    "num_channels": int(arr4.shape[0]),
                },
                "scale_metadata": scale,
            },
            create=True,
        ).result()
        store = store.translate_to[0]
        store[...].write(np.ascontiguousarray(arr4.transpose(3, 2, 1, 0))).result()
        back = store[...].read().result().transpose(3, 2, 1, 0)
        out.append((back if arr.ndim == 4 else back[0], tuple(float(r) for r in res)))
    return out


def n5(d: Path, arr: np.ndarray, resolution_xyz=None, compression="gzip") -> None:
    """One N5 dataset at ``d`` holding ``arr`` ((c,) z, y, x), dimensions listed fastest first."""
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(d) + "/"},
            "metadata": {
                "dimensions": list(arr.shape[::-1]),
                "blockSize": [3] * arr.ndim,
                "dataType": str(arr.dtype),
                "compression": {"type": compression},
            },
        },
        create=True,
    ).result()
    store[...].write(np.ascontiguousarray(arr.T)).result()
    if resolution_xyz is not None:
        attrs_path = d / "attributes.json"
        attrs = json.loads(attrs_path.read_text())
        attrs["resolution"] = list(resolution_xyz)
        attrs_path.write_text(json.dumps(attrs))


def ome_zarr(
    d: Path,
    levels: list[np.ndarray],
    scales: list[list[float]],
    axes: list[dict],
    version: str,
    chunks: tuple[int, ...] | None = None,
) -> None:
    """An OME-Zarr image at ``d``: arrays '0', '1', ... by zarr-python, metadata per the spec.

    ``version`` '0.4' writes a zarr v2 group with ``multiscales`` in ``.zattrs``; '0.5' a zarr
    v3 group with ``attributes.ome``. ``scales`` are the per-level scale transforms (axis order).
    """
    zarr_format = 2 if version == "0.4" else 3
    group = zarr.open_group(str(d), mode="w", zarr_format=zarr_format)
    datasets = []
    for i, (arr, scale) in enumerate(zip(levels, scales)):
        group.create_array(str(i), data=arr, chunks=chunks or (2,) * arr.ndim)
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale = {"name": "image", "axes": axes, "datasets": datasets}
    if version == "0.4":
        group.attrs.update({"multiscales": [{"version": "0.4", **multiscale}]})
    else:
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [multiscale]}})


def zarr_sharded(d: Path, arr: np.ndarray) -> None:
    """A zarr v3 array with sharding (shards of 2x2 chunks)."""
    z = zarr.create_array(
        str(d), shape=arr.shape, dtype=arr.dtype, chunks=(2, 3, 3), shards=(4, 6, 6), zarr_format=3
    )
    z[...] = arr


SPACE = [
    {"name": "z", "type": "space", "unit": "nanometer"},
    {"name": "y", "type": "space", "unit": "nanometer"},
    {"name": "x", "type": "space", "unit": "nanometer"},
]
CHANNEL = {"name": "c", "type": "channel"}
