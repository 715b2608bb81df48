"""Chunk-by-chunk inference: halo reads, one zarr output, per-chunk files, restart, sharding."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.errors import ConfigError, OutputError
from connectomics_data.geometry import Box, ChunkGrid
from connectomics_data.inference import (
    InferenceSettings,
    SlidingWindowInference,
    VolumeView,
    aligned_chunks,
    chunk_file_name,
    predict_chunked,
)
from connectomics_data.io.base import ArrayVolume
from connectomics_data.normalize import ImageNormalizer

NORM = ImageNormalizer()
SHAPE = (12, 64, 64)


def _array(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _conv():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 2, 3, padding=1).eval()


def _engine(model, **kw):
    s = dict(input_size=(4, 16, 16), stride=(2, 10, 10), pad=(1, 4, 4), output_dtype="float32")
    s.update(kw)
    return SlidingWindowInference(model, InferenceSettings(**s))


def _store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_volume_view_reads_neighbours_inside_and_padding_outside():
    a = _array((10, 12, 14))
    parent = ArrayVolume(a)
    view = VolumeView(parent, Box((2, 3, 4), (6, 8, 9)))
    assert view.shape == (4, 5, 5)
    np.testing.assert_array_equal(view.read(), a[2:6, 3:8, 4:9])
    halo = view.read(Box((-2, -3, -4), (6, 8, 9)))  # halo entirely inside the parent
    np.testing.assert_array_equal(halo, a[0:8, 0:11, 0:13])
    edge = view.read(Box((-4, 0, 0), (1, 1, 1)))  # leaves the parent: parent's reflect padding
    np.testing.assert_array_equal(edge, np.pad(a, 2, mode="reflect")[0:5, 5:6, 6:7])


def test_chunks_equal_independent_per_chunk_predictions(tmp_path):
    a = _array()
    vol = ArrayVolume(a)
    grid = ChunkGrid(SHAPE, (2, 2, 2))
    res = predict_chunked(vol, grid, _engine(_conv()), tmp_path / "pred.zarr", normalizer=NORM)
    assert res.done == list(range(8)) and res.skipped == []
    out = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")["vol0"][:]
    assert out.shape == (2, *SHAPE)
    halo = (1, 4, 4)
    padded = np.pad(a, [(h, h) for h in halo], mode="reflect")
    for box in grid:
        # Reference: the chunk plus halo cut out of np.pad(volume), predicted without padding.
        sub = padded[tuple(slice(s, e + 2 * h) for s, e, h in zip(box.start, box.stop, halo))]
        ref = _engine(_conv(), pad=0, unpad=False).predict(ArrayVolume(sub), NORM)
        ref = ref[:, 1:-1, 4:-4, 4:-4]
        np.testing.assert_array_equal(out[(slice(None), *box.slices())], ref)


def test_identity_chunked_reproduces_the_volume(tmp_path):
    a = _array((10, 40, 36))
    grid = ChunkGrid(a.shape, (3, 2, 3))
    predict_chunked(ArrayVolume(a), grid, _engine(lambda x: x, aug_num=8), tmp_path / "id.zarr", normalizer=NORM)
    out = zarr.open_group(str(tmp_path / "id.zarr"), mode="r")["vol0"][:]
    np.testing.assert_allclose(out[0], NORM(a), atol=2e-6)


def test_chunked_output_carries_ome_zarr_metadata(tmp_path):
    from connectomics_data.io import open_volume

    vol = ArrayVolume(_array((6, 20, 20)))
    vol.voxel_size = (40.0, 8.0, 8.0)
    predict_chunked(vol, ChunkGrid(vol.shape, (1, 2, 1)), _engine(lambda x: x), tmp_path / "p.zarr", normalizer=NORM)
    (ms,) = zarr.open_group(str(tmp_path / "p.zarr"), mode="r").attrs["ome"]["multiscales"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 40.0, 8.0, 8.0]
    assert open_volume(tmp_path / "p.zarr").voxel_size == (40.0, 8.0, 8.0)


class _Crash(Exception):
    pass


def _counting(model, crash_after=None):
    count = [0]

    def run(x):
        count[0] += 1
        if crash_after is not None and count[0] > crash_after:
            raise _Crash()
        return model(x)

    return run, count


@pytest.mark.parametrize("budget", [2048.0, 0.01])
def test_interrupted_run_restarts_to_identical_bytes(tmp_path, budget):
    a = _array()
    grid = ChunkGrid(SHAPE, (2, 2, 2))
    conv = _conv()
    kw = dict(normalizer=NORM, write_chunk_files=True, chunk_file_stem="result")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    counted, count = _counting(conv)
    calls_after = []
    predict_chunked(
        ArrayVolume(a), grid, _engine(counted, memory_budget_mb=budget), ref_dir / "pred.zarr",
        on_chunk_done=lambda cid: calls_after.append(count[0]), **kw,
    )  # fmt: skip
    # Crash half way through the 4th chunk, after part of its data was written.
    crash_at = (calls_after[2] + calls_after[3]) // 2
    crashing, _ = _counting(conv, crash_after=crash_at)
    with pytest.raises(_Crash):
        predict_chunked(ArrayVolume(a), grid, _engine(crashing, memory_budget_mb=budget), run_dir / "pred.zarr", **kw)
    markers = sorted(p.name for p in (run_dir / "pred.zarr.progress").iterdir())
    assert markers == [f"chunk_{i:06d}.json" for i in range(3)]
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]  # no temporary leftovers
    res = predict_chunked(ArrayVolume(a), grid, _engine(conv, memory_budget_mb=budget), run_dir / "pred.zarr", **kw)
    assert res.skipped == [0, 1, 2] and res.done == [3, 4, 5, 6, 7]
    assert _store_bytes(run_dir / "pred.zarr") == _store_bytes(ref_dir / "pred.zarr")
    assert _store_bytes(run_dir / "pred.zarr.progress") == _store_bytes(ref_dir / "pred.zarr.progress")
    names = sorted(p.name for p in run_dir.glob("*.h5"))
    assert names == sorted(chunk_file_name("result", b) for b in grid) and "result_0-6-0-32-0-32.h5" in names
    for name in names:
        with h5py.File(run_dir / name, "r") as f, h5py.File(ref_dir / name, "r") as g:
            assert np.array_equal(f["vol0"][:], g["vol0"][:])


def test_rank_world_shards_and_jobs_fill_one_volume(tmp_path):
    a = _array()
    grid = ChunkGrid(SHAPE, (1, 2, 2))
    assert aligned_chunks(grid) == ((12, 32, 32), True)
    engine = _engine(_conv())
    done = []
    for rank in range(3):
        res = predict_chunked(ArrayVolume(a), grid, engine, tmp_path / "p.zarr", normalizer=NORM, rank_world=(rank, 3))
        done.append(res.done)
    assert done == [[0], [1], [2, 3]]
    whole = predict_chunked(ArrayVolume(a), grid, engine, tmp_path / "w.zarr", normalizer=NORM)
    assert whole.done == [0, 1, 2, 3]
    assert _store_bytes(tmp_path / "p.zarr") == _store_bytes(tmp_path / "w.zarr")


def test_unalignable_grid_refused_for_several_jobs(tmp_path):
    grid = ChunkGrid((12, 90, 90), (1, 3, 3))  # cuts at 30, 60: no common chunk >= 32
    chunks, aligned = aligned_chunks(grid)
    assert not aligned
    with pytest.raises(ConfigError, match="CHUNK_IND_SPLIT"):
        predict_chunked(ArrayVolume(_array((12, 90, 90))), grid, _engine(_conv()), tmp_path / "p.zarr", rank_world=(0, 2))


def test_foreign_or_mismatched_output_refused(tmp_path):
    a = _array()
    grid = ChunkGrid(SHAPE, (1, 2, 2))
    (tmp_path / "f.zarr").mkdir()
    (tmp_path / "f.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="f.zarr"):
        predict_chunked(ArrayVolume(a), grid, _engine(_conv()), tmp_path / "f.zarr", normalizer=NORM)
    predict_chunked(ArrayVolume(a), grid, _engine(_conv()), tmp_path / "p.zarr", normalizer=NORM, chunk_indices=[0])
    with pytest.raises(OutputError, match="dtype"):
        predict_chunked(ArrayVolume(a), grid, _engine(_conv(), output_dtype="uint8"), tmp_path / "p.zarr", normalizer=NORM)
    res = predict_chunked(ArrayVolume(a), grid, _engine(_conv(), output_dtype="uint8"), tmp_path / "p.zarr", normalizer=NORM, overwrite=True)
    assert res.done == [0, 1, 2, 3]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(8, 600), st.integers(1, 6)), min_size=3, max_size=3))
def test_aligned_chunks_put_boundaries_on_every_chunk_cut(axes):
    shape = tuple(n for n, _ in axes)
    num = tuple(min(k, n) for n, k in axes)
    grid = ChunkGrid(shape, num)
    chunks, aligned = aligned_chunks(grid)
    assert all(1 <= c <= n for c, n in zip(chunks, shape))
    if aligned:
        for box in grid:
            for s, e, c, n in zip(box.start, box.stop, chunks, shape):
                assert s % c == 0 and (e % c == 0 or e == n)


def test_run_from_cfg_chunk_mode(tmp_path):
    from yacs.config import CfgNode

    from connectomics_data.inference import run_inference_from_cfg

    a = _array((12, 64, 64))
    cfg = CfgNode()
    cfg.MODEL = CfgNode({"INPUT_SIZE": [4, 16, 16], "OUTPUT_SIZE": [4, 16, 16]})
    cfg.DATASET = CfgNode({
        "PAD_SIZE": [1, 4, 4], "DO_CHUNK_TITLE": 1, "DATA_CHUNK_NUM": [1, 2, 2], "CHUNK_IND_SPLIT": "1-2",
        "MATCH_ACT": "sigmoid", "OUTPUT_PATH": str(tmp_path),
    })  # fmt: skip
    cfg.INFERENCE = CfgNode({"STRIDE": [2, 10, 10], "OUTPUT_NAME": "pred.h5", "OUTPUT_DTYPE": "uint8", "WRITE_CHUNK_FILES": True})
    report = run_inference_from_cfg(cfg, lambda x: x, ["/data/tiles.json"], open_fn=lambda p: ArrayVolume(a))
    assert report.mode == "chunked" and report.outputs == [tmp_path / "pred.zarr"]
    out = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")["vol0"][:]
    assert np.array_equal(out[0, :, 32:, :], a[:, 32:, :])  # rank 1 of 2: chunks 2 and 3 (y >= 32)
    assert (out[0, :, :32, :] == 0).all()
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["pred_0-12-32-64-0-32.h5", "pred_0-12-32-64-32-64.h5"]
