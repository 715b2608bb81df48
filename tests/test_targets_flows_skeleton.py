"""Targets '7' (Cellpose flows), '8' (dilated-label EDT) and 'a' (skeleton-aware EDT): parsing,
exact values on hand-made labels, invariants."""

from __future__ import annotations

import numpy as np
import pytest

from connectomics_data.errors import ConfigError
from connectomics_data.targets import (
    DilatedEDTTarget,
    FlowTarget,
    SkeletonEDTTarget,
    dilate_label,
    parse_target,
    seg_to_targets,
)
from connectomics_data.targets.distance import energy_quantize, instance_edt
from connectomics_data.targets.flows import diffusion_flows, slice_flows
from connectomics_data.targets.skeleton import skeleton_edt

# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "code,cls,channels,target_channels,dtype",
    [
        ("7", FlowTarget, 2, 2, np.float32),
        ("7-0", FlowTarget, 3, 3, np.float32),
        ("8-1", DilatedEDTTarget, 1, 1, np.float32),
        ("8-2-3d-1-1-4.0", DilatedEDTTarget, 11, 1, np.int64),
        ("8-0-2d-0-0-5.0-1", DilatedEDTTarget, 1, 1, np.float32),
        ("a-0-40-16-16", SkeletonEDTTarget, 1, 1, np.float32),
        ("a-1-1-1-1", SkeletonEDTTarget, 11, 1, np.int64),
    ],
)
def test_parse_new_codes(code, cls, channels, target_channels, dtype):
    spec = parse_target(code)
    assert type(spec) is cls
    assert (spec.channels, spec.target_channels, spec.dtype) == (channels, target_channels, dtype)


def test_parsed_fields():
    assert parse_target("7").with_mask is False and parse_target("7-0").with_mask is True
    s8 = parse_target("8-2-3d-1-0-4.5-1")
    assert s8.dilation == 2
    e = s8.edt
    assert (e.mode, e.padding, e.quantize, e.zres, e.erosion) == ("3d", True, False, 4.5, 1)
    assert parse_target("8-3").edt.mode == "2d"  # '5' defaults
    sa = parse_target("a-1-40-16-8")
    assert sa.quantize is True and sa.resolution == (40.0, 16.0, 8.0)


@pytest.mark.parametrize(
    "code,fragment",
    [
        ("7-1", "only '7' and '7-0'"),
        ("7-0-0", "only '7' and '7-0'"),
        ("8", "expected 2, 6 or 7 fields"),
        ("8-x", "dil 'x'"),
        ("8-0-40-16-16", "expected 2, 6 or 7 fields"),  # the old barcode spelling of 'a'
        ("8-1-4d-0-0-5.0", "mode '4d'"),
        ("a", "expected 5 fields"),
        ("a-0-1-1", "expected 5 fields"),
        ("a-2-1-1-1", "quant '2'"),
        ("a-0-0-1-1", "zres '0'"),
    ],
)
def test_bad_new_codes(code, fragment):
    with pytest.raises(ConfigError) as info:
        parse_target(code)
    assert repr(code) in str(info.value) and fragment in str(info.value)


# ------------------------------------------------------------------------------ '7' flows


def test_flows_of_a_bar_point_to_its_centre_exactly():
    seg = np.zeros((1, 3, 5), np.int64)
    seg[0, 1, 1:4] = 9  # 1 x 3 bar, centre (1, 2)
    dy, dx = diffusion_flows(seg)[:, 0]
    assert dy.tolist() == np.zeros((3, 5)).tolist()
    assert dx[1].tolist() == [0.0, 1.0, 0.0, -1.0, 0.0]
    assert not dx[[0, 2]].any()
    vertical = np.ascontiguousarray(seg.transpose(0, 2, 1))
    vy, vx = diffusion_flows(vertical)[:, 0]
    assert vy[:, 1].tolist() == [0.0, 1.0, 0.0, -1.0, 0.0] and not vx.any()


def test_single_pixel_and_empty_slices():
    seg = np.zeros((2, 4, 4), np.uint16)
    seg[0, 2, 2] = 1
    flows = diffusion_flows(seg)
    assert flows.shape == (2, 2, 4, 4) and flows.dtype == np.float32 and not flows.any()


def test_flows_unit_length_and_point_inwards_on_a_disk():
    yy, xx = np.mgrid[:21, :21]
    disk = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 64).astype(np.int32)
    dy, dx = slice_flows(disk)
    fg = disk > 0
    norm = np.hypot(dy, dx)
    assert not norm[~fg].any()
    off_centre = fg & ((yy != 10) | (xx != 10))
    np.testing.assert_allclose(norm[off_centre], 1.0, atol=1e-5)
    inward = dy * (10 - yy) + dx * (10 - xx)
    assert (inward[off_centre] > 0).all()


def test_touching_instances_do_not_change_each_others_flows():
    a = np.zeros((12, 12), np.int64)
    a[2:8, 2:6] = 3
    both = a.copy()
    both[2:8, 6:11] = 2**40  # a large id touching the first instance
    fa, fb = slice_flows(a), slice_flows(both)
    m = a > 0
    np.testing.assert_array_equal(fa[:, m], fb[:, m])
    assert np.abs(fb[:, both == 2**40]).sum() > 0


def test_flows_with_mask_channel_and_per_slice():
    seg = np.zeros((2, 8, 8), np.int64)
    seg[0, 1:5, 1:6] = 1
    seg[1, 3:7, 2:7] = 4
    out = seg_to_targets(seg, [parse_target("7-0")])[0]
    assert out.shape == (3, 2, 8, 8)
    np.testing.assert_array_equal(out[2], (seg > 0).astype(np.float32))
    for z in range(2):
        np.testing.assert_array_equal(out[:2, z], slice_flows(seg[z]))


def test_flows_from_a_2d_label():
    seg = np.zeros((6, 7), np.int64)
    seg[1:5, 1:6] = 2
    out = seg_to_targets(seg, [parse_target("7", do_2d=True)])[0]
    np.testing.assert_array_equal(out, slice_flows(seg))


# ------------------------------------------------------------------------------ '8'


def test_dilated_edt_is_the_edt_of_the_dilated_label():
    seg = np.zeros((3, 16, 16), np.int64)
    seg[:, 8, 2:14] = 1  # a one-pixel-thin line (e.g. a skeleton)
    seg[1, 3, 3] = 2
    out = seg_to_targets(seg, [parse_target("8-2-2d-0-0-5.0")])[0]
    np.testing.assert_array_equal(out, instance_edt(dilate_label(seg, 2), "2d"))
    # the target peaks on the line: 1 - eps on the line (away from its ends), -1 far away
    assert out[0, 1, 8, 5:11].min() > 0.99
    assert out[0, 1, 14, 8] == -1.0
    assert out.dtype == np.float32


def test_dilation_zero_is_the_plain_instance_edt():
    seg = np.zeros((2, 9, 9), np.int64)
    seg[:, 2:7, 2:7] = 5
    a, b = seg_to_targets(seg, [parse_target("8-0-3d-0-1-2.0"), parse_target("5-3d-0-1-2.0")])
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64


# ------------------------------------------------------------------------------ 'a' SDT

_A = 0.8
_EPS = 1e-6


def _sdt(db, ds):
    return (db / (ds + db + _EPS)) ** _A


def test_sdt_exact_values_on_a_2d_bar():
    seg = np.zeros((1, 7, 11), np.int64)
    seg[0, 2:5, 1:10] = 6  # 3 x 9 bar: the skeleton is the middle row (away from the ends)
    out = skeleton_edt(seg, do_2d=True)[0, 0]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[seg[0] == 0], -1.0)
    cols = slice(3, 8)
    np.testing.assert_allclose(out[3, cols], _sdt(1.0, 0.0), rtol=1e-6)  # skeleton: ~1
    np.testing.assert_allclose(out[2, cols], _sdt(1.0, 1.0), rtol=1e-6)  # 0.5 ** 0.8
    np.testing.assert_allclose(out[4, cols], _sdt(1.0, 1.0), rtol=1e-6)


def test_sdt_anisotropic_3d_bar():
    seg = np.zeros((5, 5, 11), np.int64)
    seg[1:4, 1:4, 1:10] = 1  # 3 x 3 cross-section: the skeleton is the centre line
    out = skeleton_edt(seg, resolution=(2.0, 1.0, 1.0))[0]
    x = 5
    np.testing.assert_allclose(out[2, 2, x], _sdt(1.0, 0.0), rtol=1e-6)
    np.testing.assert_allclose(out[1, 2, x], _sdt(2.0, 2.0), rtol=1e-6)  # z step is 2
    np.testing.assert_allclose(out[2, 1, x], _sdt(1.0, 1.0), rtol=1e-6)
    np.testing.assert_allclose(out[1, 1, x], _sdt(1.0, np.sqrt(5.0)), rtol=1e-6)
    iso = skeleton_edt(seg)[0]
    np.testing.assert_allclose(iso[1, 2, x], _sdt(1.0, 1.0), rtol=1e-6)


def test_sdt_components_are_separate_and_quantised_matches():
    seg = np.zeros((1, 9, 20), np.int64)
    seg[0, 1:8, 1:8] = 3
    seg[0, 1:8, 11:18] = 3  # same id, two components: each gets its own skeleton
    energy = skeleton_edt(seg, do_2d=True)
    np.testing.assert_array_equal(energy[0, 0, :, 1:8], energy[0, 0, :, 11:18])
    assert np.isclose(energy.max(), _sdt(1.0, 0.0))
    quant = seg_to_targets(seg[0], [parse_target("a-1-1-1-1", do_2d=True)])[0]
    assert quant.dtype == np.int64 and quant.shape == (1, 9, 20)
    np.testing.assert_array_equal(quant, energy_quantize(energy)[:, 0])


def test_sdt_values_bounded_and_touching_instances():
    rng = np.random.default_rng(1)
    seg = rng.integers(0, 4, (4, 12, 12)).repeat(2, axis=1).repeat(2, axis=2)
    out = seg_to_targets(seg, [parse_target("a-0-4-1-1")])[0][0]
    fg = seg > 0
    assert (out[~fg] == -1.0).all()
    assert (out[fg] > 0).all() and (out[fg] <= 1.0).all()
