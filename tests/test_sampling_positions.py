"""PositionSampler: volume choice ('automatic' / 'element'), uniform positions, bounds, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from connectomics_data.sampling import PositionSampler, crop_counts, sample_rng
from connectomics_data.sampling.seeding import STREAM_AUGMENT, STREAM_POSITION


def _draws(sampler: PositionSampler, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sampler.draw(rng) for _ in range(n)]


def test_crop_counts_per_axis():
    counts = crop_counts((3, 4, 5), (2, 2, 2), ((1, 0), (0, 1), (1, 1)))
    assert counts.tolist() == [3, 4, 6]
    assert counts.dtype == np.int64


def test_automatic_probabilities_are_proportional_to_positions():
    shapes = [(4, 10, 10), (4, 20, 10), (6, 10, 10)]
    sampler = PositionSampler(shapes, (2, 5, 5), ((0, 0),) * 3)
    totals = np.array([3 * 6 * 6, 3 * 16 * 6, 5 * 6 * 6], dtype=float)
    np.testing.assert_allclose(sampler.probabilities, totals / totals.sum(), rtol=0, atol=1e-15)
    n = 6000
    vols = np.array([v for v, _ in _draws(sampler, n, seed=1)])
    observed = np.bincount(vols, minlength=3)
    assert chisquare(observed, sampler.probabilities * n).pvalue > 1e-3


def test_element_weights_choose_volumes_and_zero_weight_is_never_drawn():
    shapes = [(4, 10, 10), (4, 40, 40), (4, 10, 10)]
    sampler = PositionSampler(shapes, (2, 5, 5), ((0, 0),) * 3, weights=[1.0, 0.0, 3.0])
    np.testing.assert_allclose(sampler.probabilities, [0.25, 0.0, 0.75])
    n = 4000
    vols = np.array([v for v, _ in _draws(sampler, n, seed=2)])
    observed = np.bincount(vols, minlength=3)
    assert observed[1] == 0
    assert chisquare(observed[[0, 2]], [0.25 * n, 0.75 * n]).pvalue > 1e-3


@pytest.mark.parametrize("weights", [[1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]])
def test_bad_weights_are_rejected(weights):
    with pytest.raises(ValueError, match="weights"):
        PositionSampler([(4, 8, 8), (4, 8, 8)], (2, 4, 4), ((0, 0),) * 3, weights=weights)


def test_positions_uniform_over_the_padded_range():
    shape, size = (3, 4, 5), (2, 2, 2)
    pad = ((1, 0), (0, 1), (1, 1))
    sampler = PositionSampler([shape], size, pad)
    # every origin from -before to n + after - s, inclusive
    ranges = [range(-a, n + b - s + 1) for n, s, (a, b) in zip(shape, size, pad)]
    cells = {(z, y, x): i for i, (z, y, x) in enumerate(
        (z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2])}
    assert len(cells) == 3 * 4 * 6
    n = 200 * len(cells)
    hist = np.zeros(len(cells), dtype=np.int64)
    for vol, box in _draws(sampler, n, seed=3):
        assert vol == 0
        assert box.shape == size
        hist[cells[box.start]] += 1  # KeyError = a position outside the padded range
    assert hist.min() > 0
    assert chisquare(hist).pvalue > 1e-3


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 12)] * 3),
    size=st.tuples(*[st.integers(1, 12)] * 3),
    pad=st.tuples(*[st.tuples(st.integers(0, 5), st.integers(0, 5))] * 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_crop_never_leaves_the_padded_volume(shape, size, pad, seed):
    fits = all(n + a + b >= s for n, s, (a, b) in zip(shape, size, pad))
    if not fits:
        with pytest.raises(ValueError):
            PositionSampler([shape], size, pad)
        return
    sampler = PositionSampler([shape], size, pad)
    for _, box in _draws(sampler, 20, seed=seed):
        for lo, hi, n, (a, b) in zip(box.start, box.stop, shape, pad):
            assert -a <= lo and hi <= n + b


def test_sample_larger_than_padded_volume_names_volume_and_sizes():
    with pytest.raises(ValueError) as err:
        PositionSampler([(8, 64, 64), (4, 32, 32)], (5, 33, 33), ((0, 0), (0, 0), (0, 0)),
                        names=["big.h5", "small.h5"])
    msg = str(err.value)
    assert "small.h5" in msg and "big.h5" not in msg
    assert "[5, 33, 33]" in msg and "[4, 32, 32]" in msg


def test_draws_are_a_pure_function_of_the_generator():
    sampler = PositionSampler([(6, 30, 30), (6, 20, 20)], (3, 8, 8), ((1, 1), (4, 4), (4, 4)))
    a = [sampler.draw(sample_rng(7, 0, 0, i)) for i in range(20)]
    b = [sampler.draw(sample_rng(7, 0, 0, i)) for i in range(20)]
    assert a == b
    c = [sampler.draw(sample_rng(8, 0, 0, i)) for i in range(20)]
    assert a != c


def test_sample_rng_streams_differ_by_every_key():
    base = sample_rng(1, 0, 0, 5, 0, STREAM_POSITION).random(4)
    np.testing.assert_array_equal(base, sample_rng(1, 0, 0, 5, 0, STREAM_POSITION).random(4))
    for other in (sample_rng(2, 0, 0, 5), sample_rng(1, 1, 0, 5), sample_rng(1, 0, 1, 5),
                  sample_rng(1, 0, 0, 6), sample_rng(1, 0, 0, 5, 1),
                  sample_rng(1, 0, 0, 5, 0, STREAM_AUGMENT)):
        assert not np.array_equal(base, other.random(4))
