"""Blending weight formulas and test-time augmentation variants, inverses and reduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.errors import ConfigError
from connectomics_data.geometry import Box
from connectomics_data.inference import TestTimeAugmentation, blending_weights, tta_variants
from connectomics_data.inference.blending import WeightSum


# ---------------------------------------------------------------------------------- blending
def _gaussian_reference(shape):
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    d = np.sqrt(zz**2 + yy**2 + xx**2)
    return 1e-4 + np.exp(-(d**2) / (2 * 0.2**2))


def _bump_reference(shape):
    ts = [np.linspace(0, 1, n + 2)[1:-1] for n in shape]
    zz, yy, xx = np.meshgrid(*ts, indexing="ij")
    dd = -((zz * (1 - zz)) ** -1.5) - (yy * (1 - yy)) ** -1.5 - (xx * (1 - xx)) ** -1.5
    return 1e-4 + np.exp(dd - dd.max())


@pytest.mark.parametrize("shape", [(3, 5, 7), (8, 16, 16), (2, 9, 4)])
def test_blending_matches_pytc_formulas(shape):
    g = blending_weights(shape, "gaussian")
    b = blending_weights(shape, "bump")
    assert g.dtype == np.float32 and g.shape == shape
    np.testing.assert_allclose(g, _gaussian_reference(shape), rtol=1e-6)
    np.testing.assert_allclose(b, _bump_reference(shape), rtol=1e-6)


def test_blending_is_positive_symmetric_and_peaks_in_the_centre():
    for mode in ("gaussian", "bump"):
        w = blending_weights((5, 9, 9), mode)
        assert (w > 0).all()
        assert np.array_equal(w, w[::-1, ::-1, ::-1])
        assert w[2, 4, 4] == w.max()


def test_blending_size_one_axis_is_the_centre():
    w2d = blending_weights((1, 9, 9), "gaussian")
    np.testing.assert_allclose(w2d[0], blending_weights((9, 9, 9), "gaussian")[4], rtol=1e-6)
    with pytest.raises(ValueError, match="BLENDING"):
        blending_weights((4, 4, 4), "cosine")


# ---------------------------------------------------------------------------------- TTA
@pytest.mark.parametrize(
    "aug_num, do_2d, count",
    [(None, False, 1), (0, False, 1), (4, False, 4), (8, False, 8), (16, False, 16), (4, True, 4), (8, True, 8), (16, True, 8)],
)
def test_variant_counts(aug_num, do_2d, count):
    variants = tta_variants(aug_num, do_2d)
    assert len(variants) == count == len(set(variants))
    assert variants[0].is_identity
    if do_2d:
        assert all(-3 not in v.flip_dims for v in variants)
    assert any(v.transpose for v in variants) == (count >= 8)


def test_bad_aug_settings():
    with pytest.raises(ConfigError, match="AUG_NUM"):
        tta_variants(2)
    with pytest.raises(ConfigError, match="AUG_MODE"):
        TestTimeAugmentation(4, "median")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 15), st.integers(1, 4), st.integers(1, 5), st.integers(0, 10**6))
def test_every_variant_is_inverted_exactly(k, z, n, seed):
    variant = tta_variants(16)[k]
    x = torch.from_numpy(np.random.default_rng(seed).random((2, 3, z, n, n)))
    assert torch.equal(variant.invert(variant.apply(x)), x)


def test_model_runs_once_per_variant_and_output_is_exactly_inverted():
    calls = []

    def model(x):
        calls.append(x.shape)
        return x * 3.0

    x = torch.rand(2, 1, 4, 6, 6)
    for aug_num, n in [(None, 1), (4, 4), (8, 8), (16, 16)]:
        calls.clear()
        out = TestTimeAugmentation(aug_num, "mean")(model, x)
        assert len(calls) == n
        torch.testing.assert_close(out, x * 3.0, rtol=1e-6, atol=1e-6)


def test_reduction_modes_against_stacked_reference():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    x = torch.rand(2, 1, 4, 8, 8)

    def act(t):
        return torch.sigmoid(t)

    with torch.no_grad():
        for mode, red in (("mean", lambda s: s.mean(0)), ("min", lambda s: s.amin(0)), ("max", lambda s: s.amax(0))):
            tta = TestTimeAugmentation(16, mode)
            out = tta(conv, x, act)
            stack = torch.stack([v.invert(act(conv(v.apply(x)))) for v in tta.variants])
            torch.testing.assert_close(out, red(stack), rtol=1e-6, atol=1e-6)


def test_identity_output_aliasing_the_input_is_not_modified_in_place():
    x = torch.rand(1, 1, 2, 4, 4)
    before = x.clone()
    TestTimeAugmentation(4, "mean")(lambda t: t, x)
    assert torch.equal(x, before)


@settings(max_examples=30, deadline=None)
@given(
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12)),
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    st.sampled_from(["gaussian", "bump"]),
    st.integers(0, 10**6),
)
def test_weight_sum_closed_form_equals_accumulated_weights(region, window, mode, seed):
    """Product grid of window starts (some outside the region): closed form == brute force."""
    rng = np.random.default_rng(seed)
    starts = [np.sort(rng.integers(-w, n + 1, size=rng.integers(1, 4))) for n, w in zip(region, window)]
    ww = blending_weights(window, mode).astype(np.float64)
    brute = np.zeros(region)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                box = Box.from_shape(window, (z, y, x))
                inside = box.clip(region)
                if not inside.is_empty:
                    brute[inside.slices()] += ww[inside.relative_to(box).slices()]
    closed = WeightSum(region, starts, window, mode)
    np.testing.assert_allclose(closed.block(Box.from_shape(region)), brute, rtol=1e-5, atol=1e-9)
    sub = Box((0, 0, 0), [max(1, n // 2) for n in region])
    np.testing.assert_allclose(closed.block(sub), brute[sub.slices()], rtol=1e-5, atol=1e-9)
