"""tiles_to_zarr: round trip (zarr 3 and 2), resume after an injected failure, safety checks."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from _tiles_common import em_like, write_tiles

from connectomics_data.errors import OutputError
from connectomics_data.geometry import Box
from connectomics_data.io.base import Volume
from connectomics_data.io.tiles.to_zarr import PROGRESS_NAME, volume_to_zarr
from connectomics_data.io.tiles.volume import open_tiled_volume

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (11, 21, 30)  # 11 slices with chunk z 3 -> 4 slabs, the last one 2 deep


@pytest.fixture
def tiled(tmp_path):
    full = em_like(np.random.default_rng(0), SHAPE, "uint16")
    return full, write_tiles(tmp_path / "tiles", full, tile=(8, 8))


class Recording(Volume):
    """Wraps a volume; counts reads per z-start and raises when reading z-start ``fail_at``."""

    def __init__(self, inner: Volume, fail_at: int | None = None):
        self.inner, self.fail_at, self.path = inner, fail_at, inner.path
        self.spec = getattr(inner, "spec", None)  # lets volume_to_zarr align bands to tile rows
        self.reads: Counter[int] = Counter()
        self._lock = threading.Lock()

    @property
    def shape(self):
        return self.inner.shape

    @property
    def dtype(self):
        return self.inner.dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        with self._lock:
            self.reads[box.start[0]] += 1
        if box.start[0] == self.fail_at:
            raise RuntimeError("injected failure")
        return self.inner.read(box)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_round_trip(tmp_path, tiled, zarr_format):
    full, path = tiled
    out = tmp_path / "vol.zarr"
    report = volume_to_zarr(open_tiled_volume(path), out, chunks=(3, 8, 16), zarr_format=zarr_format,
                            workers=2, progress=False)
    assert report.written == [0, 1, 2, 3] and report.skipped == []
    arr = zarr.open_array(str(out), mode="r")
    assert arr.metadata.zarr_format == zarr_format
    assert arr.chunks == (3, 8, 16) and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr[:], full)


def test_resume_after_failure_skips_finished_slabs(tmp_path, tiled):
    full, path = tiled
    out = tmp_path / "vol.zarr"
    first = Recording(open_tiled_volume(path), fail_at=6)  # slab 2 (z 6..9) fails
    with pytest.raises(RuntimeError, match="injected"):
        volume_to_zarr(first, out, chunks=(3, 16, 16), workers=1, progress=False)
    record = json.loads((out / PROGRESS_NAME).read_text())
    assert record["done"] == [0, 1]

    second = Recording(open_tiled_volume(path))
    report = volume_to_zarr(second, out, chunks=(3, 16, 16), workers=2, progress=False)
    assert report.skipped == [0, 1] and report.written == [2, 3]
    assert set(second.reads) == {6, 9}  # finished slabs 0 (z 0) and 1 (z 3) were not re-read
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], full)
    assert json.loads((out / PROGRESS_NAME).read_text())["done"] == [0, 1, 2, 3]

    third = Recording(open_tiled_volume(path))
    assert volume_to_zarr(third, out, chunks=(3, 16, 16), progress=False).written == []
    assert not third.reads


def test_settings_mismatch_and_foreign_output_refused(tmp_path, tiled):
    full, path = tiled
    out = tmp_path / "vol.zarr"
    vol = open_tiled_volume(path)
    volume_to_zarr(vol, out, chunks=(3, 16, 16), progress=False)
    with pytest.raises(OutputError, match="chunks"):
        volume_to_zarr(vol, out, chunks=(4, 16, 16), progress=False)
    (out / PROGRESS_NAME).unlink()
    with pytest.raises(OutputError, match="no .* progress record"):
        volume_to_zarr(vol, out, chunks=(3, 16, 16), progress=False)
    report = volume_to_zarr(vol, out, chunks=(4, 16, 16), overwrite=True, progress=False)
    assert report.n_slabs == 3 and report.written == [0, 1, 2]
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], full)


def test_bands_follow_tile_rows(tmp_path, tiled):
    """Each slab is read in y-bands of whole chunk rows covering whole tile rows (8 -> 8)."""
    full, path = tiled
    rec = Recording(open_tiled_volume(path))
    volume_to_zarr(rec, tmp_path / "v.zarr", chunks=(11, 4, 30), slab_chunks=1, progress=False)
    assert rec.reads == Counter({0: 3})  # rows 0-8, 8-16, 16-21


def _load_script():
    spec = importlib.util.spec_from_file_location("tiles_to_zarr", ROOT / "scripts" / "tiles_to_zarr.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_main(tmp_path, tiled, capsys):
    full, path = tiled
    out = tmp_path / "s.zarr"
    script = _load_script()
    assert script.main([str(path), str(out), "--chunks", "4", "16", "16", "--zarr-format", "2", "--quiet"]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], full)
    assert script.main([str(path), str(out), "--chunks", "5", "16", "16", "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_process_workers(tmp_path, tiled):
    full, path = tiled
    out = tmp_path / "p.zarr"
    volume_to_zarr(open_tiled_volume(path), out, chunks=(6, 16, 16), workers=2, processes=True, progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], full)
