"""Sliding-window engine: identity checks, a brute-force numpy/torch reference, 2D, valid conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from connectomics_data.errors import ConfigError, VolumeError
from connectomics_data.inference import (
    InferenceSettings,
    SlidingWindowInference,
    WindowPlan,
    blending_weights,
)
from connectomics_data.io.base import ArrayVolume
from connectomics_data.normalize import ImageNormalizer

NORM = ImageNormalizer(mean=0.5, std=0.5)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _volume(shape=(11, 29, 23), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _predict(array, model=_identity, **kw) -> np.ndarray:
    kw.setdefault("output_dtype", "float32")
    settings = InferenceSettings(**kw)
    return SlidingWindowInference(model, settings).predict(ArrayVolume(array), NORM)


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Independent re-statement of PyTC's grid: k * stride, the last tucked in to length - window."""
    return sorted(set(range(0, length - window + 1, stride)) | {length - window})


def reference_predict(array, model, input_size, stride, pad, blending="gaussian", unpad=True):
    """Brute force: np.pad the whole volume, loop over windows, blend centred outputs in float64."""
    x = NORM(array)
    padded = np.pad(x, [(p, p) for p in pad], mode="reflect")
    acc = weight = None
    for z in _starts(padded.shape[0], input_size[0], stride[0]):
        for y in _starts(padded.shape[1], input_size[1], stride[1]):
            for xx in _starts(padded.shape[2], input_size[2], stride[2]):
                crop = padded[z : z + input_size[0], y : y + input_size[1], xx : xx + input_size[2]]
                with torch.no_grad():
                    out = model(torch.from_numpy(np.ascontiguousarray(crop))[None, None])[0].numpy()
                osz = out.shape[1:]
                if acc is None:
                    acc = np.zeros((out.shape[0], *padded.shape))
                    weight = np.zeros(padded.shape)
                    ww = blending_weights(osz, blending).astype(np.float64)
                o = [(i - s) // 2 for i, s in zip(input_size, osz)]
                sl = (slice(z + o[0], z + o[0] + osz[0]), slice(y + o[1], y + o[1] + osz[1]), slice(xx + o[2], xx + o[2] + osz[2]))
                acc[(slice(None), *sl)] += out * ww
                weight[sl] += ww
    result = np.divide(acc, weight, out=np.zeros_like(acc), where=weight > 0)
    if unpad:
        result = result[(slice(None), *(slice(p, p + n) for p, n in zip(pad, array.shape)))]
    return result


# ---------------------------------------------------------------------------------- identity
@pytest.mark.parametrize("stride", [(1, 5, 5), (2, 7, 5), (3, 16, 16), (4, 9, 13)])
@pytest.mark.parametrize("blending", ["gaussian", "bump"])
def test_identity_model_reproduces_normalised_input(stride, blending):
    a = _volume()
    out = _predict(a, input_size=(4, 16, 16), stride=stride, pad=(1, 3, 2), blending=blending, batch_size=3)
    assert out.shape == (1, *a.shape)
    np.testing.assert_allclose(out[0], NORM(a), rtol=0, atol=2e-6)


@pytest.mark.parametrize("aug_num", [4, 8, 16])
@pytest.mark.parametrize("aug_mode", ["mean", "min", "max"])
def test_identity_model_with_tta(aug_num, aug_mode):
    a = _volume((9, 21, 21))
    out = _predict(a, input_size=(4, 12, 12), stride=(3, 5, 7), pad=(1, 2, 2), aug_num=aug_num, aug_mode=aug_mode)
    np.testing.assert_allclose(out[0], NORM(a), rtol=0, atol=2e-6)


@pytest.mark.parametrize("aug_num", [None, 4, 8, 16])
@pytest.mark.parametrize("stride", [(1, 6, 6), (1, 11, 7)])
def test_identity_model_2d(aug_num, stride):
    a = _volume((5, 27, 25))
    seen = []

    def model2d(x):
        seen.append(x.ndim)
        return x

    out = _predict(a, model2d, input_size=(1, 14, 14), stride=stride, pad=(0, 3, 3), do_2d=True, aug_num=aug_num)
    assert set(seen) == {4}  # the model sees (B, C, y, x)
    np.testing.assert_allclose(out[0], NORM(a), rtol=0, atol=2e-6)


def test_identity_without_unpad_gives_the_reflect_padded_input():
    a = _volume((6, 15, 14))
    out = _predict(a, input_size=(4, 8, 8), stride=(2, 5, 3), pad=(1, 2, 3), unpad=False)
    np.testing.assert_allclose(out[0], np.pad(NORM(a), [(1, 1), (2, 2), (3, 3)], mode="reflect"), atol=2e-6)


def test_six_value_pad_and_multichannel_input():
    a = np.stack([_volume((7, 18, 17), seed=1), _volume((7, 18, 17), seed=2)])  # (c, z, y, x)
    out = _predict(a, input_size=(4, 8, 8), stride=(3, 5, 4), pad=(0, 2, 3, 1, 1, 4))
    assert out.shape == (2, 7, 18, 17)
    np.testing.assert_allclose(out, NORM(a), atol=2e-6)


@pytest.mark.parametrize("aug_num", [None, 8, 16])
def test_valid_conv_crop_model_is_placed_centred(aug_num):
    """A model returning the centre of its input: the prediction is the input when covered."""
    a = _volume((10, 26, 22))

    def crop(x):
        return x[..., 1:-1, 3:-3, 3:-3]

    out = _predict(a, crop, input_size=(6, 16, 16), stride=(4, 10, 7), pad=(1, 3, 3), aug_num=aug_num)
    np.testing.assert_allclose(out[0], NORM(a), atol=2e-6)


# ---------------------------------------------------------------------------------- reference
def _conv(channels_out=2, valid=False, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(1, channels_out, 3, padding=0 if valid else 1)
    return conv.eval()


@pytest.mark.parametrize("valid, pad", [(False, (2, 3, 3)), (True, (2, 3, 3)), (True, (0, 0, 0))])
@pytest.mark.parametrize("blending", ["gaussian", "bump"])
def test_matches_bruteforce_reference(valid, pad, blending):
    a = _volume((9, 24, 20))
    conv = _conv(valid=valid)
    kw = dict(input_size=(5, 12, 12), stride=(2, 5, 7), pad=pad, blending=blending)
    out = _predict(a, conv, batch_size=4, **kw)
    ref = reference_predict(a, conv, (5, 12, 12), (2, 5, 7), pad, blending)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if valid and pad == (0, 0, 0):  # valid convolutions without padding leave the border empty
        assert (out[:, 0] == 0).all() and (out[:, :, :, -1] == 0).all() and (out[:, 1:-1, 1:-1, 1:-1] != 0).any()


def test_tta_mean_equals_mean_of_flipped_predictions():
    a = _volume((8, 16, 16))
    conv = _conv(1, seed=3)
    kw = dict(input_size=(8, 16, 16), stride=(8, 16, 16), pad=0)  # one window: no blending
    out = _predict(a, conv, aug_num=4, **kw)
    x = torch.from_numpy(NORM(a))[None, None]
    with torch.no_grad():
        preds = [torch.flip(conv(torch.flip(x, d)), d) if d else conv(x) for d in [(), (-1,), (-2,), (-1, -2)]]
    np.testing.assert_allclose(out[0], torch.stack(preds).mean(0)[0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_activation_applied_per_variant_before_reduction():
    a = _volume((8, 16, 16))
    conv = _conv(1, seed=4)
    settings = InferenceSettings((8, 16, 16), (8, 16, 16), aug_num=4, aug_mode="max", output_dtype="float32")
    out = SlidingWindowInference(conv, settings, activation=lambda t: t**2).predict(ArrayVolume(a), NORM)
    x = torch.from_numpy(NORM(a))[None, None]
    with torch.no_grad():
        preds = [torch.flip(conv(torch.flip(x, d)) ** 2, d) if d else conv(x) ** 2 for d in [(), (-1,), (-2,), (-1, -2)]]
    np.testing.assert_allclose(out[0], torch.stack(preds).amax(0)[0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_2d_conv_model_matches_slicewise_3d_reference():
    a = _volume((4, 20, 18))
    torch.manual_seed(5)
    conv2 = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    conv3 = torch.nn.Conv3d(1, 2, (1, 3, 3), padding=(0, 1, 1)).eval()
    with torch.no_grad():
        conv3.weight.copy_(conv2.weight[:, :, None])
        conv3.bias.copy_(conv2.bias)
    out = _predict(a, conv2, input_size=(1, 10, 10), stride=(1, 4, 6), pad=(0, 2, 2), do_2d=True)
    ref = reference_predict(a, conv3, (1, 10, 10), (1, 4, 6), (0, 2, 2))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_load_2d_single_slice_volume():
    a = _volume((1, 30, 26))
    out = _predict(a, input_size=(1, 16, 16), stride=(1, 8, 8), pad=(0, 4, 4), do_2d=True, aug_num=8)
    np.testing.assert_allclose(out[0], NORM(a), atol=2e-6)


# ---------------------------------------------------------------------------------- plumbing
def test_zarr_accumulator_is_bit_identical_to_memory(tmp_path):
    a = _volume((14, 40, 36))
    conv = _conv(3)
    kw = dict(input_size=(6, 16, 16), stride=(4, 11, 9), pad=(1, 4, 4), aug_num=4)
    mem = SlidingWindowInference(conv, InferenceSettings(**kw, output_dtype="float32"))
    disk = SlidingWindowInference(conv, InferenceSettings(**kw, output_dtype="float32", memory_budget_mb=0.05))
    a_mem = mem.predict(ArrayVolume(a), NORM)
    a_disk = disk.predict(ArrayVolume(a), NORM, work_dir=tmp_path)
    assert mem.last_stats.accumulator == "memory" and disk.last_stats.accumulator == "zarr"
    assert np.array_equal(a_mem, a_disk)
    assert list(tmp_path.iterdir()) == []  # the temporary accumulator is removed


def test_prefetch_thread_gives_same_result_and_propagates_errors():
    a = _volume((8, 20, 20))
    conv = _conv(1)
    kw = dict(input_size=(4, 8, 8), stride=(3, 5, 5), output_dtype="float32")
    r1 = SlidingWindowInference(conv, InferenceSettings(**kw, prefetch=True)).predict(ArrayVolume(a), NORM)
    r2 = SlidingWindowInference(conv, InferenceSettings(**kw, prefetch=False)).predict(ArrayVolume(a), NORM)
    assert np.array_equal(r1, r2)

    class Broken(ArrayVolume):
        def _read_inside(self, box):
            if box.start[0] > 2:
                raise OSError("disk gone")
            return super()._read_inside(box)

    with pytest.raises(OSError, match="disk gone"):
        SlidingWindowInference(conv, InferenceSettings(**kw)).predict(Broken(a), NORM)


def test_uint8_output_is_clipped_scaled_and_rounded():
    a = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    sig = ImageNormalizer(match_act="sigmoid")  # x / 255
    settings = InferenceSettings((4, 8, 8), (4, 8, 8), output_dtype="uint8")
    out = SlidingWindowInference(_identity, settings).predict(ArrayVolume(a), sig)
    assert out.dtype == np.uint8 and np.array_equal(out[0], a)
    doubled = SlidingWindowInference(lambda x: 2 * x - 0.5, settings).predict(ArrayVolume(a), sig)
    expect = np.rint(np.clip(2 * (a / 255.0) - 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.abs(doubled[0].astype(int) - expect).max() <= 1
    f16 = SlidingWindowInference(lambda x: x - 0.5, InferenceSettings((4, 8, 8), (4, 8, 8), output_dtype="float16"))
    neg = f16.predict(ArrayVolume(a), sig)
    assert neg.dtype == np.float16 and neg.min() < 0  # float outputs keep signed values


def test_input_smaller_than_window_names_file_and_sizes():
    vol = ArrayVolume(_volume((3, 20, 20)), path="/data/tiny.h5")
    inf = SlidingWindowInference(_identity, InferenceSettings((8, 16, 16), (4, 8, 8), pad=(2, 0, 0)))
    with pytest.raises(VolumeError, match=r"tiny\.h5.*\[3, 20, 20\].*\[7, 20, 20\].*\[8, 16, 16\]"):
        inf.predict(vol, NORM)


def test_config_errors():
    with pytest.raises(ConfigError, match="AUG_NUM"):
        InferenceSettings((4, 8, 8), (4, 8, 8), aug_num=3)
    with pytest.raises(ConfigError, match="square"):
        InferenceSettings((4, 8, 12), (4, 8, 8), aug_num=8)
    with pytest.raises(ConfigError, match="DO_2D"):
        InferenceSettings((4, 8, 8), (4, 8, 8), do_2d=True)
    with pytest.raises(ConfigError, match="OUTPUT_DTYPE"):
        InferenceSettings((4, 8, 8), (4, 8, 8), output_dtype="int32")
    with pytest.raises(ConfigError, match="BLENDING"):
        InferenceSettings((4, 8, 8), (4, 8, 8), blending="linear")
    inf = SlidingWindowInference(lambda x: x[..., 1:, :, :], InferenceSettings((4, 8, 8), (4, 8, 8), output_size=(4, 8, 8)))
    with pytest.raises(ConfigError, match="OUTPUT_SIZE"):
        inf.predict(ArrayVolume(_volume((4, 8, 8))), NORM)
    odd = SlidingWindowInference(lambda x: x[..., 1:, :, :], InferenceSettings((4, 8, 8), (4, 8, 8), aug_num=16))
    with pytest.raises(ConfigError, match="even"):
        odd.predict(ArrayVolume(_volume((4, 8, 8))), NORM)


def test_plan_skips_windows_that_miss_the_unpadded_region():
    plan = WindowPlan((8, 8, 8), (4, 4, 4), (2, 2, 2), pad=(6, 0, 0), unpad=True)
    ids = list(plan.windows((4, 4, 4)))
    assert len(ids) < len(plan)
    for i in range(len(plan)):
        hits = not plan.output_box(i, (4, 4, 4)).clip(plan.region_shape).is_empty
        assert hits == (i in ids)
