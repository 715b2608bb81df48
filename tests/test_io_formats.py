"""Every volume source reads exactly what np.pad gives, in and out of bounds, for every pad mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectomics_data.geometry import Box
from connectomics_data.io import (
    PAD_MODES,
    ArrayVolume,
    Hdf5Volume,
    ImageStackVolume,
    ImageVolume,
    NpyVolume,
    TiffVolume,
    Volume,
    ZarrVolume,
    open_volume,
    write_hdf5,
    write_png_slices,
    write_tiff,
    write_zarr,
)

REAL_IMAGE = Path("/work/shared/data/drosophila_vnc_sstem/image.h5")
CVAL = 7


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)


def reference(full: np.ndarray, box: Box, mode: str, cval: float = CVAL) -> np.ndarray:
    """np.pad the whole volume just enough, then slice the box (channels untouched)."""
    nch = full.ndim - 3
    shape = full.shape[nch:]
    before = [max(0, -a) for a in box.start]
    after = [max(0, b - n) for b, n in zip(box.stop, shape)]
    widths = [(0, 0)] * nch + list(zip(before, after))
    kwargs = {"constant_values": cval} if mode == "constant" else {}
    padded = np.pad(full, widths, mode=mode, **kwargs)
    window = tuple(slice(a + w, b + w) for a, b, w in zip(box.start, box.stop, before))
    return padded[(slice(None),) * nch + window]


# --------------------------------------------------------------------------- builders
# Each builder writes a file under ``d`` and returns (volume, expected (c,) z, y, x array).
Builder = Callable[[Path, np.random.Generator], tuple[Volume, np.ndarray]]


def h5(shape, dtype, compression="gzip") -> Builder:
    def build(d, rng):
        arr = random_array(rng, shape, dtype)
        write_hdf5(d / "v.h5", arr, compression=compression)
        return open_volume(d / "v.h5"), arr

    return build


def h5_named(d, rng):
    arr = random_array(rng, (4, 5, 6), "uint16")
    write_hdf5(d / "v.h5", {"raw": arr, "group/label": arr.astype(np.uint32)})
    return open_volume(str(d / "v.h5") + "/raw"), arr


def h5_chunked(d, rng):
    arr = random_array(rng, (6, 9, 11), "uint32")
    with h5py.File(d / "v.h5", "w") as f:
        f.create_dataset("main", data=arr, chunks=(2, 4, 4), compression="lzf")
    return Hdf5Volume(d / "v.h5"), arr


def tiff(shape, dtype, **kwargs) -> Builder:
    def build(d, rng):
        arr = random_array(rng, shape, dtype)
        write_tiff(d / "v.tif", arr, **kwargs)
        return open_volume(d / "v.tif"), arr

    return build


def tiff_strategy(strategy: str, compression: str | None) -> Builder:
    def build(d, rng):
        arr = random_array(rng, (2, 4, 5, 6), "uint16")
        write_tiff(d / "v.tif", arr, compression=compression)
        vol = TiffVolume(d / "v.tif", strategy=strategy)
        assert vol.strategy == strategy
        return vol, arr

    return build


def tiff_imagej_zcyx(d, rng):
    arr = random_array(rng, (2, 4, 5, 6), "uint16")  # expected (c, z, y, x)
    tifffile.imwrite(d / "v.tif", arr.transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX"})
    return open_volume(d / "v.tif"), arr


def tiff_imageio_4d(d, rng):
    arr = random_array(rng, (3, 4, 5, 6), "uint8")
    iio.imwrite(d / "v.tif", arr.transpose(1, 0, 2, 3))  # imageio: (z, c, y, x), axes 'QQYX'
    return open_volume(d / "v.tif"), arr


def tiff_rgb_stack(d, rng):
    arr = random_array(rng, (3, 4, 5, 6), "uint8")
    tifffile.imwrite(d / "v.tif", np.moveaxis(arr, 0, -1), photometric="rgb", compression="zlib")
    return open_volume(d / "v.tif"), arr


def png_slices(shape, dtype) -> Builder:
    def build(d, rng):
        arr = random_array(rng, shape, dtype)
        write_png_slices(d / "slices", arr)
        return open_volume(str(d / "slices" / "*.png")), arr

    return build


def tiff_slices_u32(d, rng):
    arr = random_array(rng, (5, 4, 6), "uint32")
    paths = []
    for z, plane in enumerate(arr):
        paths.append(d / f"s{z:02d}.tif")
        tifffile.imwrite(paths[-1], plane, compression="zlib")
    return open_volume(paths), arr


def tiff_slices_threads(d, rng):
    arr = random_array(rng, (6, 5, 4), "uint16")
    for z, plane in enumerate(arr):
        tifffile.imwrite(d / f"s{z:02d}.tiff", plane)
    return ImageStackVolume(sorted(d.glob("*.tiff")), threads=3), arr


def npy(shape, dtype, fortran=False) -> Builder:
    def build(d, rng):
        arr = random_array(rng, shape, dtype)
        np.save(d / "v.npy", np.asfortranarray(arr) if fortran else arr)
        return open_volume(d / "v.npy"), arr

    return build


def zarr_array(shape, dtype, zarr_format) -> Builder:
    def build(d, rng):
        arr = random_array(rng, shape, dtype)
        write_zarr(d / "v.zarr", arr, chunks=(2,) * arr.ndim, zarr_format=zarr_format)
        return open_volume(d / "v.zarr"), arr

    return build


def zarr_group(zarr_format) -> Builder:
    def build(d, rng):
        arr = random_array(rng, (4, 6, 5), "uint16")
        g = zarr.open_group(str(d / "g.zarr"), mode="w", zarr_format=zarr_format)
        g.create_array("raw", data=arr, chunks=(2, 3, 3))
        g.create_array("labels/seg", data=arr.astype(np.uint32), chunks=(2, 3, 3))
        return open_volume(str(d / "g.zarr") + "/raw"), arr

    return build


def array(shape, dtype) -> Builder:
    def build(d, rng):
        arr = random_array(rng, shape, dtype)
        return open_volume(arr), arr

    return build


def single_png(channels: int | None) -> Builder:
    def build(d, rng):
        shape = (7, 9) if channels is None else (7, 9, channels)
        img = random_array(rng, shape, "uint8")
        iio.imwrite(d / "im.png", img)
        expected = img[None] if channels is None else np.moveaxis(img, -1, 0)[:, None]
        return open_volume(d / "im.png", allow_2d=True), expected

    return build


def single_tiff_2d(d, rng):
    img = random_array(rng, (8, 5), "uint16")
    tifffile.imwrite(d / "im.tif", img)
    return open_volume(d / "im.tif", allow_2d=True), img[None]


def single_tiff_rgb(d, rng):
    img = random_array(rng, (6, 5, 3), "uint8")
    tifffile.imwrite(d / "im.tif", img, photometric="rgb")
    return open_volume(d / "im.tif", allow_2d=True), np.moveaxis(img, -1, 0)[:, None]


def h5_2d(d, rng):
    img = random_array(rng, (6, 8), "float32")
    write_hdf5(d / "im.h5", img)
    return open_volume(d / "im.h5", allow_2d=True), img[None]


BUILDERS: dict[str, Builder] = {
    "h5_u8": h5((5, 6, 7), "uint8"),
    "h5_u16": h5((4, 7, 5), "uint16", compression=None),
    "h5_u32_label": h5((5, 4, 6), "uint32"),
    "h5_f32": h5((3, 5, 4), "float32"),
    "h5_c4d": h5((2, 4, 5, 6), "uint8"),
    "h5_thin_z": h5((1, 6, 5), "uint16"),
    "h5_named": h5_named,
    "h5_chunked": h5_chunked,
    "h5_2d": h5_2d,
    "tiff_u8": tiff((5, 6, 7), "uint8"),
    "tiff_u16": tiff((4, 7, 5), "uint16"),
    "tiff_u32_label": tiff((5, 4, 6), "uint32", compression="zlib"),
    "tiff_c4d": tiff((2, 4, 5, 6), "uint8"),
    "tiff_memmap": tiff_strategy("memmap", None),
    "tiff_pages": tiff_strategy("pages", "zlib"),
    "tiff_load": tiff_strategy("load", "zlib"),
    "tiff_imagej_zcyx": tiff_imagej_zcyx,
    "tiff_imageio_4d": tiff_imageio_4d,
    "tiff_rgb_stack": tiff_rgb_stack,
    "tiff_2d": single_tiff_2d,
    "tiff_2d_rgb": single_tiff_rgb,
    "png_u8": png_slices((5, 6, 7), "uint8"),
    "png_u16": png_slices((4, 5, 6), "uint16"),
    "png_rgb_c4d": png_slices((3, 4, 5, 6), "uint8"),
    "tiff_slices_u32": tiff_slices_u32,
    "tiff_slices_threads": tiff_slices_threads,
    "png_2d_gray": single_png(None),
    "png_2d_rgb": single_png(3),
    "npy_u8": npy((5, 6, 7), "uint8"),
    "npy_u16_fortran": npy((4, 7, 5), "uint16", fortran=True),
    "npy_u32_label": npy((5, 4, 6), "uint32"),
    "npy_c4d": npy((2, 4, 5, 6), "float32"),
    "zarr2_u8": zarr_array((5, 6, 7), "uint8", 2),
    "zarr2_u32_label": zarr_array((5, 4, 6), "uint32", 2),
    "zarr3_u16": zarr_array((4, 7, 5), "uint16", 3),
    "zarr3_c4d": zarr_array((2, 4, 5, 6), "uint8", 3),
    "zarr2_group": zarr_group(2),
    "zarr3_group": zarr_group(3),
    "array_u8": array((5, 6, 7), "uint8"),
    "array_c4d": array((2, 4, 5, 6), "uint32"),
}

EXPECTED_CLASS = {
    "h5": Hdf5Volume,
    "tiff": TiffVolume,
    "png_2d": ImageVolume,
    "png": ImageStackVolume,
    "npy": NpyVolume,
    "zarr": ZarrVolume,
    "array": ArrayVolume,
}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> dict[str, tuple[Volume, np.ndarray]]:
    out = {}
    for i, (name, build) in enumerate(BUILDERS.items()):
        d = tmp_path_factory.mktemp(name)
        out[name] = build(d, np.random.default_rng(1000 + i))
    return out


@st.composite
def boxes(draw, shape: tuple[int, ...]) -> Box:
    """Boxes anywhere from far before to far after the volume, up to 3x its size."""
    start, stop = [], []
    for n in shape:
        a = draw(st.integers(-3 * n - 3, 4 * n + 3))
        start.append(a)
        stop.append(a + draw(st.integers(1, 3 * n + 3)))
    return Box(start, stop)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_metadata_and_full_read(volumes, name):
    vol, expected = volumes[name]
    assert vol.shape == expected.shape
    assert vol.dtype == expected.dtype
    out = vol.read()
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)
    prefix = next(k for k in sorted(EXPECTED_CLASS, key=len, reverse=True) if name.startswith(k))
    if name not in ("tiff_slices_u32", "tiff_slices_threads"):
        assert isinstance(vol, EXPECTED_CLASS[prefix])


@pytest.mark.parametrize("name", sorted(BUILDERS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_read_matches_np_pad(volumes, name, data):
    vol, expected = volumes[name]
    box = data.draw(boxes(vol.spatial_shape), label="box")
    mode = data.draw(st.sampled_from(PAD_MODES), label="mode")
    out = vol.read(box, pad_mode=mode, cval=CVAL)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, reference(expected, box, mode))


@pytest.mark.parametrize("name", ["h5_u8", "tiff_pages", "png_u8", "npy_u8", "zarr3_u16"])
def test_empty_box_inside(volumes, name):
    vol, expected = volumes[name]
    out = vol.read(Box((1, 0, 2), (1, 3, 4)))
    assert out.shape == vol.channel_shape + (0, 3, 2)
    assert out.dtype == expected.dtype


def test_reads_are_independent_copies(volumes):
    """Writing into a read result never changes the source (memmaps and cached decodes)."""
    for name in ("tiff_u8", "npy_u8", "png_2d_gray", "tiff_load"):
        vol, expected = volumes[name]
        box = Box((0, 0, 0), vol.spatial_shape)
        out = vol.read(box)
        out.flags.writeable = True
        out[...] = 0
        np.testing.assert_array_equal(vol.read(box), expected)


def test_uint32_ids_above_2_24_survive(volumes):
    for name in (
        "h5_u32_label",
        "tiff_u32_label",
        "npy_u32_label",
        "zarr2_u32_label",
        "tiff_slices_u32",
    ):
        vol, expected = volumes[name]
        assert expected.max() > 2**24
        np.testing.assert_array_equal(
            vol.read(Box((-2, -2, -2), (3, 3, 3)), "reflect"),
            reference(expected, Box((-2, -2, -2), (3, 3, 3)), "reflect"),
        )


# --------------------------------------------------------------------------- options
def test_drop_channel_averages_rgb(tmp_path):
    rng = np.random.default_rng(5)
    img = random_array(rng, (6, 8, 3), "uint8")
    iio.imwrite(tmp_path / "im.png", img)
    vol = open_volume(tmp_path / "im.png", allow_2d=True, drop_channel=True)
    assert vol.shape == (1, 6, 8) and vol.dtype == np.uint8
    expected = np.rint(img.astype(np.float64).mean(-1)).astype(np.uint8)[None]
    np.testing.assert_array_equal(vol.read(), expected)


def test_drop_channel_on_4d_and_stack(tmp_path):
    rng = np.random.default_rng(6)
    arr = random_array(rng, (3, 4, 5, 6), "uint16")
    write_hdf5(tmp_path / "c.h5", arr)
    expected = np.rint(arr.astype(np.float64).mean(0)).astype(np.uint16)
    vol = open_volume(tmp_path / "c.h5", drop_channel=True)
    assert vol.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.read(), expected)
    np.testing.assert_array_equal(open_volume(arr, drop_channel=True).read(), expected)
    rgb = random_array(rng, (3, 4, 5, 6), "uint8")
    write_png_slices(tmp_path / "rgb", rgb)
    stack = open_volume(str(tmp_path / "rgb" / "*.png"), drop_channel=True)
    assert stack.shape == (4, 5, 6)
    np.testing.assert_array_equal(
        stack.read(), np.rint(rgb.astype(np.float64).mean(0)).astype(np.uint8)
    )


def test_png_palette_expands_to_rgb(tmp_path):
    from PIL import Image

    idx = np.random.default_rng(7).integers(0, 4, (5, 6), dtype=np.uint8)
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(palette)
    im.save(tmp_path / "p.png")
    vol = open_volume(tmp_path / "p.png", allow_2d=True)
    lut = np.array(palette, dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(vol.read(), np.moveaxis(lut[idx], -1, 0)[:, None])


def test_jpeg_opens_as_2d(tmp_path):
    img = np.random.default_rng(8).integers(0, 255, (16, 24), dtype=np.uint8)
    iio.imwrite(tmp_path / "im.jpg", img)
    vol = open_volume(tmp_path / "im.jpg", allow_2d=True)
    assert vol.shape == (1, 16, 24) and vol.dtype == np.uint8
    np.testing.assert_array_equal(vol.read(), iio.imread(tmp_path / "im.jpg")[None])


def test_glob_is_sorted_and_recursive(tmp_path):
    arr = random_array(np.random.default_rng(9), (4, 3, 5), "uint8")
    for z in range(4):
        sub = tmp_path / f"part{z // 2}"
        sub.mkdir(exist_ok=True)
        iio.imwrite(sub / f"{z:03d}.png", arr[z])
    vol = open_volume(str(tmp_path / "**" / "*.png"))
    assert isinstance(vol, ImageStackVolume)
    np.testing.assert_array_equal(vol.read(), arr)


def test_big_endian_tiff_reads_native(tmp_path):
    arr = random_array(np.random.default_rng(10), (3, 4, 5), "uint16")
    tifffile.imwrite(tmp_path / "be.tif", arr, byteorder=">", photometric="minisblack")
    vol = open_volume(tmp_path / "be.tif")
    assert vol.dtype == np.dtype("uint16") and vol.dtype.isnative
    np.testing.assert_array_equal(
        vol.read(Box((-1, 0, 0), (2, 4, 5)), "edge"),
        reference(arr, Box((-1, 0, 0), (2, 4, 5)), "edge"),
    )


def test_tiff_planar_three_slices_is_a_stack(tmp_path):
    """tifffile stores (3, y, x) without photometric as planar RGB ('SYX'); PyTC reads 3 slices."""
    arr = random_array(np.random.default_rng(12), (3, 4, 5), "uint8")
    tifffile.imwrite(tmp_path / "p.tif", arr, photometric="rgb", planarconfig="separate")
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        assert tif.series[0].axes == "SYX"
    vol = open_volume(tmp_path / "p.tif")
    assert vol.shape == (3, 4, 5)
    np.testing.assert_array_equal(vol.read(), arr)
    # As a slice of a stack the same file is one planar RGB image.
    stack = open_volume([tmp_path / "p.tif", tmp_path / "p.tif"])
    assert stack.shape == (3, 2, 4, 5)
    np.testing.assert_array_equal(stack.read()[:, 1], arr)


def test_hdf5_reads_only_the_clipped_box(tmp_path, monkeypatch):
    """The h5py request is the clipped box (plus the reflect source range), never the volume."""
    arr = random_array(np.random.default_rng(11), (10, 12, 14), "uint8")
    write_hdf5(tmp_path / "v.h5", arr)
    vol = open_volume(tmp_path / "v.h5")
    requested = []
    original = h5py.Dataset.__getitem__

    def spy(self, index, *args, **kwargs):
        requested.append(index)
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    vol.read(Box((-2, 3, 10), (2, 6, 16)), "constant")
    vol.read(Box((8, 0, 0), (11, 2, 2)), "reflect")
    assert requested == [
        (slice(0, 2), slice(3, 6), slice(10, 14)),
        (slice(8, 10), slice(0, 2), slice(0, 2)),
    ]


# --------------------------------------------------------------------------- real data
@pytest.mark.skipif(not REAL_IMAGE.exists(), reason="shared EM data not present")
def test_real_drosophila_image():
    vol = open_volume(REAL_IMAGE)
    assert vol.shape == (20, 1024, 1024)
    assert vol.dtype == np.uint8
    box = Box((3, 100, 517), (9, 228, 645))
    with h5py.File(REAL_IMAGE, "r") as f:
        expected = f["main"][3:9, 100:228, 517:645]
        corner = f["main"][0:5, 0:9, 0:9]
    np.testing.assert_array_equal(vol.read(box), expected)
    np.testing.assert_array_equal(
        vol.read(Box((-4, -8, -8), (4, 8, 8)), "reflect"),
        reference(corner, Box((-4, -8, -8), (4, 8, 8)), "reflect"),
    )
