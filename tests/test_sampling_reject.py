"""judge (PyTC rejection semantics) and screen (never rejects what judge would accept)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.sampling import Coins, RejectionPolicy, SamplingStats, judge, screen


def _label(fg: int, shape=(2, 4, 4), ids=(1,)) -> np.ndarray:
    lab = np.zeros(int(np.prod(shape)), np.uint16)
    lab[:fg] = np.resize(np.array(ids, np.uint16), fg)
    return lab.reshape(shape)


def test_valid_ratio_is_strictly_greater():
    policy = RejectionPolicy(valid_ratio=0.5)
    valid = np.zeros((2, 4, 4), np.uint8)
    valid.flat[:16] = 1  # exactly one half
    v = judge(policy, Coins(0.0, 0.0), None, valid)
    assert (v.accepted, v.reason, v.valid_fraction) == (False, "valid ratio", 0.5)
    valid.flat[16] = 7  # any non-zero value counts
    v = judge(policy, Coins(0.0, 0.0), None, valid)
    assert v.accepted and v.valid_fraction == 17 / 32


def test_valid_ratio_is_deterministic_whatever_the_coins():
    policy = RejectionPolicy(valid_ratio=0.9, p=0.0)
    valid = np.ones((1, 2, 5), np.uint8)
    valid.flat[0] = 0
    assert not judge(policy, Coins(0.99, 0.99), None, valid).accepted


@pytest.mark.parametrize("coin", [0.0, 0.5, 0.999999])
def test_p_one_rejects_every_small_sample(coin):
    policy = RejectionPolicy(size_thres=5, p=1.0)
    v = judge(policy, Coins(coin, coin), _label(4), None)
    assert (v.accepted, v.reason, v.fg_count) == (False, "foreground size", 4)
    assert judge(policy, Coins(coin, coin), _label(5), None).accepted  # == threshold passes


def test_p_zero_never_rejects_for_size_or_diversity():
    policy = RejectionPolicy(size_thres=100, diversity=10, p=0.0)
    v = judge(policy, Coins(0.0, 0.0), _label(0), None)
    assert v.accepted and v.fg_count == 0 and v.distinct == 1


def test_coin_decides_below_p():
    policy = RejectionPolicy(size_thres=3, p=0.7)
    assert not judge(policy, Coins(0.69, 0.0), _label(1), None).accepted
    assert judge(policy, Coins(0.7, 0.0), _label(1), None).accepted


def test_diversity_counts_background():
    policy = RejectionPolicy(diversity=3, p=1.0)
    v = judge(policy, Coins(0.0, 0.0), _label(4, ids=(5, 9)), None)  # {0, 5, 9}
    assert v.accepted and v.distinct == 3
    v = judge(policy, Coins(0.0, 0.0), _label(4, ids=(5,)), None)  # {0, 5}
    assert (v.accepted, v.reason, v.distinct) == (False, "diversity", 2)
    full = np.full((2, 2, 2), 4, np.uint16)  # no background: one id
    assert judge(RejectionPolicy(diversity=2, p=1.0), Coins(0.0, 0.0), full, None).distinct == 1


def test_diversity_uses_its_own_coin():
    policy = RejectionPolicy(size_thres=1, diversity=5, p=0.5)
    lab = _label(3, ids=(1,))
    assert judge(policy, Coins(0.0, 0.9), lab, None).accepted  # size passes, diversity coin >= p
    assert not judge(policy, Coins(0.9, 0.1), lab, None).accepted


def test_disabled_tests_and_missing_label_accept():
    assert judge(RejectionPolicy(), Coins(0.0, 0.0), _label(0), None).accepted
    assert judge(RejectionPolicy(size_thres=10, p=1.0), Coins(0.0, 0.0), None, None).accepted
    assert not RejectionPolicy().tests_foreground
    assert RejectionPolicy(diversity=2).tests_foreground


def test_coins_draw_two_uniforms_in_order():
    a = Coins.draw(np.random.default_rng(4))
    u = np.random.default_rng(4).random(2)
    assert (a.fg, a.diversity) == (u[0], u[1])


def test_stats_rejection_rate():
    assert SamplingStats().rejection_rate == 0.0
    assert SamplingStats(trials=10, accepted=4, screened=3).rejection_rate == pytest.approx(0.6)


# ------------------------------------------------------------------ screen is sound
policies = st.builds(
    RejectionPolicy,
    size_thres=st.sampled_from([-1, 1, 3, 10, 40]),
    diversity=st.sampled_from([-1, 1, 2, 3, 5]),
    p=st.sampled_from([0.0, 0.3, 1.0]),
    valid_ratio=st.sampled_from([0.0, 0.25, 0.5, 0.9]),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.0, 0.02, 0.2, 0.8]),
       exact=st.booleans(), u=st.tuples(st.floats(0, 0.999), st.floats(0, 0.999)))
def test_a_screened_trial_is_always_rejected_by_judge(policy, seed, density, exact, u):
    """Whatever the crop made of source voxels, a screen rejection implies a judge rejection."""
    rng = np.random.default_rng(seed)
    shape = (3, 6, 6)
    src_label = ((rng.random(shape) < density) * rng.integers(1, 4, shape)).astype(np.uint16)
    src_valid = (rng.random(shape) < rng.random()).astype(np.uint8)
    if exact:
        label, valid = src_label, src_valid  # no augmentation: the crop is the source
    else:  # augmentation: every output voxel is a gather of some source voxel
        idx = rng.integers(0, src_label.size, src_label.size)
        label, valid = src_label.ravel()[idx].reshape(shape), src_valid.ravel()[idx].reshape(shape)
    coins = Coins(*u)
    reason = screen(policy, coins, int(np.count_nonzero(src_label)), int(np.count_nonzero(src_valid)),
                    label.size, exact_crop=exact)
    verdict = judge(policy, coins, label, valid)
    if reason:
        assert not verdict.accepted
        if exact:
            assert reason == verdict.reason


def test_screen_exact_crop_decides_from_bounds():
    policy = RejectionPolicy(size_thres=10, p=1.0, valid_ratio=0.5)
    assert screen(policy, Coins(0.5, 0.5), 9, None, 100, exact_crop=True) == "foreground size"
    assert screen(policy, Coins(0.5, 0.5), 10, None, 100, exact_crop=True) == ""
    assert screen(policy, Coins(0.5, 0.5), 50, 50, 100, exact_crop=True) == "valid ratio"
    assert screen(policy, Coins(0.5, 0.5), 50, 51, 100, exact_crop=True) == ""


def test_screen_with_augmentation_only_trusts_zero_bounds():
    policy = RejectionPolicy(size_thres=10, diversity=2, p=1.0, valid_ratio=0.5)
    assert screen(policy, Coins(0.5, 0.5), 1, 1, 100, exact_crop=False) == ""
    assert screen(policy, Coins(0.5, 0.5), 0, 1, 100, exact_crop=False) == "foreground size"
    assert screen(policy, Coins(0.5, 0.5), 5, 0, 100, exact_crop=False) == "valid ratio"
    # the coin still decides: with a coin >= P the empty trial goes on to the full pipeline
    assert screen(RejectionPolicy(size_thres=10, p=0.5), Coins(0.6, 0.6), 0, None, 100, exact_crop=False) == ""
