"""Precomputed, N5, OME-Zarr (0.4, 0.5) and sharded zarr v3: exact reads, voxel sizes, levels.

Every volume is written by the format's own library (TensorStore, zarr-python; see
``_pyramids_common``); every read of a random box, inside and across the border, equals
``np.pad`` of the array for every pad mode.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from _pyramids_common import CHANNEL, SPACE, n5, ome_zarr, precomputed, zarr_sharded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_io_formats import CVAL, boxes, random_array, reference

from connectomics_data.errors import VolumeError, VolumeNotFoundError
from connectomics_data.geometry import Box
from connectomics_data.io import (
    PAD_MODES,
    N5Volume,
    PrecomputedVolume,
    ZarrVolume,
    open_volume,
    worker_start_method,
    write_hdf5,
)

Levels = list[tuple[np.ndarray, tuple | None]]


def _two(rng, shape, dtype, channels: int | None = None) -> list[np.ndarray]:
    full = random_array(rng, ((channels,) if channels else ()) + shape, dtype)
    return [full, np.ascontiguousarray(full[..., ::2, ::2])]


def build_all(root: Path) -> dict[str, tuple[str, Levels]]:
    rng = np.random.default_rng(12)
    out: dict[str, tuple[str, Levels]] = {}
    res2 = [(40.0, 4.0, 4.0), (40.0, 8.0, 8.0)]

    levels = _two(rng, (5, 10, 12), "uint8")
    out["pc_raw"] = (str(root / "pc_raw"), precomputed(root / "pc_raw", levels, res2, offset=(3, 1, 2)))
    levels = [random_array(rng, (4, 16, 16), "uint8")]
    out["pc_jpeg"] = (
        "precomputed://file://" + str(root / "pc_jpeg"),
        precomputed(root / "pc_jpeg", levels, [(30.0, 6.0, 6.0)], encoding="jpeg", chunk=(8, 8, 2)),
    )
    levels = _two(rng, (5, 10, 12), "uint64")
    out["pc_seg_cseg_sharded"] = (
        str(root / "pc_seg_cseg_sharded"),
        precomputed(root / "pc_seg_cseg_sharded", levels, res2, "compressed_segmentation", "segmentation", sharded=True),
    )
    levels = _two(rng, (6, 8, 10), "uint64")
    out["pc_seg_cseg"] = (
        str(root / "pc_seg_cseg"),
        precomputed(root / "pc_seg_cseg", levels, res2, "compressed_segmentation", "segmentation"),
    )
    levels = _two(rng, (5, 9, 7), "uint32")
    out["pc_seg_raw_sharded"] = (
        str(root / "pc_seg_raw_sharded"),
        precomputed(root / "pc_seg_raw_sharded", levels, res2, "raw", "segmentation", sharded=True),
    )
    levels = _two(rng, (4, 6, 8), "float32", channels=2)
    out["pc_2channels"] = (str(root / "pc_2ch"), precomputed(root / "pc_2ch", levels, res2))

    arr = random_array(rng, (5, 7, 9), "uint16")
    n5(root / "c.n5" / "volumes" / "raw", arr, resolution_xyz=[4, 5, 40])
    out["n5_gzip"] = (str(root / "c.n5" / "volumes" / "raw"), [(arr, (40.0, 5.0, 4.0))])
    arr = random_array(rng, (2, 4, 5, 6), "uint8")
    n5(root / "d.n5" / "raw", arr, compression="raw")
    out["n5_channels"] = (str(root / "d.n5" / "raw"), [(arr, None)])

    levels = _two(rng, (5, 10, 12), "uint16")
    ome_zarr(root / "a.ome.zarr", levels, [[40, 4, 4], [40, 8, 8]], SPACE, "0.4")
    out["ome04"] = (str(root / "a.ome.zarr"), list(zip(levels, res2)))
    levels = _two(rng, (4, 6, 10), "uint8", channels=2)
    micro = [{**a, "unit": "micrometer"} for a in SPACE]
    ome_zarr(root / "b.ome.zarr", levels, [[1, 0.04, 0.004, 0.004], [1, 0.04, 0.008, 0.008]], [CHANNEL, *micro], "0.5")
    out["ome05"] = (str(root / "b.ome.zarr"), list(zip(levels, res2)))

    arr = random_array(rng, (6, 11, 13), "uint32")
    zarr_sharded(root / "sharded.zarr", arr)
    out["zarr3_sharded"] = (str(root / "sharded.zarr"), [(arr, None)])
    return out


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory) -> dict[str, tuple[str, Levels]]:
    return build_all(tmp_path_factory.mktemp("pyramids"))


def _approx(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.allclose(a, b))


@pytest.mark.parametrize(
    "name",
    ["pc_raw", "pc_jpeg", "pc_seg_cseg_sharded", "pc_seg_cseg", "pc_seg_raw_sharded", "pc_2channels",
     "n5_gzip", "n5_channels", "ome04", "ome05", "zarr3_sharded"],
)
def test_levels_by_index_and_voxel_size(pyramids, name):
    path, levels = pyramids[name]
    for i, (expected, size) in enumerate(levels):
        chosen = [open_volume(path, scale=i)]
        if size is not None:
            chosen.append(open_volume(path, scale=size))
            chosen.append(open_volume(path, scale=list(size)))
        for vol in chosen:
            assert vol.shape == expected.shape
            assert vol.dtype == expected.dtype
            assert _approx(vol.voxel_size, size), (vol.voxel_size, size)
            np.testing.assert_array_equal(vol.read(), expected)
    default = open_volume(path)
    assert default.shape == levels[0][0].shape and _approx(default.voxel_size, levels[0][1])
    kind = {"pc": PrecomputedVolume, "n5": N5Volume, "om": ZarrVolume, "za": ZarrVolume}[name[:2]]
    assert isinstance(default, kind)


def test_uint64_ids_survive(pyramids):
    _, levels = pyramids["pc_seg_cseg_sharded"]
    assert levels[0][0].max() > 2**62
    vol = open_volume(pyramids["pc_seg_cseg_sharded"][0])
    assert vol.dtype == np.uint64
    np.testing.assert_array_equal(vol.read(), levels[0][0])


CASES = [
    (name, level)
    for name, level in [
        ("pc_raw", 0), ("pc_raw", 1), ("pc_jpeg", 0), ("pc_seg_cseg_sharded", 0),
        ("pc_seg_cseg_sharded", 1), ("pc_seg_cseg", 1), ("pc_seg_raw_sharded", 0), ("pc_2channels", 1),
        ("n5_gzip", 0), ("n5_channels", 0), ("ome04", 1), ("ome05", 0), ("ome05", 1),
        ("zarr3_sharded", 0),
    ]
]


@pytest.mark.parametrize("name,level", CASES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_matches_np_pad(pyramids, name, level, data):
    path, levels = pyramids[name]
    expected = levels[level][0]
    vol = open_volume(path, scale=level)
    box = data.draw(boxes(vol.spatial_shape), label="box")
    mode = data.draw(st.sampled_from(PAD_MODES), label="mode")
    out = vol.read(box, pad_mode=mode, cval=CVAL)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, reference(expected, box, mode))


def test_paths_inside_containers(pyramids, tmp_path):
    path, levels = pyramids["n5_gzip"]
    container = path.rsplit("/volumes", 1)[0]
    np.testing.assert_array_equal(open_volume(container, "volumes/raw").read(), levels[0][0])
    np.testing.assert_array_equal(open_volume(container).read(), levels[0][0])  # the only dataset
    ome, ome_levels = pyramids["ome04"]
    lvl1 = open_volume(ome + "/1")  # a level path: voxel size from the group's metadata
    assert lvl1.voxel_size == (40.0, 8.0, 8.0)
    np.testing.assert_array_equal(lvl1.read(), ome_levels[1][0])
    pc, pc_levels = pyramids["pc_raw"]
    assert open_volume(pc, "8_8_40").voxel_size == (40.0, 8.0, 8.0)


def test_hdf5_resolution_and_single_level_scale(tmp_path):
    arr = np.zeros((3, 4, 5), np.uint8)
    write_hdf5(tmp_path / "v.h5", arr)
    import h5py

    with h5py.File(tmp_path / "v.h5", "r+") as f:
        f["main"].attrs["resolution"] = [40, 4, 4]
    vol = open_volume(tmp_path / "v.h5", scale=(40, 4, 4))
    assert vol.voxel_size == (40.0, 4.0, 4.0)
    assert open_volume(tmp_path / "v.h5", scale=0).voxel_size == (40.0, 4.0, 4.0)
    with pytest.raises(VolumeError, match=r"v.h5.*level 1 does not exist.*\(40, 4, 4\) nm"):
        open_volume(tmp_path / "v.h5", scale=1)
    np.save(tmp_path / "v.npy", arr)
    assert open_volume(tmp_path / "v.npy").voxel_size is None
    assert open_volume(tmp_path / "v.npy", scale=(40, 4, 4)).voxel_size is None  # nothing contradicts
    with pytest.raises(VolumeError, match=r"v.npy: scale level 1 does not exist.*level 0: unknown"):
        open_volume(tmp_path / "v.npy", scale=1)


# --------------------------------------------------------------------------- processes
class _Boxes(torch.utils.data.Dataset):
    def __init__(self, volumes):
        self.volumes = volumes

    def __len__(self):
        return 8

    def __getitem__(self, i):
        vol = self.volumes[i % len(self.volumes)]
        box = Box((i - 2, -1, 1), (i + 1, 4, 6))
        return torch.from_numpy(vol.read(box, "reflect").astype(np.int64)), os.getpid()


def test_reads_in_two_dataloader_workers(pyramids):
    """TensorStore volumes read in 2 workers, also after the main process has read them."""
    names = ["pc_seg_cseg_sharded", "n5_gzip", "ome05"]
    volumes = [open_volume(pyramids[n][0], scale=0) for n in names]
    for vol in volumes:  # the main process uses TensorStore first
        vol.read(Box((0, 0, 0), (1, 1, 1)))
    dataset = _Boxes(volumes)
    assert worker_start_method(dataset).get_start_method() == "forkserver"
    assert worker_start_method(_Boxes([open_volume(np.zeros((2, 3, 4)))])) is None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context=worker_start_method(dataset)
    )
    pids = set()
    for i, (block, pid) in enumerate(loader):
        expected = pyramids[names[i % 3]][1][0][0].astype(np.int64)
        box = Box((i - 2, -1, 1), (i + 1, 4, 6))
        np.testing.assert_array_equal(block.numpy(), reference(expected, box, "reflect"))
        pids.add(int(pid))
    assert len(pids) == 2 and os.getpid() not in pids


def test_forked_child_gets_a_clear_error(pyramids):
    vol = open_volume(pyramids["pc_raw"][0])
    vol.read(Box((0, 0, 0), (1, 1, 1)))
    fresh = open_volume(pyramids["n5_gzip"][0])
    pid = os.fork()
    if pid == 0:  # child: TensorStore ran in the parent; a read must raise, not abort
        code = 3
        try:
            fresh.read(Box((0, 0, 0), (1, 1, 1)))
        except VolumeError as err:
            code = 0 if "forked" in str(err) and "forkserver" in str(err) else 4
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --------------------------------------------------------------------------- bad input
def test_missing_info(tmp_path):
    (tmp_path / "pc").mkdir()
    with pytest.raises(VolumeNotFoundError, match=r"pc: no 'info' file"):
        open_volume("precomputed://file://" + str(tmp_path / "pc"))


def _copy(pyramids, name, tmp_path) -> Path:
    src = Path(pyramids[name][0].replace("precomputed://file://", ""))
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_unknown_encoding(pyramids, tmp_path):
    d = _copy(pyramids, "pc_raw", tmp_path)
    info = json.loads((d / "info").read_text())
    info["scales"][1]["encoding"] = "webp2"
    (d / "info").write_text(json.dumps(info))
    with pytest.raises(VolumeError, match=r"info: scales\[1\]: unknown encoding 'webp2'"):
        open_volume(d)


def test_truncated_chunk_names_file_and_box(pyramids, tmp_path):
    d = _copy(pyramids, "pc_raw", tmp_path)
    chunk = sorted((d / "4_4_40").iterdir())[0]
    chunk.write_bytes(chunk.read_bytes()[:5])
    vol = open_volume(d)
    with pytest.raises(VolumeError) as err:
        vol.read(Box((0, 0, 0), (5, 10, 12)))
    assert chunk.name in str(err.value) and "Box(start=[0, 0, 0], stop=[5, 10, 12])" in str(err.value)


def test_corrupt_n5_chunk(pyramids, tmp_path):
    src = Path(pyramids["n5_gzip"][0])
    dst = tmp_path / "c.n5"
    shutil.copytree(src, dst / "raw")
    chunk = dst / "raw" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20] + b"garbage")
    with pytest.raises(VolumeError, match=r"c.n5/raw: cannot read box .*raw/0/0/0"):
        open_volume(dst / "raw").read()


def test_ome_group_without_multiscales(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    group.create_array("0", shape=(2, 3, 4), dtype="uint8")
    group.attrs.update({"ome": {"version": "0.5"}})
    with pytest.raises(VolumeError, match=r"g.zarr: is not an OME-Zarr image .*no 'multiscales'"):
        open_volume(tmp_path / "g.zarr")


@pytest.mark.parametrize("name", ["pc_raw", "ome04", "ome05"])
def test_scale_out_of_range_and_unmatched(pyramids, name):
    path = pyramids[name][0]
    with pytest.raises(VolumeError, match=r"level 2 does not exist; the volume has 2 level\(s\) "
                       r"\(level 0: \(40, 4, 4\) nm, level 1: \(40, 8, 8\) nm\)"):
        open_volume(path, scale=2)
    with pytest.raises(VolumeError, match=r"no level has the voxel size \(40, 16, 16\) nm; the volume has level 0"):
        open_volume(path, scale=(40, 16, 16))
    with pytest.raises(VolumeError, match="voxel size is three positive numbers"):
        open_volume(path, scale=(40, 0, 4))


def test_2d_where_3d_is_needed(tmp_path):
    arr = np.arange(30, dtype=np.uint8).reshape(5, 6)
    n5(tmp_path / "flat.n5" / "img", arr)
    with pytest.raises(VolumeError, match=r"flat.n5/img: is a 2D image of shape \[5, 6\]"):
        open_volume(tmp_path / "flat.n5" / "img")
    np.testing.assert_array_equal(open_volume(tmp_path / "flat.n5" / "img", allow_2d=True).read(), arr[None])
    ome_zarr(tmp_path / "flat.ome.zarr", [arr], [[4, 4]], SPACE[1:], "0.5")
    with pytest.raises(VolumeError, match=r"flat.ome.zarr/0: is a 2D image"):
        open_volume(tmp_path / "flat.ome.zarr")


# --------------------------------------------------------------------------- metadata writer
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_write_ome_zarr_metadata_round_trip(tmp_path, zarr_format):
    from connectomics_data.io import write_ome_zarr_metadata

    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=zarr_format)
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    group.create_array("vol0", data=a, chunks=(1, 3, 4, 5))
    group.create_array("vol1", data=a[:1], chunks=(1, 3, 4, 5))
    write_ome_zarr_metadata(group, "vol0", "czyx", (30, 4, 4))
    write_ome_zarr_metadata(group, "vol1", "czyx", None)
    write_ome_zarr_metadata(str(tmp_path / "p.zarr"), "vol0", "czyx", (40, 8, 8))  # replaces vol0's
    attrs = dict(zarr.open_group(str(tmp_path / "p.zarr"), mode="r").attrs)
    multiscales = attrs["ome"]["multiscales"] if zarr_format == 3 else attrs["multiscales"]
    assert [m["name"] for m in multiscales] == ["vol1", "vol0"]
    assert multiscales[1]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 40.0, 8.0, 8.0]
    assert all("unit" not in ax for ax in multiscales[0]["axes"])  # no voxel size: no unit
    assert (attrs["ome"]["version"] if zarr_format == 3 else multiscales[0]["version"]) == {3: "0.5", 2: "0.4"}[zarr_format]
    vol = open_volume(tmp_path / "p.zarr")  # multiscales[0]: vol1, without voxel size
    assert vol.shape == (1, 3, 4, 5) and vol.voxel_size == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="axes must be distinct letters"):
        write_ome_zarr_metadata(group, "vol0", "tczyx", None)


def test_tensorstore_volumes_pickle_without_handles(pyramids):
    import pickle

    vol = open_volume(pyramids["pc_seg_cseg_sharded"][0], scale=1)
    vol.read(Box((0, 0, 0), (1, 2, 2)))
    assert vol.is_open
    copy = pickle.loads(pickle.dumps(vol))
    assert not copy.is_open and copy.voxel_size == vol.voxel_size
    np.testing.assert_array_equal(copy.read(), pyramids["pc_seg_cseg_sharded"][1][1][0])
