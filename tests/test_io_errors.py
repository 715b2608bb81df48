"""Every bad input gives one project error that names the file and what was expected."""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from connectomics_data.errors import ConfigError, VolumeError, VolumeNotFoundError
from connectomics_data.geometry import Box
from connectomics_data.io import (
    SUPPORTED_EXTENSIONS,
    ArrayVolume,
    open_volume,
    write_hdf5,
    write_png_slices,
    write_tiff,
    write_zarr,
)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- missing things
@pytest.mark.parametrize("name", ["v.h5", "v.hdf5", "v.tif", "v.png", "v.npy", "v.zarr", "noext"])
def test_missing_file_names_the_path(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(VolumeNotFoundError, match=str(path)):
        open_volume(path)


def test_missing_dataset_lists_the_available_ones(tmp_path):
    write_hdf5(
        tmp_path / "v.h5",
        {"raw": np.zeros((2, 3, 4), np.uint8), "seg": np.zeros((2, 3, 4), np.uint32)},
    )
    with pytest.raises(VolumeNotFoundError) as info:
        open_volume(tmp_path / "v.h5", dataset="label")
    msg = str(info.value)
    assert str(tmp_path / "v.h5") in msg and "'label'" in msg and "['raw', 'seg']" in msg
    with pytest.raises(VolumeNotFoundError, match="label"):
        open_volume(str(tmp_path / "v.h5") + "/label")


def test_ambiguous_and_empty_hdf5(tmp_path):
    write_hdf5(tmp_path / "v.h5", {"b": np.zeros((2, 3, 4), np.uint8), "a/c": np.zeros((2, 3, 4))})
    with pytest.raises(VolumeError, match=r"2 datasets \['a/c', 'b'\]"):
        open_volume(tmp_path / "v.h5")
    assert open_volume(tmp_path / "v.h5", dataset="a/c").shape == (2, 3, 4)
    assert open_volume(str(tmp_path / "v.h5") + "/a/c").dtype == np.float64
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(VolumeError, match="no datasets"):
        open_volume(tmp_path / "empty.h5")


def test_zarr_group_missing_and_ambiguous(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("a", data=np.zeros((2, 3, 4), np.uint8))
    g.create_array("b", data=np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(VolumeError, match=r"2 arrays \['a', 'b'\]"):
        open_volume(tmp_path / "g.zarr")
    with pytest.raises(VolumeNotFoundError, match=r"'c'.*\['a', 'b'\]"):
        open_volume(tmp_path / "g.zarr", dataset="c")
    assert open_volume(tmp_path / "g.zarr", dataset="b").shape == (2, 3, 4)


def test_empty_glob_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "*.png")
    with pytest.raises(VolumeNotFoundError, match=r"no files match the pattern .*\*\.png"):
        open_volume(pattern)


def test_empty_slice_list():
    with pytest.raises(VolumeNotFoundError, match="no files"):
        open_volume([])


def test_missing_slice_in_list(tmp_path):
    iio.imwrite(tmp_path / "0.png", np.zeros((3, 4), np.uint8))
    with pytest.raises(VolumeNotFoundError, match="1.png"):
        open_volume([tmp_path / "0.png", tmp_path / "1.png"])


def test_file_removed_before_first_read(tmp_path):
    write_hdf5(tmp_path / "v.h5", np.zeros((2, 3, 4), np.uint8))
    vol = open_volume(tmp_path / "v.h5")
    os.remove(tmp_path / "v.h5")
    with pytest.raises(VolumeNotFoundError, match="v.h5"):
        vol.read()


# --------------------------------------------------------------------------- corrupt files
def test_truncated_hdf5(tmp_path):
    path = tmp_path / "v.h5"
    write_hdf5(path, _rng(0).integers(0, 255, (8, 64, 64), dtype=np.uint8), compression=None)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(VolumeError) as info:
        open_volume(path)
    msg = str(info.value)
    assert str(path) in msg and "truncated" in msg.lower()


def test_corrupt_hdf5_chunk_fails_on_read_naming_the_file(tmp_path):
    path = tmp_path / "v.h5"
    data = _rng(1).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("main", data=data, chunks=(1, 32, 32), compression="gzip")
        info = ds.id.get_chunk_info(2)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    vol = open_volume(path)
    np.testing.assert_array_equal(vol.read(Box((0, 0, 0), (2, 32, 32))), data[:2])
    with pytest.raises(VolumeError, match=f"{path}: cannot read box"):
        vol.read(Box((1, 0, 0), (3, 32, 32)))


@pytest.mark.parametrize("name", ["v.png", "v.tif", "v.tiff", "v.jpg", "v.h5", "v.npy"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image" + bytes(range(256)) * 4)
    with pytest.raises(VolumeError) as info:
        open_volume(path, allow_2d=True)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, VolumeNotFoundError)


def test_garbage_zarr_metadata(tmp_path):
    write_zarr(tmp_path / "v.zarr", np.zeros((2, 3, 4), np.uint8))
    (tmp_path / "v.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(VolumeError, match="v.zarr"):
        open_volume(tmp_path / "v.zarr")


def test_truncated_png_slice_fails_only_when_read(tmp_path):
    arr = _rng(2).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    write_png_slices(tmp_path / "s", arr)
    bad = tmp_path / "s" / "0002.png"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # the header survives, the pixel data does not
    vol = open_volume(str(tmp_path / "s" / "*.png"))
    np.testing.assert_array_equal(vol.read(Box((0, 0, 0), (2, 32, 32))), arr[:2])
    with pytest.raises(VolumeError, match="0002.png"):
        vol.read(Box((1, 0, 0), (3, 32, 32)))


# --------------------------------------------------------------------------- wrong shapes
def test_slices_of_different_shapes_name_the_first_offender(tmp_path):
    for z in range(4):
        shape = (5, 6) if z < 2 else (5, 7)
        iio.imwrite(tmp_path / f"{z}.png", np.zeros(shape, np.uint8))
    with pytest.raises(VolumeError) as info:
        open_volume(str(tmp_path / "*.png"))
    msg = str(info.value)
    assert "2.png" in msg and "3.png" not in msg
    assert "[5, 7]" in msg and "[5, 6]" in msg


def test_slices_of_different_dtypes(tmp_path):
    iio.imwrite(tmp_path / "0.png", np.zeros((5, 6), np.uint8))
    iio.imwrite(tmp_path / "1.png", np.zeros((5, 6), np.uint16))
    with pytest.raises(VolumeError, match=r"1\.png.*uint16.*uint8"):
        open_volume(str(tmp_path / "*.png"))


def test_stack_file_as_slice(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 5, 6), np.uint8), photometric="minisblack")
    with pytest.raises(VolumeError, match="slice must be a 2D image"):
        open_volume([tmp_path / "a.tif"])


@pytest.mark.parametrize("ext", [".h5", ".tif", ".png", ".npy"])
def test_2d_file_where_3d_needed(tmp_path, ext):
    path = tmp_path / f"im{ext}"
    img = np.zeros((5, 6), np.uint8)
    {
        ".h5": lambda: write_hdf5(path, img),
        ".tif": lambda: write_tiff(path, img),
        ".png": lambda: iio.imwrite(path, img),
        ".npy": lambda: np.save(path, img),
    }[ext]()
    with pytest.raises(
        VolumeError, match=re.escape(str(path)) + r"(/main)?: is a 2D image.*allow_2d=True"
    ):
        open_volume(path)
    assert open_volume(path, allow_2d=True).shape == (1, 5, 6)


def test_2d_array_needs_allow_2d():
    with pytest.raises(VolumeError, match="2D"):
        open_volume(np.zeros((3, 4)))
    vol = open_volume(np.arange(12).reshape(3, 4), allow_2d=True)
    assert isinstance(vol, ArrayVolume) and vol.shape == (1, 3, 4)


def test_5d_and_1d_rejected(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((1, 2, 3, 4, 5)))
    with pytest.raises(VolumeError, match=r"v\.npy.*got shape \[1, 2, 3, 4, 5\]"):
        open_volume(tmp_path / "v.npy")
    np.save(tmp_path / "w.npy", np.zeros(5))
    with pytest.raises(VolumeError, match=r"w\.npy"):
        open_volume(tmp_path / "w.npy", allow_2d=True)


def test_non_numeric_dataset(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("main", data=np.array([[[b"ab"]]]))
    with pytest.raises(VolumeError, match="not a numeric type"):
        open_volume(tmp_path / "s.h5")


# --------------------------------------------------------------------------- dispatch errors
def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "v.nii"
    path.write_bytes(b"x")
    with pytest.raises(VolumeError) as info:
        open_volume(path)
    msg = str(info.value)
    assert "'.nii'" in msg
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in msg


def test_plain_directory_is_not_a_volume(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(VolumeError, match=r"not a zarr store.*\*\.png"):
        open_volume(tmp_path / "d")


def test_dataset_for_a_single_array_format(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((2, 3, 4)))
    with pytest.raises(VolumeError, match="dataset='main'"):
        open_volume(tmp_path / "v.npy", dataset="main")


def test_dataset_twice(tmp_path):
    write_hdf5(tmp_path / "v.h5", np.zeros((2, 3, 4)))
    with pytest.raises(VolumeError, match="also dataset"):
        open_volume(str(tmp_path / "v.h5") + "/main", dataset="main")


def test_errors_are_builtin_compatible(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_volume(tmp_path / "nope.h5")
    with pytest.raises(ValueError):
        open_volume(np.zeros((3, 4)))
    assert not issubclass(ConfigError, FileNotFoundError)


def test_json_dispatches_to_tiles_with_kwargs(tmp_path, monkeypatch):
    from connectomics_data.io.tiles import volume as tiles

    calls = []

    def fake(path, **kwargs):
        calls.append((path, kwargs))
        return ArrayVolume(np.zeros((1, 2, 3), np.uint8), path=path)

    monkeypatch.setattr(tiles, "open_tiled_volume", fake)
    vol = open_volume(str(tmp_path / "im.json"), cache_tiles=8, dtype="uint8")
    assert calls == [(str(tmp_path / "im.json"), {"cache_tiles": 8, "dtype": "uint8"})]
    assert vol.shape == (1, 2, 3)


def test_volume_passes_through():
    vol = ArrayVolume(np.zeros((2, 3, 4)))
    assert open_volume(vol) is vol


def test_path_objects_and_strings_agree(tmp_path):
    arr = _rng(3).integers(0, 9, (2, 3, 4)).astype(np.int16)
    write_hdf5(tmp_path / "v.h5", arr)
    np.testing.assert_array_equal(
        open_volume(Path(tmp_path / "v.h5")).read(), open_volume(str(tmp_path / "v.h5")).read()
    )
