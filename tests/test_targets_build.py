"""seg_to_targets: exact hand-computed cases and brute-force numpy/scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from connectomics_data.errors import ConfigError
from connectomics_data.targets import parse_target, parse_targets, seg_to_targets
from connectomics_data.targets.distance import energy_quantize

# --------------------------------------------------------------------------------------------
# The 1x6x6 hand case: background row on top, instance 1 (cols 0-2) touching instance 2 (3-5)
# --------------------------------------------------------------------------------------------


def two_touching() -> np.ndarray:
    lab = np.zeros((1, 6, 6), np.uint8)
    lab[0, 1:, :3] = 1
    lab[0, 1:, 3:] = 2
    return lab


def one(spec_code: str, lab: np.ndarray, **kw) -> np.ndarray:
    return seg_to_targets(lab, [parse_target(spec_code, do_2d=kw.pop("do_2d", False))], **kw)[0]


FG = np.array([[0] * 6] + [[1] * 6] * 5, np.float32)


def test_binary():
    lab = two_touching()
    out = one("0", lab)
    assert out.shape == (1, 1, 6, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], FG)
    sub = one("0-2", lab)
    np.testing.assert_array_equal(sub[0, 0], FG * (np.arange(6) >= 3))
    np.testing.assert_array_equal(one("0-1-2", lab), out)


def test_contour_4_1_1():
    out = one("4-1-1", two_touching())
    expected = np.array(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 0],
        ],
        np.float32,
    )
    assert out.shape == (1, 1, 6, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], expected)


def test_contour_4_0_1_is_the_raw_edge():
    expected = np.zeros((6, 6), np.float32)
    expected[0:2] = 1  # background/instance border: both sides
    expected[1:, 2:4] = 1  # instance/instance border: both sides
    np.testing.assert_array_equal(one("4-0-1", two_touching())[0, 0], expected)


def test_contour_4_1_0_only_between_instances():
    expected = np.zeros((6, 6), np.float32)
    expected[:, 2:4] = 1  # row 0's reflect-padded window reaches row 1
    np.testing.assert_array_equal(one("4-1-0", two_touching())[0, 0], expected)


def test_affinity_nearest_neighbour_exact():
    out = one("2", two_touching())
    assert out.shape == (3, 1, 6, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], FG)  # z: single slice, replicate border = fg
    y = FG.copy()
    y[1] = 0  # row 1 vs row 0 (background)
    np.testing.assert_array_equal(out[1, 0], y)
    x = FG.copy()
    x[:, 3] = 0  # column 3 (id 2) vs column 2 (id 1)
    np.testing.assert_array_equal(out[2, 0], x)


def test_affinity_long_range_exact():
    out = one("2-1-2-2-v1", two_touching())
    y = FG.copy()
    y[1:3] = 0  # rows 1, 2 look back at rows 0 (edge-clamped) / 0
    np.testing.assert_array_equal(out[1, 0], y)
    x = FG * np.array([1, 1, 1, 0, 0, 1], np.float32)  # col c vs col max(c - 2, 0)
    np.testing.assert_array_equal(out[2, 0], x)
    pni = one("2-1-2-2-pni", two_touching())
    np.testing.assert_array_equal(pni[0, 0], np.zeros((6, 6)))  # z partner outside: 0
    np.testing.assert_array_equal(pni[2, 0], FG * np.array([0, 0, 1, 0, 0, 1], np.float32))


def test_instance_edt_exact():
    out = one("5", two_touching())
    assert out.shape == (1, 1, 6, 6) and out.dtype == np.float32
    # distance to the nearest voxel of another id (background row 0, the other instance);
    # the volume border is not a boundary; each instance's maximum is 3
    d = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [2, 2, 1, 1, 2, 2],
            [3, 2, 1, 1, 2, 3],
            [3, 2, 1, 1, 2, 3],
            [3, 2, 1, 1, 2, 3],
        ],
        np.float64,
    )
    expected = np.where(FG > 0, d / (3 + 1e-6), -1.0).astype(np.float32)
    np.testing.assert_array_equal(out[0, 0], expected)
    quant = one("5-2d-0-1-5.0", two_touching())
    assert quant.dtype == np.int64 and quant.shape == (1, 1, 6, 6)
    classes = {0: 1 + 3, 1: 1 + 3, 2: 1 + 6, 3: 1 + 9}  # 1 + floor(10 * d / 3.000001)
    np.testing.assert_array_equal(
        quant[0, 0], np.where(FG > 0, np.vectorize(classes.get)(d.astype(int)), 0)
    )


def test_instance_edt_padding_makes_border_a_boundary():
    out = one("5-2d-1-0-5.0-0", two_touching())
    d = np.array(
        [[0] * 6, [1] * 6, [1, 2, 1, 1, 2, 1], [1, 2, 1, 1, 2, 1], [1, 2, 1, 1, 2, 1], [1] * 6],
        np.float64,
    )
    np.testing.assert_allclose(out[0, 0], np.where(FG > 0, d / (2 + 1e-6), -1.0), rtol=1e-6)


def test_semantic_edt_sign_and_values():
    out = one("6", two_touching())
    expected = np.tanh(np.where(FG > 0, np.arange(6)[:, None] / 8.0, -1 / 50.0) * np.ones(6))
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    assert (out[0, 0][FG > 0] > 0).all() and (out[0, 0][FG == 0] < 0).all()
    full = one("6", np.ones((2, 3, 3), np.uint8))
    np.testing.assert_allclose(full, np.tanh(5.0), rtol=1e-6)
    empty = one("6-3d-8-50", np.zeros((2, 3, 3), np.uint8))
    np.testing.assert_allclose(empty, np.tanh(-5.0), rtol=1e-6)


def test_class_targets():
    lab = two_touching()
    cls = one("9-3", lab)
    assert cls.dtype == np.int64 and cls.shape == (1, 1, 6, 6)
    np.testing.assert_array_equal(cls, lab[None])
    with pytest.raises(ValueError, match="0..1"):
        one("9-2", lab)
    pol = one("1", lab)
    assert pol.shape == (3, 1, 6, 6)
    np.testing.assert_array_equal(pol[0], lab == 1)
    np.testing.assert_array_equal(pol[1], lab == 2)
    np.testing.assert_array_equal(pol[2], lab > 0)
    exc = one("1-1", np.array([[[0, 1, 2, 3, 4]]], np.uint8))
    assert exc.dtype == np.int64
    np.testing.assert_array_equal(exc, [[[[0, 1, 2, 1, 2]]]])


def test_small_objects_exact():
    lab = np.zeros((3, 6, 6), np.uint16)
    lab[:, 0:4, 0:4] = 1  # 16 voxels per xy plane, 3x4 = 12 per xz / yz plane
    lab[1, 5, 5] = 2  # 1 voxel everywhere
    out = one("3-10-2-0", lab)  # xy: < 10, xz / yz: < 5
    expected = np.zeros(lab.shape, np.float32)
    expected[1, 5, 5] = 1
    np.testing.assert_array_equal(out[0], expected)
    out = one("3-20-1-0", lab)  # xy: < 20 -> the 16-voxel squares are small too
    np.testing.assert_array_equal(out[0], (lab > 0).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Brute-force references on random small labels
# --------------------------------------------------------------------------------------------

labels3d = hnp.arrays(
    np.uint16,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
    elements=st.integers(0, 3),
)


def ref_affinity(seg: np.ndarray, offsets, version: str) -> np.ndarray:
    out = np.zeros((3, *seg.shape), np.float32)
    for c in range(3):
        d = offsets[c]
        n = seg.shape[c]
        for p in np.ndindex(seg.shape):
            i = p[c]
            if version == "v2":
                a, b = list(p), list(p)
                a[c], b[c] = min(max(i - d, 0), n - 1), min(max(i + d, 0), n - 1)
                u, v = seg[tuple(a)], seg[tuple(b)]
            else:
                if i - d < 0 and version == "pni":
                    continue
                q = list(p)
                q[c] = max(i - d, 0)
                u, v = seg[p], seg[tuple(q)]
            out[(c, *p)] = float(u == v and u != 0)
    return out


def ref_contour(seg: np.ndarray, bd: int, do_bg: bool) -> np.ndarray:
    _, ny, nx = seg.shape
    out = np.zeros(seg.shape, np.float32)
    for z in range(seg.shape[0]):
        if do_bg:
            s = np.pad(seg[z], 1, mode="symmetric")
            edge = (s[:-2, 1:-1] != s[2:, 1:-1]) | (s[1:-1, :-2] != s[1:-1, 2:])
            for y in range(ny):
                for x in range(nx):
                    win = edge[max(0, y - bd) : y + bd + 1, max(0, x - bd) : x + bd + 1]
                    out[z, y, x] = win.any()
        else:
            p = np.pad(seg[z], bd, mode="reflect")
            for y in range(ny):
                for x in range(nx):
                    win = p[y : y + 2 * bd + 1, x : x + 2 * bd + 1]
                    out[z, y, x] = len(set(win[win != 0].tolist())) > 1
    return out[None]


@given(labels3d, st.sampled_from(["v1", "v2", "pni"]), st.tuples(*[st.integers(1, 4)] * 3))
@settings(max_examples=60, deadline=None)
def test_long_range_affinity_matches_bruteforce(lab, version, offsets):
    code = "2-{}-{}-{}-{}".format(*offsets, version)
    np.testing.assert_array_equal(one(code, lab), ref_affinity(lab, offsets, version))


@given(labels3d)
@settings(max_examples=60, deadline=None)
def test_nearest_affinity_matches_bruteforce_and_2d_channels(lab):
    out = one("2", lab)
    np.testing.assert_array_equal(out, ref_affinity(lab, (1, 1, 1), "v1"))
    np.testing.assert_array_equal(one("2", lab, do_2d=True), out[1:])


@given(labels3d, st.integers(0, 2), st.booleans())
@settings(max_examples=80, deadline=None)
def test_contour_matches_bruteforce(lab, bd, do_bg):
    out = one(f"4-{bd}-{int(do_bg)}", lab)
    np.testing.assert_array_equal(out, ref_contour(lab, bd, do_bg))


def ref_small(seg: np.ndarray, thres: int, zratio: int) -> np.ndarray:
    mask = np.zeros(seg.shape, bool)
    eight = np.ones((3, 3), bool)
    for axis, t in ((0, thres), (1, thres // zratio), (2, thres // zratio)):
        for i in range(seg.shape[axis]):
            plane = np.take(seg, i, axis=axis)
            small = np.zeros(plane.shape, bool)
            for v in np.unique(plane[plane != 0]):
                cc, n = ndimage.label(plane == v, structure=eight)
                sizes = np.bincount(cc.ravel())
                small |= (sizes[cc] < t) & (cc > 0)
            idx = [slice(None)] * 3
            idx[axis] = i
            mask[tuple(idx)] |= small
    return mask[None].astype(np.float32)


@given(labels3d, st.integers(0, 8), st.integers(1, 3))
@settings(max_examples=60, deadline=None)
def test_small_objects_match_bruteforce(lab, thres, zratio):
    np.testing.assert_array_equal(one(f"3-{thres}-{zratio}-0", lab), ref_small(lab, thres, zratio))


def ref_instance_edt(seg, mode, padding, zres, erosion):
    """PyTC's per-instance loop (without remove_small_holes), background -1."""
    planar = mode == "2d"
    units = [seg[z] for z in range(seg.shape[0])] if planar else [seg]
    out = []
    for u in units:
        conn = np.ones((3,) * u.ndim, bool)
        res = np.full(u.shape, -1.0)
        for v in np.unique(u[u != 0]):
            cc, n = ndimage.label(u == v, structure=conn)
            for k in range(1, n + 1):
                m = cc == k
                if padding:
                    m = np.pad(m, 2)
                if erosion:
                    grid = np.indices((2 * erosion + 1,) * m.ndim) - erosion
                    ball = (grid**2).sum(0) <= erosion**2
                    m = ndimage.binary_erosion(m, ball, border_value=0 if padding else 1)
                sampling = (1.0,) * m.ndim if planar else (zres, 1.0, 1.0)
                d = ndimage.distance_transform_edt(m, sampling=sampling)
                if padding:
                    d, m = d[(slice(2, -2),) * d.ndim], m[(slice(2, -2),) * m.ndim]
                if m.any():
                    res[m] = d[m] / (d[m].max() + 1e-6)
        out.append(res)
    return (np.stack(out) if planar else out[0])[None]


def _boundaried(lab: np.ndarray) -> np.ndarray:
    """Zero frame around each slice so no instance lacks a boundary (scipy's EDT of an all-true
    image is meaningless, see the distance module)."""
    out = np.zeros((lab.shape[0], lab.shape[1] + 2, lab.shape[2] + 2), lab.dtype)
    out[:, 1:-1, 1:-1] = lab
    return out


@given(
    labels3d,
    st.sampled_from(["2d", "3d"]),
    st.booleans(),
    st.sampled_from([1.0, 2.5]),
    st.integers(0, 2),
)
@settings(max_examples=80, deadline=None)
def test_instance_edt_matches_scipy_reference(lab, mode, padding, zres, erosion):
    lab = _boundaried(lab)
    code = f"5-{mode}-{int(padding)}-0-{zres}-{erosion}"
    ref = ref_instance_edt(lab, mode, padding, zres, erosion)
    np.testing.assert_allclose(one(code, lab), ref, atol=1e-6)
    quant = one(f"5-{mode}-{int(padding)}-1-{zres}-{erosion}", lab)
    np.testing.assert_array_equal(quant, energy_quantize(ref))


def test_instance_edt_without_any_boundary_is_one():
    out = one("5", np.full((2, 3, 4), 7, np.uint8))
    np.testing.assert_array_equal(out, np.ones((1, 2, 3, 4), np.float32))


@given(labels3d, st.sampled_from(["2d", "3d"]), st.sampled_from([(8.0, 50.0), (2.0, 3.0)]))
@settings(max_examples=60, deadline=None)
def test_semantic_edt_matches_scipy_reference(lab, mode, alphas):
    a, b = alphas
    fg = lab != 0
    units = [np.s_[z] for z in range(lab.shape[0])] if mode == "2d" else [np.s_[:]]
    sampling = None if mode == "2d" else (6.0, 1.0, 1.0)
    ref = np.empty(lab.shape)
    for u in units:
        f = fg[u]
        dfg = 5.0 if f.all() else ndimage.distance_transform_edt(f, sampling=sampling) / a
        dbg = 5.0 if (~f).all() else ndimage.distance_transform_edt(~f, sampling=sampling) / b
        ref[u] = np.tanh(dfg - dbg)
    np.testing.assert_allclose(one(f"6-{mode}-{a}-{b}", lab)[0], ref, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Shapes, channel counts, 2D, erosion/dilation plumbing
# --------------------------------------------------------------------------------------------

ALL_CODES = ["0", "0-1", "1", "1-1", "2", "2-1-2-2-v2", "3-10-2-0", "4-1-1", "4-1-0", "5",
             "5-3d-1-1-2.0-1", "6", "6-3d-8-50", "9-4"]  # fmt: skip


@pytest.mark.parametrize("do_2d", [False, True])
def test_every_spec_channel_count_and_dtype_match_its_array(do_2d):
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, size=(3, 9, 10)).astype(np.uint32)
    specs = parse_targets(ALL_CODES, do_2d=do_2d)
    outs = seg_to_targets(lab, specs)
    for spec, out in zip(specs, outs):
        assert out.shape == (spec.target_channels, *lab.shape), spec.code
        assert out.dtype == spec.dtype, spec.code
    if do_2d:
        outs2 = seg_to_targets(lab[1], specs)
        for spec, out3, out2 in zip(specs, outs, outs2):
            assert out2.shape == (spec.target_channels, 9, 10), spec.code
            np.testing.assert_array_equal(out2, out3[:, 1], err_msg=spec.code)


def test_2d_label_needs_2d_specs():
    with pytest.raises(ValueError, match="do_2d=True"):
        seg_to_targets(np.zeros((4, 4), np.uint8), parse_targets(["0"]))


def test_erosion_and_dilation_per_target():
    lab = two_touching()
    specs = parse_targets(["0", "0", "0"])
    plain, eroded, dilated = seg_to_targets(lab, specs, erosion=[0, 1, 0], dilation=[0, 0, 1])
    np.testing.assert_array_equal(plain[0, 0], FG)
    expected = FG.copy()
    expected[:, 2:4] = 0  # the 3x3 windows there hold both ids
    np.testing.assert_array_equal(eroded[0, 0], expected)
    np.testing.assert_array_equal(dilated[0, 0], np.ones((6, 6)))
    both = seg_to_targets(lab, specs[:1], erosion=1, dilation=1)[0]
    np.testing.assert_array_equal(both[0, 0], np.ones((6, 6)))  # dilation refills the gap
    with pytest.raises(ConfigError, match="LABEL_EROSION"):
        seg_to_targets(lab, specs, erosion=[1, 1])
    assert lab.sum() == 45  # the input is never modified


def test_float_label_is_accepted():
    lab = two_touching()
    np.testing.assert_array_equal(one("4-1-1", lab.astype(np.float32)), one("4-1-1", lab))


FLIP_EQUIVARIANT = ["0", "3-6-2-0", "4-1-1", "4-2-0", "5-2d-1-0-5.0-1", "5-3d-0-0-2.0-0", "6",
                    "6-3d-4-9"]  # fmt: skip


@given(
    hnp.arrays(np.uint8, (3, 7, 8), elements=st.integers(0, 3)),
    st.sampled_from([(1,), (2,), (1, 2), (0, 1, 2)]),
)
@settings(max_examples=40, deadline=None)
def test_symmetric_targets_commute_with_flips_on_strided_views(lab, axes):
    """Flipped (negative-stride, non-contiguous) input: target(flip(l)) == flip(target(l))."""
    specs = parse_targets(FLIP_EQUIVARIANT)
    flipped = np.flip(lab, axis=axes)
    assert not flipped.flags.c_contiguous or flipped.size <= 1
    for spec, a, b in zip(specs, seg_to_targets(lab, specs), seg_to_targets(flipped, specs)):
        np.testing.assert_allclose(
            np.flip(a, axis=tuple(x + 1 for x in axes)), b, atol=1e-6, err_msg=spec.code
        )


def test_huge_numbers_in_codes_are_config_errors():
    with pytest.raises(ConfigError, match="must be in"):
        parse_target("0-" + "9" * 5000)


@given(labels3d, st.integers(1, 2))
@settings(max_examples=40, deadline=None)
def test_contours_of_64bit_ids_beyond_float_precision(lab, bd):
    big = lab.astype(np.uint64) * np.uint64(2**62) + (lab != 0).astype(np.uint64)
    for do_bg in (0, 1):
        np.testing.assert_array_equal(one(f"4-{bd}-{do_bg}", big), ref_contour(big, bd, do_bg))
