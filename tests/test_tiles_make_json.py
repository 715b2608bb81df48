"""scripts/make_tile_json.py: infer the JSON from files, open it, compare to the volume."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _tiles_common import em_like, save_image, vast_encode

from connectomics_data.io.tiles.volume import open_tiled_volume

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tile_json", ROOT / "scripts" / "make_tile_json.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


script = _load_script()


def run(*argv: str) -> int:
    return script.main([*argv, "--quiet"])


def write_grid(root: Path, vol: np.ndarray, th: int, tw: int, name, st=(0, 0), vast=False) -> None:
    """Tiles of vol at root/name(z, row, col) with rows/cols offset by st."""
    d, h, w = vol.shape
    for z in range(d):
        for r in range(-(-h // th)):
            for c in range(-(-w // tw)):
                t = vol[z, r * th : (r + 1) * th, c * tw : (c + 1) * tw]
                save_image(root / name(z, r + st[0], c + st[1]), vast_encode(t) if vast else t)


@pytest.fixture
def vol():
    return em_like(np.random.default_rng(0), (12, 21, 30))  # 12 slices: natural order matters


def test_single_file_per_slice_dir_and_glob(tmp_path, vol):
    for z in range(vol.shape[0]):
        save_image(tmp_path / "em" / f"slice{z}.png", vol[z])  # slice10 must come after slice9
    (tmp_path / "em" / "notes.txt").write_text("not an image")
    out = tmp_path / "a.json"
    assert run("--images", str(tmp_path / "em"), "--out", str(out), "--check") == 0
    data = json.loads(out.read_text())
    assert (data["depth"], data["height"], data["width"], data["dtype"]) == (12, 21, 30, "uint8")
    assert all(os.path.isabs(p) for p in data["image"])
    np.testing.assert_array_equal(open_tiled_volume(out).read(), vol)

    out2 = tmp_path / "b.json"
    assert run("--images", str(tmp_path / "em" / "slice*.png"), "--out", str(out2)) == 0
    np.testing.assert_array_equal(open_tiled_volume(out2).read(), vol)


@pytest.mark.parametrize("st", [(0, 0), (1, 1), (2, 5)])
def test_subfolder_layout_infers_grid_and_tile_st(tmp_path, vol, st):
    write_grid(tmp_path / "stack", vol, 8, 8, lambda z, r, c: f"z{z}/{r}_{c}.png", st=st)
    out = tmp_path / "out" / "t.json"
    assert run("--images", str(tmp_path / "stack"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out), "--check", "--relative") == 0
    data = json.loads(out.read_text())
    assert data["tile_st"] == list(st) and data["tile_size"] == 8
    assert (data["n_rows"], data["n_columns"], data["height"], data["width"]) == (3, 4, 21, 30)
    assert data["image"][0] == os.path.join("..", "stack", "z0", "{row}_{column}.png")
    np.testing.assert_array_equal(open_tiled_volume(out).read(), vol)


def test_prefix_layout_zero_padded_rect_tiles_16bit(tmp_path):
    vol = em_like(np.random.default_rng(1), (3, 21, 30), "uint16")
    write_grid(tmp_path / "flat", vol, 8, 16, lambda z, r, c: f"sec{z:04d}_r{r:02d}_c{c:02d}.tif")
    out = tmp_path / "t.json"
    assert run("--images", str(tmp_path / "flat"), "--tiles-per-slice", "r{row:02d}_c{column:02d}.tif",
               "--out", str(out), "--check") == 0
    data = json.loads(out.read_text())
    assert data["tile_size"] == [8, 16] and data["dtype"] == "uint16"
    np.testing.assert_array_equal(open_tiled_volume(out).read(), vol)


def test_glob_of_tile_files_grouped_by_prefix(tmp_path, vol):
    write_grid(tmp_path / "flat", vol, 8, 8, lambda z, r, c: f"sec{z}_{r}_{c}.png")
    write_grid(tmp_path / "flat", vol[:1], 8, 8, lambda z, r, c: f"other{z}_{r}_{c}.png")
    out = tmp_path / "t.json"
    assert run("--images", str(tmp_path / "flat" / "sec*.png"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out)) == 0
    data = json.loads(out.read_text())
    assert data["image"][10].endswith("sec10_{row}_{column}.png")  # natural order of prefixes
    np.testing.assert_array_equal(open_tiled_volume(out).read(), vol)


def test_glob_of_slice_folders(tmp_path, vol):
    write_grid(tmp_path / "stack", vol, 16, 16, lambda z, r, c: f"z{z}/{r}_{c}.png")
    (tmp_path / "stack" / "other").mkdir()
    out = tmp_path / "t.json"
    assert run("--images", str(tmp_path / "stack" / "z*"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out)) == 0
    np.testing.assert_array_equal(open_tiled_volume(out).read(), vol)


def test_vast_labels(tmp_path):
    ids = np.random.default_rng(2).integers(0, 2**24, size=(2, 10, 10)).astype(np.uint32)
    write_grid(tmp_path / "lab", ids, 4, 4, lambda z, r, c: f"{z}/{r}_{c}.png", vast=True)
    out = tmp_path / "t.json"
    assert run("--images", str(tmp_path / "lab"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out), "--label-vast", "--check") == 0
    assert json.loads(out.read_text())["dtype"] == "uint32"
    np.testing.assert_array_equal(open_tiled_volume(out, label_vast=True).read(), ids)


def test_braces_in_folder_names_are_escaped(tmp_path, vol):
    sub = vol[:2]
    write_grid(tmp_path / "we{ird}", sub, 8, 8, lambda z, r, c: f"z{z}/{r}_{c}.png")
    out = tmp_path / "t.json"
    assert run("--images", str(tmp_path / "we{ird}"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out)) == 0
    np.testing.assert_array_equal(open_tiled_volume(out).read(), sub)


def test_check_reports_wrong_size_and_writes_nothing(tmp_path, vol, capsys):
    write_grid(tmp_path / "stack", vol, 8, 8, lambda z, r, c: f"z{z}/{r}_{c}.png")
    bad = tmp_path / "stack" / "z5" / "1_1.png"
    save_image(bad, np.zeros((8, 9), np.uint8))
    out = tmp_path / "t.json"
    assert run("--images", str(tmp_path / "stack"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out), "--check") == 2
    err = capsys.readouterr().err
    assert f"{bad}: shape (8, 9), expected (8, 8)" in err and "1 of 144" in err
    assert not out.exists() and not list(tmp_path.glob(".t.json*"))  # nothing half-written
    # without --check only headers of the first slice's corner tiles are read: it succeeds
    assert run("--images", str(tmp_path / "stack"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(out)) == 0


def test_missing_tile_in_grid(tmp_path, vol, capsys):
    write_grid(tmp_path / "stack", vol, 8, 8, lambda z, r, c: f"z{z}/{r}_{c}.png")
    (tmp_path / "stack" / "z3" / "2_1.png").unlink()
    assert run("--images", str(tmp_path / "stack"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(tmp_path / "t.json")) == 2
    err = capsys.readouterr().err
    assert "1 of 144 tiles are missing" in err and str(tmp_path / "stack" / "z3" / "2_1.png") in err


def test_zero_padding_mismatch_is_explained(tmp_path, vol, capsys):
    write_grid(tmp_path / "stack", vol[:1], 8, 8, lambda z, r, c: f"z{z}/{r:02d}_{c:02d}.png")
    assert run("--images", str(tmp_path / "stack"), "--tiles-per-slice", "{row}_{column}.png",
               "--out", str(tmp_path / "t.json")) == 2
    assert "zero padding" in capsys.readouterr().err


@pytest.mark.parametrize("pattern", ["{row}.png", "{row}_{col}.png", "a/{row}_{column}.png"])
def test_bad_pattern_argument(tmp_path, vol, pattern, capsys):
    save_image(tmp_path / "x" / "0_0.png", vol[0])
    assert run("--images", str(tmp_path / "x"), "--tiles-per-slice", pattern, "--out",
               str(tmp_path / "t.json")) == 2
    assert "--tiles-per-slice" in capsys.readouterr().err


def test_nothing_found(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("--images", str(tmp_path / "empty"), "--out", str(tmp_path / "t.json")) == 2
    assert run("--images", str(tmp_path / "nope*.png"), "--out", str(tmp_path / "t.json")) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and "matches nothing" in err
