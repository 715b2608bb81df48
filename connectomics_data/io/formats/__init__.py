"""On-disk volume formats, one module each, all behind :class:`~connectomics_data.io.base.Volume`.

``hdf5``, ``tiff``, ``images`` (PNG/JPEG/TIFF slices), ``npy``, ``zarr_array`` (zarr v2/v3,
sharded; zarr-python), ``ome_zarr`` (OME-NGFF 0.4/0.5 pyramids on zarr arrays, and the metadata
writer for outputs), ``precomputed`` and ``n5`` (read through ``tensorstore_array``: TensorStore,
opened lazily per process, fork-server DataLoader workers).
"""
