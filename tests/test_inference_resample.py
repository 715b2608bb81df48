"""INFERENCE.OUTPUT_SCALE: the resampling equals PyTC's skimage resize / a whole-volume
``scipy.ndimage`` reference, and every inference path streams it block by block to the same
result as resampling the whole prediction at once."""

from __future__ import annotations

import dataclasses
import warnings

import h5py
import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.transform import resize
from yacs.config import CfgNode

from connectomics_data.errors import ConfigError
from connectomics_data.inference import (
    InferenceSettings,
    SlidingWindowInference,
    inference_settings_from_cfg,
    predict_volumes_to_file,
    run_inference_from_cfg,
)
from connectomics_data.inference.resample import AxisResample, resample_array, scaled_shape
from connectomics_data.io.base import ArrayVolume

ULP = 1.2e-7  # float32 rounding of values in [0, 1]: at most one unit in the last place


def ndimage_reference(x: np.ndarray, scale) -> np.ndarray:
    """The documented whole-volume reference: Gaussian anti-aliasing (sigma = (n/m - 1) / 2 when
    downsampling, mirror edges) then ``zoom(order=1, mode='mirror', grid_mode=True)`` (voxel
    centres: output j samples (j + 0.5) n/m - 0.5)."""
    out_shape = (x.shape[0], *scaled_shape(x.shape[1:], scale))
    factors = [n / m for n, m in zip(x.shape, out_shape)]
    g = ndimage.gaussian_filter(x, [max(0.0, (f - 1) / 2) for f in factors], mode="mirror")
    return ndimage.zoom(g, [m / n for n, m in zip(x.shape, out_shape)], order=1, mode="mirror", grid_mode=True)


CASES = [((7, 23, 31), (1, 0.5, 0.5)), ((9, 21, 17), (1, 0.25, 0.25)), ((10, 13, 11), (0.5, 0.3, 2.0)),
         ((5, 8, 9), (1, 1.5, 0.7)), ((1, 30, 30), (1, 0.25, 0.25))]


@pytest.mark.parametrize("shape,scale", CASES)
def test_resample_equals_pytc_resize_and_ndimage_reference(shape, scale):
    x = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    ours = resample_array(x, scale)
    assert ours.shape == (2, *(int(np.ceil(n * s)) for n, s in zip(shape, scale))) and ours.dtype == np.float32
    # PyTC's call (connectomics/data/augmentation/test_augmentor.py)
    pytc = resize(x, ours.shape, order=1, preserve_range=True, anti_aliasing=True)
    np.testing.assert_allclose(ours, pytc, rtol=0, atol=ULP)
    np.testing.assert_allclose(ours, ndimage_reference(x, scale), rtol=0, atol=ULP)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=3, max_size=3),
       st.lists(st.sampled_from([0.2, 0.25, 0.5, 0.7, 1.0, 1.3, 2.0]), min_size=3, max_size=3))
def test_resample_matches_ndimage_on_any_shape(shape, scale):
    x = np.random.default_rng(1).random((1, *shape)).astype(np.float32)
    np.testing.assert_allclose(resample_array(x, scale), ndimage_reference(x, scale), rtol=0, atol=ULP)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.sampled_from([0.2, 0.25, 0.5, 0.7, 1.0, 1.5, 3.0]), st.data())
def test_input_span_holds_taps_and_gaussian_radius(n, scale, data):
    ax = AxisResample.from_scale(n, scale)
    j0 = data.draw(st.integers(0, ax.m - 1))
    j1 = data.draw(st.integers(j0 + 1, ax.m))
    lo, hi = ax.input_span(j0, j1)
    assert 0 <= lo < hi <= n
    if not ax.identity:
        a, b, w = ax.taps(j0, j1)
        assert lo <= min(a.min(), b.min()) and max(a.max(), b.max()) < hi
        assert ((w >= 0) & (w < 1)).all()
        # the Gaussian needs `radius` more voxels unless the span reaches the volume's edge
        assert lo == 0 or lo <= min(a.min(), b.min()) - ax.radius
        assert hi == n or hi >= max(a.max(), b.max()) + 1 + ax.radius
    assert ax.output_cut(0) == 0 and ax.output_cut(n) == ax.m


def _conv(channels=2):
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, channels, 3, padding=1)


VOL = ArrayVolume(np.random.default_rng(0).random((10, 36, 30)).astype(np.float32))
BASE = InferenceSettings(input_size=(5, 16, 16), stride=(3, 9, 9), pad=(1, 4, 4), output_dtype="float32", batch_size=3)


@pytest.mark.parametrize("scale,budget_mb,files", [((1, 0.5, 0.5), 2048, True), ((1, 0.25, 0.25), 0.05, False),
                                                    ((0.5, 0.3, 2.0), 0.07, False)])
def test_engine_streams_to_the_whole_volume_result(tmp_path, scale, budget_mb, files):
    """In memory or through the on-disk accumulator (0.05 MB: chunks evicted to disk and read back
    for the halos), into an array or HDF5 chunks of (2, 5, 4): bit-identical to resampling the
    full-resolution prediction at once; uint8 = that, x255, rounded."""
    model = _conv()
    full = SlidingWindowInference(model, BASE, torch.sigmoid).predict(VOL)
    ref = resample_array(full, scale)
    engine = SlidingWindowInference(model, dataclasses.replace(BASE, output_scale=scale, memory_budget_mb=budget_mb),
                                    torch.sigmoid)
    out = engine.predict(VOL)
    assert engine.last_stats.accumulator == ("memory" if budget_mb > 1 else "zarr")
    np.testing.assert_array_equal(out, ref)
    if budget_mb == 0.05:
        assert engine.last_stats.extra["disk_loads"] > 0
    if not files:
        return
    predict_volumes_to_file(engine, [VOL], tmp_path / "f.h5", chunks=(2, 5, 4))
    u8 = SlidingWindowInference(model, dataclasses.replace(engine.settings, output_dtype="uint8"), torch.sigmoid)
    predict_volumes_to_file(u8, [VOL], tmp_path / "u.h5", chunks=(2, 5, 4))
    with h5py.File(tmp_path / "f.h5", "r") as f, h5py.File(tmp_path / "u.h5", "r") as g:
        np.testing.assert_array_equal(f["vol0"][:], ref)
        assert list(f.attrs["output_scale"]) == list(scale)
        np.testing.assert_array_equal(g["vol0"][:], np.rint(np.clip(resample_array(full * 255, scale), 0, 255)))


def _pointwise():
    """A 1x1x1 model: its blended prediction is sigmoid(w x + b) whatever the windows, so every
    path (volumes, singly, chunked, 2D) has the same exact answer."""
    torch.manual_seed(1)
    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        w, b = net.weight.numpy().reshape(2), net.bias.numpy()
    return net, w, b


def _cfg(tmp_path, **inference) -> CfgNode:
    cfg = CfgNode()
    cfg.MODEL = CfgNode({"INPUT_SIZE": [5, 16, 16], "OUTPUT_SIZE": [5, 16, 16]})
    cfg.DATASET = CfgNode({"PAD_SIZE": [1, 4, 4], "MATCH_ACT": "sigmoid", "NORMALIZE_RANGE": False,
                           "OUTPUT_PATH": str(tmp_path), "DATA_CHUNK_NUM": [2, 2, 3]})
    cfg.INFERENCE = CfgNode({"STRIDE": [3, 9, 9], "OUTPUT_DTYPE": "float32", "OUTPUT_NAME": "pred.h5",
                             "OUTPUT_SCALE": [1.0, 0.5, 0.5], **inference})
    return cfg


def _expected(array: np.ndarray, w, b, scale) -> np.ndarray:
    pred = 1 / (1 + np.exp(-(w[:, None, None, None] * array[None] + b[:, None, None, None])))
    return resample_array(pred.astype(np.float32), scale)


@pytest.mark.parametrize("mode", ["volumes", "singly", "chunked", "2d"])
def test_every_inference_path_resamples(tmp_path, mode):
    net, w, b = _pointwise()
    a = np.random.default_rng(2).random((12, 40, 37)).astype(np.float32)
    vols = {"/in/a.h5": ArrayVolume(a)}
    extra: dict = {}
    scale = (1.0, 0.5, 0.5)
    if mode == "singly":
        extra = {"DO_SINGLY": True, "OUTPUT_NAME": "{stem}_pred.h5"}
    elif mode == "chunked":
        extra, scale = {"DO_CHUNK_TITLE": 1, "OUTPUT_SCALE": [0.5, 0.25, 0.5]}, (0.5, 0.25, 0.5)
    elif mode == "2d":
        extra = {"INPUT_SIZE": [1, 16, 16], "OUTPUT_SIZE": [1, 16, 16], "STRIDE": [1, 9, 9], "PAD_SIZE": [0, 4, 4]}
    cfg = _cfg(tmp_path, **extra)
    model = net
    if mode == "2d":
        cfg.DATASET.DO_2D = True
        net2 = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            net2.weight.copy_(net.weight[..., 0]), net2.bias.copy_(net.bias)
        model = net2
    report = run_inference_from_cfg(cfg, model, list(vols), activation=torch.sigmoid, open_fn=vols.__getitem__)
    out_path = report.outputs[0]
    if mode == "chunked":
        got = zarr.open_group(str(out_path), mode="r")["vol0"][:]
    else:
        with h5py.File(out_path, "r") as f:
            got = f["vol0"][:]
    want = _expected(a, w, b, scale)
    assert got.shape == want.shape == (2, *(int(np.ceil(n * s)) for n, s in zip(a.shape, scale)))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_2d_ignores_z_factor_with_a_warning_and_bad_values_fail():
    cfg = _cfg("/tmp", OUTPUT_SCALE=[0.5, 0.25, 0.25], INPUT_SIZE=[1, 16, 16], OUTPUT_SIZE=[1, 16, 16])
    cfg.DATASET.DO_2D = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = inference_settings_from_cfg(cfg)
    assert s.output_scale == (1.0, 0.25, 0.25)
    assert any("z factor 0.5 is not used" in str(w.message) for w in caught)
    for bad in ([1.0, -0.5, 1.0], [1.0, 1.0], [1.0, float("nan"), 1.0]):
        with pytest.raises(ConfigError, match="INFERENCE.OUTPUT_SCALE"):
            inference_settings_from_cfg(_cfg("/tmp", OUTPUT_SCALE=bad))


def test_chunks_left_without_output_voxels_are_done_and_write_no_file(tmp_path):
    """0.1 x 30 voxels -> 3 output voxels for 5 chunks along y: two chunks own none."""
    from connectomics_data.geometry import ChunkGrid
    from connectomics_data.inference import predict_chunked

    a = np.random.default_rng(0).random((4, 30, 30)).astype(np.float32)
    s = InferenceSettings(input_size=(2, 8, 8), stride=(2, 8, 8), output_dtype="float32", output_scale=(1, 0.1, 0.1))
    res = predict_chunked(ArrayVolume(a), ChunkGrid(a.shape, (1, 5, 1), overlap=False),
                          SlidingWindowInference(lambda x: x, s), tmp_path / "o.zarr", write_chunk_files=True)
    assert res.done == [0, 1, 2, 3, 4]
    got = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["vol0"][:]
    np.testing.assert_allclose(got, resample_array(a[None], (1, 0.1, 0.1)), rtol=0, atol=ULP)
    assert len(list(tmp_path.glob("result_*.h5"))) == 3


def test_cli_inference_with_pytc_output_scale(tmp_path, capsys, monkeypatch):
    """A PyTC config with OUTPUT_SCALE [1, 0.5, 0.5] (NucMM-Zebrafish style) loads and predicts."""
    import yaml
    from test_bad_inputs import BASE_CFG, SHAPE, _h5, _merge, _save_good_checkpoint, run_cli

    monkeypatch.chdir(tmp_path)
    _h5(tmp_path / "img.h5", np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8))
    _save_good_checkpoint(tmp_path)
    cfg = _merge(BASE_CFG, {"DATASET.INPUT_PATH": str(tmp_path), "DATASET.OUTPUT_PATH": str(tmp_path / "out"),
                            "INFERENCE.OUTPUT_PATH": str(tmp_path / "pred"), "INFERENCE.OUTPUT_SCALE": [1, 0.5, 0.5]})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc, stderr, _ = run_cli(["--config-file", str(tmp_path / "cfg.yaml"), "--inference", "--checkpoint",
                             str(tmp_path / "good.pth")], capsys, monkeypatch)
    assert rc == 0, stderr
    with h5py.File(tmp_path / "pred" / "result.h5", "r") as f:
        assert f["vol0"].shape == (1, SHAPE[0], SHAPE[1] // 2, SHAPE[2] // 2)
        assert list(f.attrs["output_scale"]) == [1.0, 0.5, 0.5]
