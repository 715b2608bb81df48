"""Every tile-JSON validation error fires with a message naming the file and the problem."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _tiles_common import em_like, save_image, vast_encode, write_tiles

from connectomics_data.errors import (
    ConnectomicsDataError,
    TileJSONError,
    VolumeError,
    VolumeNotFoundError,
)
from connectomics_data.geometry import Box
from connectomics_data.io.tiles.spec import parse_image_entry
from connectomics_data.io.tiles.volume import open_tiled_volume

VALID = {
    "image": ["s0/{row}_{column}.png"],
    "height": 20,
    "width": 27,
    "depth": 1,
    "tile_size": 8,
    "dtype": "uint8",
}


def write_json(tmp_path, data=None, text=None):
    p = tmp_path / "bad.json"
    p.write_text(text if text is not None else json.dumps(data))
    return p


def raises_tile_error(path, match, **kw):
    with pytest.raises(TileJSONError, match=match) as info:
        open_tiled_volume(path, **kw)
    assert str(path) in str(info.value)  # every message names the JSON
    assert isinstance(info.value, (ConnectomicsDataError, ValueError))
    return str(info.value)


def test_malformed_json_gives_line_and_column(tmp_path):
    p = write_json(tmp_path, text='{\n  "height": 20,\n  "width": ,\n}')
    msg = raises_tile_error(p, "malformed JSON")
    assert "line 3, column 12" in msg


def test_missing_json_file(tmp_path):
    with pytest.raises(VolumeNotFoundError, match=re.escape(str(tmp_path / "nope.json")) + ": file not found"):
        open_tiled_volume(tmp_path / "nope.json")


def test_top_level_not_an_object(tmp_path):
    raises_tile_error(write_json(tmp_path, [1, 2]), "JSON object")


def test_missing_fields_are_all_listed(tmp_path):
    data = {k: v for k, v in VALID.items() if k not in ("height", "tile_size")}
    msg = raises_tile_error(write_json(tmp_path, data), "missing required field")
    assert "'height'" in msg and "'tile_size'" in msg and "'width'" not in msg.split("required:")[0]


@pytest.mark.parametrize("dtype", ["float32", "int16", "uint", 8])
def test_bad_dtype_lists_allowed(tmp_path, dtype):
    msg = raises_tile_error(write_json(tmp_path, {**VALID, "dtype": dtype}), "'dtype'")
    for ok in ("uint8", "uint16", "uint32", "uint64"):
        assert ok in msg


def test_depth_must_match_image_count(tmp_path):
    raises_tile_error(write_json(tmp_path, {**VALID, "depth": 3}), r"'image' has 1 entries but 'depth' is 3")


@pytest.mark.parametrize("ts", [0, -8, [8], [8, 0], "8", 2.5, True])
def test_tile_size_must_be_positive(tmp_path, ts):
    raises_tile_error(write_json(tmp_path, {**VALID, "tile_size": ts}), "'tile_size'")


@pytest.mark.parametrize("key,value", [("height", 0), ("width", -1), ("depth", 1.5), ("tile_ratio", 0),
                                       ("tile_ratio", "2"), ("tile_st", [1]), ("tile_st", [0.5, 0])])
def test_other_bad_numbers(tmp_path, key, value):
    raises_tile_error(write_json(tmp_path, {**VALID, key: value}), f"'{key}'")


@pytest.mark.parametrize(
    "pattern,match",
    [
        ("s0/{row}.png", r"no \{column\}"),
        ("s0/{column}.png", r"no \{row\}"),
        ("s0/{row}_{z}.png", r"the field \{z\}"),
        ("s0/{}_{column}.png", r"the field \{\}"),
        ("s0/{row_{column}.png", "unbalanced|field"),
        ("s0/{row}_{column}}.png", "unbalanced"),
        ("s0/{row!r}_{column}.png", "conversion"),
        ("s0/{row:q}_{column}.png", "format spec"),
    ],
)
def test_bad_patterns(tmp_path, pattern, match):
    msg = raises_tile_error(write_json(tmp_path, {**VALID, "image": [pattern]}), match)
    assert "image[0]" in msg


def test_good_patterns_parse():
    assert parse_image_entry("a/{row}_{column}.png") is True
    assert parse_image_entry("a/r{row:03d}/c{column:02d}.tif") is True
    assert parse_image_entry("a/{{literal}}/im0001.png") is False
    assert parse_image_entry("a/im0001.png") is False


def test_unknown_keys_warn(tmp_path):
    full = em_like(np.random.default_rng(0), (1, 8, 8))
    p = write_tiles(tmp_path, full, tile=None, extra={"colour": "blue"})
    with pytest.warns(UserWarning, match="colour"):
        open_tiled_volume(p)


# ---------------------------------------------------------------- files
@pytest.fixture
def tiled(tmp_path):
    full = em_like(np.random.default_rng(0), (3, 20, 27))
    return full, write_tiles(tmp_path, full, tile=(8, 8))


def test_missing_files_listed_up_front(tiled):
    full, path = tiled
    root = path.parent
    gone = sorted(root.glob("s1/*.png")) + sorted(root.glob("s2/0_*.png"))  # 12 + 4
    for p in gone:
        p.unlink()
    msg = raises_tile_error(path, "16 of 36 tile files are missing")
    assert "... and 11 more" in msg
    listed = re.findall(r"^  (\S+\.png)$", msg, flags=re.M)
    assert len(listed) == 5 and all(str(root / "s1") in p for p in listed)


def test_missing_tile_on_read_is_an_error_without_fill_value(tiled):
    full, path = tiled
    tile = path.parent / "s1" / "1_2.png"
    tile.unlink()
    vol = open_tiled_volume(path, check_files=False)
    np.testing.assert_array_equal(vol.read(Box((0, 0, 0), (1, 20, 27))), full[:1])  # others fine
    with pytest.raises(TileJSONError, match=re.escape(str(tile))) as info:
        vol.read(Box((1, 8, 16), (2, 9, 17)))
    assert "fill_value" in str(info.value) and "row 1, column 2" in str(info.value)


def test_missing_tile_is_filled_with_fill_value(tiled):
    full, path = tiled
    (path.parent / "s1" / "1_2.png").unlink()
    vol = open_tiled_volume(path, fill_value=7)  # check_files is skipped with a fill value
    expect = full.copy()
    expect[1, 8:16, 16:24] = 7
    np.testing.assert_array_equal(vol.read(), expect)


def test_fill_value_must_fit_dtype(tiled):
    with pytest.raises(ValueError, match="not representable"):
        open_tiled_volume(tiled[1], fill_value=300)
    with pytest.raises(ValueError, match="not representable"):
        open_tiled_volume(tiled[1], fill_value=1.5)


def test_wrong_size_tile_names_file_and_shapes(tiled):
    full, path = tiled
    bad = path.parent / "s0" / "1_1.png"
    save_image(bad, np.zeros((8, 7), np.uint8))
    vol = open_tiled_volume(path)
    with pytest.raises(TileJSONError, match=re.escape(f"tile file {bad}")) as info:
        vol.read()
    assert "has shape (8, 7)" in str(info.value) and "expected (8, 8)" in str(info.value)


@pytest.mark.parametrize("shape,ok", [((4, 3), True), ((8, 8), True), ((4, 8), True), ((5, 3), False),
                                      ((8, 4), False), ((3, 3), False)])
def test_last_tile_may_be_the_remainder_or_full_size(tiled, shape, ok):
    """Corner tile (2, 3) covers 4 x 3 voxels; a full-size 8 x 8 (padded) tile is also accepted."""
    full, path = tiled
    tile = np.zeros(shape, np.uint8)
    tile[: min(4, shape[0]), : min(3, shape[1])] = full[0, 16:20, 24:27][: shape[0], : shape[1]]
    save_image(path.parent / "s0" / "2_3.png", tile)
    vol = open_tiled_volume(path)
    if ok:
        np.testing.assert_array_equal(vol.read(), full)
    else:
        with pytest.raises(TileJSONError, match=r"expected \(4, 3\) or \(8, 8\) padded"):
            vol.read()


def test_wrong_dtype_tile(tiled):
    full, path = tiled
    bad = path.parent / "s2" / "0_0.png"
    save_image(bad, np.full((8, 8), 1000, np.uint16))
    with pytest.raises(TileJSONError, match=re.escape(str(bad)) + r".*uint16.*uint8"):
        open_tiled_volume(path).read()


def test_16bit_tiles_in_uint16_volume_and_uint8_tiles_widen(tmp_path):
    full = em_like(np.random.default_rng(2), (2, 9, 9), "uint16")
    path = write_tiles(tmp_path, full, tile=(4, 4))
    save_image(tmp_path / "s0" / "0_0.png", np.full((4, 4), 200, np.uint8))  # uint8 fits uint16
    full[0, :4, :4] = 200
    np.testing.assert_array_equal(open_tiled_volume(path).read(), full)


def test_corrupt_tile_is_a_volume_error(tiled):
    full, path = tiled
    bad = path.parent / "s0" / "0_0.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(VolumeError, match=re.escape(str(bad))):
        open_tiled_volume(path).read()


def test_rgb_tile_in_label_volume_needs_label_vast(tmp_path):
    ids = np.random.default_rng(0).integers(0, 2**24, size=(1, 6, 6)).astype(np.uint32)
    path = write_tiles(tmp_path, ids, tile=None, vast=True)
    with pytest.raises(TileJSONError, match="label_vast=True"):
        open_tiled_volume(path).read()
    np.testing.assert_array_equal(open_tiled_volume(path, label_vast=True).read(), ids)


def test_vast_ids_must_fit_dtype(tmp_path):
    ids = np.full((1, 6, 6), 70000, np.uint32)
    path = write_tiles(tmp_path, ids, tile=None, vast=True, dtype="uint16")
    with pytest.raises(TileJSONError, match="VAST id 70000.*uint16"):
        open_tiled_volume(path, label_vast=True).read()
    small = tmp_path / "small"
    path = write_tiles(small, np.full((1, 6, 6), 60000, np.uint32), tile=None, vast=True, dtype="uint16")
    assert open_tiled_volume(path, label_vast=True).read().max() == 60000


def test_vast_on_non_rgb_uint16_tiles_is_rejected(tmp_path):
    save_image(tmp_path / "a.tif", np.zeros((6, 6, 3), np.uint16))
    p = write_json(tmp_path, {"image": ["a.tif"], "height": 6, "width": 6, "depth": 1, "tile_size": 6,
                              "dtype": "uint32"})
    with pytest.raises(TileJSONError, match="VAST labels need uint8 RGB"):
        open_tiled_volume(p, label_vast=True).read()
    assert vast_encode(np.array([[1]])).dtype == np.uint8


def test_multipage_tiff_tile_is_rejected(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 6, 6), np.uint8), photometric="minisblack")
    p = write_json(tmp_path, {"image": ["a.tif"], "height": 6, "width": 6, "depth": 1, "tile_size": 6})
    with pytest.raises(VolumeError, match=r"has shape \[3, 6, 6\]; expected a 2D image"):
        open_tiled_volume(p).read()
