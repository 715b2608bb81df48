"""Output files (layout, atomicity, ownership), name templates, DO_SINGLY and the config adapters."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import zarr
from yacs.config import CfgNode

from connectomics_data.errors import ConfigError, OutputError
from connectomics_data.inference import (
    InferenceSettings,
    SlidingWindowInference,
    build_inference_from_cfg,
    format_output_name,
    inference_settings_from_cfg,
    is_our_output,
    predict_singly,
    predict_volumes_to_file,
    run_inference_from_cfg,
    singly_order,
)
from connectomics_data.io.base import ArrayVolume
from connectomics_data.normalize import ImageNormalizer

SIG = ImageNormalizer(match_act="sigmoid")  # x / 255: uint8 output == input for the identity


def _identity(x):
    return x


def _vol(shape=(6, 20, 18), seed=0, path="<memory>"):
    return ArrayVolume(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), path=path)


def _engine(**kw):
    kw.setdefault("input_size", (4, 12, 12))
    kw.setdefault("stride", (2, 6, 6))
    kw.setdefault("pad", (1, 2, 2))
    return SlidingWindowInference(_identity, InferenceSettings(**kw))


# ---------------------------------------------------------------------------------- files
def test_h5_layout_one_dataset_per_volume(tmp_path):
    v0, v1 = _vol(seed=1), _vol((5, 14, 30), seed=2)
    path = predict_volumes_to_file(_engine(), [v0, v1], tmp_path / "result.h5", normalizers=[SIG, SIG])
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["vol0", "vol1"]
        assert f.attrs["connectomics_data"] == "prediction"
        assert f["vol0"].dtype == np.uint8 and f["vol0"].shape == (1, 6, 20, 18)
        assert np.array_equal(f["vol0"][0], v0.array) and np.array_equal(f["vol1"][0], v1.array)
    assert is_our_output(path)
    assert [p.name for p in tmp_path.iterdir()] == ["result.h5"]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_zarr_output_and_float_dtypes(tmp_path, dtype):
    v = _vol()
    path = predict_volumes_to_file(_engine(output_dtype=dtype), [v], tmp_path / "pred.zarr", fmt="zarr", normalizers=[SIG])
    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["connectomics_data"] == "prediction"
    arr = group["vol0"][:]
    assert arr.dtype == np.dtype(dtype)
    np.testing.assert_allclose(arr[0], v.array / 255.0, atol=1e-3 if dtype == "float16" else 1e-6)
    assert is_our_output(path)


def test_large_output_through_disk_accumulator_writes_same_file(tmp_path):
    v = _vol((12, 40, 36))
    conv = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    kw = dict(input_size=(4, 12, 12), stride=(3, 7, 7), pad=(1, 2, 2), output_dtype="float32")
    a = predict_volumes_to_file(SlidingWindowInference(conv, InferenceSettings(**kw)), [v], tmp_path / "a.h5", normalizers=[SIG])
    small = SlidingWindowInference(conv, InferenceSettings(**kw, memory_budget_mb=0.02))
    b = predict_volumes_to_file(small, [v], tmp_path / "b.h5", normalizers=[SIG])
    assert small.last_stats.accumulator == "zarr"
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert np.array_equal(fa["vol0"][:], fb["vol0"][:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]


def test_failed_run_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "result.h5"
    predict_volumes_to_file(_engine(), [_vol()], target, normalizers=[SIG])
    before = target.read_bytes()

    def broken(x):
        raise RuntimeError("CUDA error")

    with pytest.raises(RuntimeError, match="CUDA"):
        predict_volumes_to_file(SlidingWindowInference(broken, _engine().settings), [_vol()], target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.h5"]


def test_foreign_outputs_are_refused(tmp_path):
    foreign = tmp_path / "result.h5"
    foreign.write_text("my notes")
    with pytest.raises(OutputError, match="result.h5.*not a prediction"):
        predict_volumes_to_file(_engine(), [_vol()], foreign)
    assert foreign.read_text() == "my notes"
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["main"] = np.zeros(3)
    with pytest.raises(OutputError, match="other.h5"):
        predict_volumes_to_file(_engine(), [_vol()], tmp_path / "other.h5")
    zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    with pytest.raises(OutputError, match="x.zarr"):
        predict_volumes_to_file(_engine(), [_vol()], tmp_path / "x.zarr", fmt="zarr")
    predict_volumes_to_file(_engine(), [_vol()], foreign, normalizers=[SIG], overwrite=True)
    assert is_our_output(foreign)


def test_unwritable_output_path_names_it(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(OutputError, match="not_a_dir"):
        predict_volumes_to_file(_engine(), [_vol()], blocker / "out" / "result.h5")


# ---------------------------------------------------------------------------------- names
def test_name_templates():
    assert format_output_name("result.h5", "/d/im0007.png", 7, "h5") == "im0007_result.h5"
    assert format_output_name("{stem}_pred", "/d/im0007.png", 7, "h5") == "im0007_pred.h5"
    assert format_output_name("{index:04d}-{name}", "/d/a.tif", 3, "zarr") == "0003-a.tif.zarr"
    assert format_output_name("{stem}.h5", "/d/a.tif", 3, "zarr") == "a.zarr"
    for bad in ["{stem.__class__}", "{stem[0]}", "{stem!r}", "{}", "{arr}", "{__import__('os')}", "{stem", "x/{stem}"]:
        with pytest.raises(ConfigError, match="INFERENCE.OUTPUT_NAME"):
            format_output_name(bad, "/d/a.tif", 0, "h5")


# ---------------------------------------------------------------------------------- singly
def test_singly_order_matches_pytc():
    assert singly_order(7, 1, 3) == [1, 4]
    assert singly_order(7, 0, -2) == [6, 4, 2, 0]
    assert singly_order(3, 5, 1) == []
    with pytest.raises(ConfigError, match="STEP"):
        singly_order(3, 0, 0)


def test_singly_writes_each_file_skips_done_ones_and_shards(tmp_path):
    vols = {f"/in/im{i}.png": _vol((1, 16, 14), seed=i, path=f"/in/im{i}.png") for i in range(5)}
    opened = []

    def open_fn(path):
        opened.append(path)
        return vols[path]

    files = list(vols)
    engine = _engine(input_size=(1, 8, 8), stride=(1, 4, 4), pad=(0, 2, 2), do_2d=True)
    res = predict_singly(files, open_fn, engine, tmp_path, "{stem}_out", start_index=0, step=2, normalizer_fn=lambda v: SIG)
    assert [p.name for p in res.written] == ["im0_out.h5", "im2_out.h5", "im4_out.h5"]
    assert opened == ["/in/im0.png", "/in/im2.png", "/in/im4.png"]
    with h5py.File(tmp_path / "im2_out.h5", "r") as f:
        assert np.array_equal(f["vol0"][0], vols["/in/im2.png"].array)
    opened.clear()
    res = predict_singly(files, open_fn, engine, tmp_path, "{stem}_out", start_index=0, step=-1, normalizer_fn=lambda v: SIG)
    assert [p.name for p in res.written] == ["im3_out.h5", "im1_out.h5"]
    assert [p.name for p in res.skipped] == ["im4_out.h5", "im2_out.h5", "im0_out.h5"]
    assert opened == ["/in/im3.png", "/in/im1.png"]  # finished files are not even opened


def test_singly_refuses_foreign_file_and_name_collisions(tmp_path):
    (tmp_path / "a_result.h5").write_text("keep")
    with pytest.raises(OutputError, match="a_result.h5"):
        predict_singly(["/x/a.h5"], lambda p: _vol(), _engine(), tmp_path, "result.h5")
    with pytest.raises(ConfigError, match="same output"):
        predict_singly(["/x/a.h5", "/y/a.h5"], lambda p: _vol(), _engine(), tmp_path, "{stem}")


# ---------------------------------------------------------------------------------- config
def _cfg(**inference) -> CfgNode:
    cfg = CfgNode()
    cfg.MODEL = CfgNode({"INPUT_SIZE": [4, 12, 12], "OUTPUT_SIZE": [4, 12, 12]})
    cfg.DATASET = CfgNode(
        {"PAD_SIZE": [1, 2, 2], "DO_2D": False, "LOAD_2D": False, "MEAN": 0.5, "STD": 0.5, "MATCH_ACT": "sigmoid", "OUTPUT_PATH": "unused", "DO_CHUNK_TITLE": 0}
    )
    base = {
        "INPUT_SIZE": None, "OUTPUT_SIZE": None, "STRIDE": [2, 6, 6], "PAD_SIZE": None, "UNPAD": True, "BLENDING": "bump",
        "AUG_MODE": "mean", "AUG_NUM": None, "SAMPLES_PER_BATCH": 3, "OUTPUT_PATH": "", "OUTPUT_NAME": "result.h5",
        "DO_SINGLY": False, "DO_SINGLY_START_INDEX": 0, "DO_SINGLY_STEP": 1, "OUTPUT_SCALE": [1.0, 1.0, 1.0],
    }  # fmt: skip
    base.update(inference)
    cfg.INFERENCE = CfgNode(base)
    return cfg


def test_settings_from_cfg_reads_pytc_keys_and_defaults_for_new_ones():
    s = inference_settings_from_cfg(_cfg())
    assert (s.input_size, s.output_size, s.stride, s.pad) == ((4, 12, 12), (4, 12, 12), (2, 6, 6), (1, 2, 2))
    assert (s.blending, s.batch_size, s.output_dtype, s.memory_budget_mb) == ("bump", 3, "uint8", 2048.0)
    s = inference_settings_from_cfg(_cfg(INPUT_SIZE=[6, 16, 16], PAD_SIZE=[0, 4, 4], OUTPUT_DTYPE="float16", AUG_NUM=8))
    assert (s.input_size, s.output_size, s.pad, s.output_dtype, s.aug_num) == ((6, 16, 16), None, (0, 4, 4), "float16", 8)
    assert inference_settings_from_cfg(_cfg(OUTPUT_SCALE=[1.0, 0.5, 0.5])).output_scale == (1.0, 0.5, 0.5)
    with pytest.raises(ConfigError, match="OUTPUT_SCALE"):
        inference_settings_from_cfg(_cfg(OUTPUT_SCALE=[1.0, 0.0, 2.0]))


def test_build_sets_eval_mode_from_do_eval():
    net = torch.nn.Sequential(torch.nn.Dropout(0.5))
    build_inference_from_cfg(_cfg(), net)
    assert not net.training
    build_inference_from_cfg(_cfg(DO_EVAL=False), net)
    assert net.training


def test_run_from_cfg_standard_and_singly(tmp_path):
    vols = {"/in/a.h5": _vol(seed=3), "/in/b.h5": _vol(seed=4)}
    report = run_inference_from_cfg(_cfg(OUTPUT_PATH=str(tmp_path / "std")), _identity, list(vols), open_fn=vols.__getitem__)
    assert report.mode == "volumes" and report.outputs == [tmp_path / "std" / "result.h5"]
    with h5py.File(report.outputs[0], "r") as f:
        assert np.array_equal(f["vol1"][0], vols["/in/b.h5"].array)
    cfg = _cfg(OUTPUT_PATH=str(tmp_path / "one"), DO_SINGLY=True, OUTPUT_FORMAT="zarr", DO_SINGLY_START_INDEX=1)
    report = run_inference_from_cfg(cfg, _identity, list(vols), open_fn=vols.__getitem__)
    assert report.mode == "singly" and [p.name for p in report.outputs] == ["b_result.zarr"]


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_h5_chunk_edges_and_filters_round_trip(tmp_path, compression):
    """Chunks that do not divide the volume (padded edge chunks in direct gzip writes)."""
    v = _vol((7, 21, 19), seed=5)
    engine = _engine(output_dtype="float32")
    path = predict_volumes_to_file(
        engine, [v], tmp_path / "p.h5", normalizers=[SIG], compression=compression, chunks=(4, 8, 8)
    )
    with h5py.File(path, "r") as f:
        assert f["vol0"].chunks == (1, 4, 8, 8) and f["vol0"].compression == compression
        np.testing.assert_allclose(f["vol0"][0], v.array / 255.0, atol=1e-6)


def test_failure_mid_run_leaves_no_file_and_no_threads(tmp_path):
    import threading

    before = threading.active_count()
    calls = [0]

    def flaky(x):
        calls[0] += 1
        if calls[0] > 6:  # after the first z-slab was compressed and written
            raise RuntimeError("out of memory")
        return x

    engine = SlidingWindowInference(flaky, InferenceSettings((2, 8, 8), (2, 8, 8), batch_size=1))
    with pytest.raises(RuntimeError, match="out of memory") as excinfo:  # keeps the frames alive
        predict_volumes_to_file(engine, [_vol((40, 16, 16))], tmp_path / "r.h5", normalizers=[SIG], chunks=(2, 8, 8))
    assert excinfo.value is not None
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == before
