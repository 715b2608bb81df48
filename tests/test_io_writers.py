"""Writers round-trip exactly and never leave a half-written output behind."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from connectomics_data.errors import OutputError
from connectomics_data.io import (
    open_volume,
    write_hdf5,
    write_png_slices,
    write_tiff,
    write_zarr,
)

RNG_SEED = 123


def _arr(shape, dtype="uint8", seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(RNG_SEED + seed).integers(
        info.min, info.max, size=shape, dtype=dtype, endpoint=True
    )


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


class Exploding:
    """An array-like whose conversion fails: stands in for a crash in the middle of a write."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("boom while converting")


# --------------------------------------------------------------------------- round trips
def test_hdf5_layouts(tmp_path):
    a, b = _arr((2, 3, 4)), _arr((3, 4, 5), "uint16", 1)
    write_hdf5(tmp_path / "one.h5", a)
    write_hdf5(tmp_path / "list.h5", [a, b], compression=None)
    write_hdf5(tmp_path / "dict.h5", {"img": a, "seg/ids": b}, attrs={"resolution": [30, 4, 4]})
    with h5py.File(tmp_path / "one.h5", "r") as f:
        assert list(f) == ["main"]
        np.testing.assert_array_equal(f["main"][:], a)
        assert f["main"].compression == "gzip"
    with h5py.File(tmp_path / "list.h5", "r") as f:
        assert sorted(f) == ["vol0", "vol1"]
        np.testing.assert_array_equal(f["vol1"][:], b)
        assert f["vol1"].dtype == np.uint16 and f["vol1"].compression is None
    with h5py.File(tmp_path / "dict.h5", "r") as f:
        np.testing.assert_array_equal(f["seg/ids"][:], b)
        assert list(f["img"].attrs["resolution"]) == [30, 4, 4]
    np.testing.assert_array_equal(open_volume(tmp_path / "dict.h5", dataset="img").read(), a)


def test_hdf5_rejects_nothing(tmp_path):
    with pytest.raises(OutputError, match="nothing to write"):
        write_hdf5(tmp_path / "e.h5", {})
    assert listing(tmp_path) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_roundtrip(tmp_path, zarr_format):
    a = _arr((2, 5, 6, 7), "uint32", 2)
    out = write_zarr(
        tmp_path / "v.zarr", a, chunks=(1, 2, 3, 3), zarr_format=zarr_format, attrs={"k": 1}
    )
    z = zarr.open_array(str(out), mode="r")
    assert z.metadata.zarr_format == zarr_format
    assert z.chunks == (1, 2, 3, 3) and dict(z.attrs) == {"k": 1}
    np.testing.assert_array_equal(z[...], a)
    np.testing.assert_array_equal(open_volume(out).read(), a)


@pytest.mark.parametrize("shape", [(5, 6), (3, 5, 6), (4, 5, 6), (2, 3, 5, 6), (3, 2, 5, 6)])
def test_tiff_roundtrip(tmp_path, shape):
    a = _arr(shape, "uint16", 3)
    write_tiff(tmp_path / "v.tif", a)
    vol = open_volume(tmp_path / "v.tif", allow_2d=len(shape) == 2)
    expected = a[None] if len(shape) == 2 else a
    assert vol.shape == expected.shape and vol.dtype == np.uint16
    np.testing.assert_array_equal(vol.read(), expected)
    write_tiff(tmp_path / "c.tif", a, compression="zlib")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), a)


@pytest.mark.parametrize(
    "shape,dtype",
    [((3, 5, 6), "uint8"), ((2, 5, 6), "uint16"), ((3, 2, 5, 6), "uint8"), ((4, 2, 5, 6), "uint8")],
)
def test_png_slices_roundtrip(tmp_path, shape, dtype):
    a = _arr(shape, dtype, 4)
    paths = write_png_slices(tmp_path / "s", a)
    assert [p.name for p in paths] == [f"{z:04d}.png" for z in range(shape[-3])]
    np.testing.assert_array_equal(open_volume(paths).read(), a)


def test_png_slices_bool(tmp_path):
    a = _arr((2, 4, 5), "uint8", 5) > 127
    paths = write_png_slices(tmp_path / "s", a, name_format="m_{:02d}.png")
    assert paths[1].name == "m_01.png"
    np.testing.assert_array_equal(open_volume(str(tmp_path / "s" / "m_*.png")).read(), a)


@pytest.mark.parametrize(
    "shape,dtype", [((2, 3, 4), "uint32"), ((2, 2, 3, 4), "uint8"), ((3, 4), "uint8")]
)
def test_png_slices_rejects_what_png_cannot_hold(tmp_path, shape, dtype):
    with pytest.raises(OutputError, match="PNG slices"):
        write_png_slices(tmp_path / "s", np.zeros(shape, dtype))
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- atomicity
def test_hdf5_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        write_hdf5(tmp_path / "v.h5", {"a": _arr((2, 3, 4)), "b": Exploding()})
    assert listing(tmp_path) == []


def test_hdf5_failed_overwrite_keeps_the_old_file(tmp_path):
    old = _arr((2, 3, 4), seed=6)
    write_hdf5(tmp_path / "v.h5", old)
    with pytest.raises(RuntimeError, match="boom"):
        write_hdf5(tmp_path / "v.h5", {"main": _arr((9, 9, 9)), "b": Exploding()})
    assert listing(tmp_path) == ["v.h5"]
    np.testing.assert_array_equal(open_volume(tmp_path / "v.h5").read(), old)


def test_zarr_failure_leaves_old_store(tmp_path, monkeypatch):
    old = _arr((2, 3, 4), seed=7)
    write_zarr(tmp_path / "v.zarr", old)

    def fail(self, key, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", fail)
    with pytest.raises(OutputError, match="no space left"):
        write_zarr(tmp_path / "v.zarr", _arr((5, 5, 5)))
    with pytest.raises(OutputError):
        write_zarr(tmp_path / "new.zarr", _arr((5, 5, 5)))
    monkeypatch.undo()
    assert listing(tmp_path) == ["v.zarr"]
    np.testing.assert_array_equal(open_volume(tmp_path / "v.zarr").read(), old)


def test_tiff_crash_mid_write(tmp_path, monkeypatch):
    old = _arr((2, 3, 4), seed=8)
    write_tiff(tmp_path / "v.tif", old)
    real = tifffile.imwrite

    def half_then_crash(path, data, **kwargs):
        real(path, data, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt  # not even an Exception: the temp file must still go

    monkeypatch.setattr(tifffile, "imwrite", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        write_tiff(tmp_path / "v.tif", _arr((6, 7, 8)))
    with pytest.raises(KeyboardInterrupt):
        write_tiff(tmp_path / "w.tif", _arr((6, 7, 8)))
    monkeypatch.undo()
    assert listing(tmp_path) == ["v.tif"]
    np.testing.assert_array_equal(open_volume(tmp_path / "v.tif").read(), old)


def test_png_slices_crash_after_some_slices(tmp_path, monkeypatch):
    old = _arr((2, 3, 4), seed=9)
    write_png_slices(tmp_path / "s", old)
    real_save = Image.Image.save
    saved = []

    def save(self, fp, *args, **kwargs):
        if len(saved) == 2:
            raise RuntimeError("crash on the third slice")
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(RuntimeError, match="third slice"):
        write_png_slices(tmp_path / "s", _arr((5, 3, 4)))
    monkeypatch.undo()
    assert len(saved) == 2
    assert listing(tmp_path) == ["s"]
    assert listing(tmp_path / "s") == ["0000.png", "0001.png"]
    np.testing.assert_array_equal(
        np.stack([iio.imread(tmp_path / "s" / n) for n in listing(tmp_path / "s")]), old
    )


def test_outputs_get_the_usual_permissions_not_0600(tmp_path):
    import os
    import stat

    from connectomics_data.io import atomic_output

    mask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_output(tmp_path / "d.zarr", is_dir=True) as tmp:
            (tmp / "a").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d.zarr").stat().st_mode) == 0o755
