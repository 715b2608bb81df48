"""Parsing of TARGET_OPT / WEIGHT_OPT codes into typed specs (connectomics_data.targets.codes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.errors import ConfigError
from connectomics_data.targets import (
    AffinityTarget,
    BinaryRatioWeight,
    BinaryTarget,
    ContourTarget,
    InstanceEDTTarget,
    NoWeight,
    PolarityTarget,
    SemanticClassTarget,
    SemanticEDTTarget,
    SmallObjectTarget,
    UNetBorderWeight,
    parse_target,
    parse_targets,
    parse_weight,
    parse_weights,
    resolve_rates,
)

# (code, do_2d) -> (spec type, channels, target_channels, dtype)
CASES = [
    ("0", False, BinaryTarget, 1, 1, np.float32),
    ("0-3-5", False, BinaryTarget, 1, 1, np.float32),
    ("1", False, PolarityTarget, 3, 3, np.float32),
    ("1-1", False, PolarityTarget, 3, 1, np.int64),
    ("2", False, AffinityTarget, 3, 3, np.float32),
    ("2", True, AffinityTarget, 2, 2, np.float32),
    ("2-1-3-3-v1", False, AffinityTarget, 3, 3, np.float32),
    ("2-1-3-3-pni", True, AffinityTarget, 2, 2, np.float32),
    ("3-100-4-0", False, SmallObjectTarget, 1, 1, np.float32),
    ("4-1-1", False, ContourTarget, 1, 1, np.float32),
    ("4-2-0", False, ContourTarget, 1, 1, np.float32),
    ("5", False, InstanceEDTTarget, 1, 1, np.float32),
    ("5-3d-1-1-1.0", False, InstanceEDTTarget, 11, 1, np.int64),
    ("5-2d-0-0-5.0-2", False, InstanceEDTTarget, 1, 1, np.float32),
    ("6", False, SemanticEDTTarget, 1, 1, np.float32),
    ("6-3d-4-20.5", False, SemanticEDTTarget, 1, 1, np.float32),
    ("9-4", False, SemanticClassTarget, 4, 1, np.int64),
]


@pytest.mark.parametrize("code,do_2d,cls,channels,target_channels,dtype", CASES)
def test_parse_target_types_channels_dtypes(code, do_2d, cls, channels, target_channels, dtype):
    spec = parse_target(code, do_2d=do_2d)
    assert type(spec) is cls
    assert spec.code == code and spec.do_2d is do_2d
    assert spec.channels == channels
    assert spec.target_channels == target_channels
    assert spec.dtype == np.dtype(dtype)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.code = "x"  # type: ignore[misc]


def test_parsed_fields():
    assert parse_target("0-3-5").ids == (3, 5)
    assert parse_target("0").ids == ()
    a = parse_target("2-1-3-5-v2")
    assert a.offsets == (1, 3, 5) and a.version == "v2"
    assert parse_target("2").version == "nn"
    c = parse_target("4-2-0")
    assert c.bd_sz == 2 and c.do_bg is False
    s = parse_target("3-100-4-7")
    assert (s.size_thres, s.zratio, s.unused) == (100, 4, 7)
    e = parse_target("5-3d-1-1-2.5-3")
    assert (e.mode, e.padding, e.quantize, e.zres, e.erosion) == ("3d", True, True, 2.5, 3)
    sem = parse_target("6-3d-4-20.5")
    assert (sem.mode, sem.alpha_fore, sem.alpha_back) == ("3d", 4.0, 20.5)
    assert parse_target("9-4").num_classes == 4


def test_bare_5_and_6_take_pytc_defaults():
    bare = parse_target("5")
    full = parse_target("5-2d-0-0-5.0-0")
    assert dataclasses.replace(bare, code="x") == dataclasses.replace(full, code="x")
    five = parse_target("5-2d-0-0-5.0")  # older 5-field form: erosion 0
    assert five.erosion == 0 and five.zres == 5.0
    six = parse_target("6")
    assert (six.mode, six.alpha_fore, six.alpha_back) == ("2d", 8.0, 50.0)


def test_needs_original_ids():
    assert not parse_target("0").needs_original_ids
    assert parse_target("0-1-2").needs_original_ids
    assert parse_target("1").needs_original_ids
    assert parse_target("9-3").needs_original_ids
    assert not parse_target("4-1-1").needs_original_ids


@pytest.mark.parametrize(
    "code,fragment",
    [
        ("", "unknown kind"),
        ("00", "unknown kind"),
        ("0-", "empty field"),
        ("0-x", "not a non-negative integer"),
        ("1-0", "only '1' and '1-1'"),
        ("2-1-1", "expected 5 fields"),
        ("2-0-1-1-v1", "must be in [1"),
        ("2-1-1-1-v3", "version"),
        ("3-100-0-0", "zratio"),
        ("4", "expected 3 fields"),
        ("4-1-2", "do_bg"),
        ("5-4d-0-0-5.0-0", "mode"),
        ("5-2d-0-0-0-0", "zres"),
        ("5-2d-0-0-nan-0", "not a number"),
        ("5-2d-0-0-1e999-0", "finite"),
        ("5-2d", "expected 1, 5 or 6 fields"),
        ("6-2d-8", "expected 1 or 4 fields"),
        ("9", "number of classes"),
        ("9-1", "C 1 must be in"),
        ("all", "only allowed as the last entry"),
        (" 0", "unknown kind"),
        ("4-\u0661-1", "not a non-negative integer"),  # Arabic-Indic digit: int() would accept
    ],
)
def test_bad_target_codes_raise_config_error_naming_code(code, fragment):
    with pytest.raises(ConfigError) as info:
        parse_target(code)
    msg = str(info.value)
    assert repr(code) in msg or code == "all"
    assert fragment in msg


def test_non_string_code():
    with pytest.raises(ConfigError, match="expected a string"):
        parse_target(0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected a string"):
        parse_weight(1)  # type: ignore[arg-type]


def test_parse_targets_strips_trailing_all():
    specs = parse_targets(["0", "4-1-1", "all"])
    assert [s.code for s in specs] == ["0", "4-1-1"]
    with pytest.raises(ConfigError):
        parse_targets(["all", "0"])
    with pytest.raises(ConfigError):
        parse_targets(["all"])
    with pytest.raises(ConfigError):
        parse_targets("0")


@given(st.text(max_size=24))
@settings(max_examples=400, deadline=None)
def test_any_string_parses_or_raises_config_error(code):
    for do_2d in (False, True):
        try:
            spec = parse_target(code, do_2d=do_2d)
        except ConfigError as err:
            assert repr(code) in str(err) or code == "all"
        else:
            assert spec.channels >= 1 and spec.target_channels >= 1
    try:
        parse_weight(code)
    except ConfigError:
        pass


_field = st.one_of(
    st.sampled_from(["0", "1", "2", "2d", "3d", "v1", "v2", "pni", "5.0", "1.5", "", "x", "-"]),
    st.integers(0, 300).map(str),
)


@given(st.sampled_from(list("0123456789a")), st.lists(_field, max_size=6))
@settings(max_examples=400, deadline=None)
def test_code_like_strings_parse_or_raise_config_error(head, fields):
    code = "-".join([head, *fields])
    try:
        spec = parse_target(code)
    except ConfigError as err:
        assert repr(code) in str(err)
    else:
        assert spec.code == code


def test_parse_weight():
    assert type(parse_weight("0")) is NoWeight
    one = parse_weight("1")
    assert type(one) is BinaryRatioWeight and one.dilate is False
    assert parse_weight("1-1").dilate is True
    u = parse_weight("2-10-5")
    assert type(u) is UNetBorderWeight and (u.w0, u.w1, u.sigma) == (10.0, 5.0, 5.0)
    bare = parse_weight("2")
    assert (bare.w0, bare.w1) == (10.0, 5.0)
    aff = parse_target("2")
    assert one.channels(aff) == 3 and u.channels(aff) == 1
    assert one.channels(parse_target("9-3")) == 1


@pytest.mark.parametrize("code", ["", "3", "1-2", "2-10", "2-a-5", "2-0.5-0.5", "01", "0-1"])
def test_bad_weight_codes(code):
    with pytest.raises(ConfigError) as info:
        parse_weight(code)
    assert repr(code) in str(info.value)


def test_parse_weights():
    out = parse_weights([["1", "0"], ["2-10-5"]], num_targets=2)
    assert [[type(w) for w in row] for row in out] == [
        [BinaryRatioWeight, NoWeight],
        [UNetBorderWeight],
    ]
    with pytest.raises(ConfigError, match="one per target"):
        parse_weights([["1"]], num_targets=2)
    with pytest.raises(ConfigError):
        parse_weights(["1"])


def test_resolve_rates():
    assert resolve_rates(None, 3) == [0, 0, 0]
    assert resolve_rates(2, 2) == [2, 2]
    assert resolve_rates([1, 0], 2) == [1, 0]
    assert resolve_rates(np.int64(1), 1) == [1]
    for bad in ([1], -1, 1.5, True, "1", [1, -1]):
        with pytest.raises(ConfigError, match="LABEL_DILATION"):
            resolve_rates(bad, 2, "MODEL.LABEL_DILATION")
