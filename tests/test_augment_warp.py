"""The fused warp: exact permutations, sample-size reach, agreement with a stage-by-stage
reference, exact masks, and the torch backend against the numpy one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from connectomics_data.augment import (
    Compose,
    Elastic,
    Flip,
    MisAlignment,
    MissingSection,
    Rescale,
    Rotate,
    warp_linear,
    warp_nearest,
)
from connectomics_data.augment.geometry import (
    ElasticParams,
    FlipParams,
    MissingSectionParams,
    RescaleParams,
    RotateParams,
)
from connectomics_data.augment.plan import Misalign


def full_chain(rot90: bool = True, rotate_ratio: float = 0.5, p: float = 1.0) -> list:
    return [
        Rotate(rot90=rot90, p=p),
        Rescale(p=p),
        Flip(p=p),
        Elastic(alpha=16, sigma=4, p=p),
        MisAlignment(displacement=16, rotate_ratio=rotate_ratio, p=p),
        MissingSection(num_sections=2, p=p),
    ]


def smooth_image(shape, seed=0) -> np.ndarray:
    """Float image of low-frequency waves (bilinear interpolation is accurate on it)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    out = np.full(shape, 0.5)
    for _ in range(3):
        fy, fx = rng.uniform(1 / 60, 1 / 30, size=2)
        ph = rng.uniform(0, 2 * np.pi, size=2)
        out += 0.08 * np.sin(2 * np.pi * fy * y + ph[0] + z) * np.cos(2 * np.pi * fx * x + ph[1])
    return out.astype(np.float32)


def blob_labels(shape, cell=24, seed=0, dtype=np.uint32, offset=0) -> np.ndarray:
    """Voronoi-like 2D cells per slice (ids change every 3 slices), plus ``offset``."""
    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    n = max(4, (Y // cell) * (X // cell))
    out = np.empty(shape, dtype=dtype)
    yy, xx = np.mgrid[:Y, :X]
    for z in range(Z):
        if z % 3 == 0:
            seeds = rng.uniform(0, [Y, X], size=(n, 2))
            d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
            lab = d.argmin(-1) + 1 + (z // 3) * n
        out[z] = (lab + offset).astype(dtype)
    return out


# ----------------------------------------------------------------------------- permutations
def centre_crop(a: np.ndarray, size) -> np.ndarray:
    sl = tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(a.shape[-3:], size))
    return a[(Ellipsis, *sl)]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "bits", [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 1, 1)]
)
def test_rot90_and_flips_are_the_numpy_index_operations(k, bits):
    size = (5, 12, 12)
    comp = Compose([Rotate(rot90=True, p=1), Flip(p=1)], size)
    assert comp.sample_size == size  # permutations need no margin
    rng = np.random.default_rng(k)
    img = rng.integers(0, 256, size, dtype=np.uint8)
    lab = rng.integers(0, 2**40, size, dtype=np.uint64)
    params = [RotateParams(k=k), FlipParams(*map(bool, bits))]
    out = comp.apply({"image": img, "label": lab}, params)

    def expected(a):
        a = np.rot90(a, k, axes=(1, 2))  # rotate first, flips last (PyTC order)
        if bits[0]:
            a = a[::-1]
        if bits[1]:
            a = a[:, ::-1]
        if bits[2]:
            a = a[:, :, ::-1]
        if bits[3]:
            a = a.transpose(0, 2, 1)
        return a

    np.testing.assert_array_equal(out["label"], expected(lab))
    np.testing.assert_array_equal(
        out["image"], expected(img).astype(np.float32) * np.float32(1 / 255)
    )
    assert comp.plan(params).integral


def test_flip_applied_twice_is_identity_and_zx_transpose():
    size = (9, 9, 9)
    comp = Compose([Flip(do_ztrans=True, p=1)], size)
    rng = np.random.default_rng(3)
    img = rng.random(size, dtype=np.float32)
    lab = rng.integers(0, 9, size).astype(np.uint16)
    # each flip or transpose alone, and the three flips together, are involutions
    # (a flip followed by a transpose is a quarter turn, not an involution)
    singles = [tuple(int(i == j) for j in range(5)) for i in range(5)]
    for bits in singles + [(1, 1, 1, 0, 0)]:
        params = [FlipParams(*map(bool, bits))]
        once = comp.apply({"image": img, "label": lab}, params)
        assert not np.array_equal(once["label"], lab)
        twice = comp.apply(once, params)
        np.testing.assert_array_equal(twice["label"], lab)
        np.testing.assert_array_equal(twice["image"], img)
    only_zx = comp.apply(
        {"image": img, "label": lab}, [FlipParams(False, False, False, False, True)]
    )
    np.testing.assert_array_equal(only_zx["label"], lab.transpose(2, 1, 0))
    np.testing.assert_array_equal(only_zx["image"], img.transpose(2, 1, 0))


def test_non_square_transpose_reads_a_transposed_window():
    size = (3, 10, 16)
    comp = Compose([Flip(p=1)], size)
    assert comp.sample_size[1] == comp.sample_size[2] >= 16
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 1000, comp.sample_size).astype(np.int32)
    out = comp.apply(
        {"image": lab.astype(np.float32), "label": lab}, [FlipParams(False, False, False, True)]
    )
    assert out["label"].shape == size
    np.testing.assert_array_equal(out["label"], centre_crop(lab, (3, 16, 10)).transpose(0, 2, 1))
    np.testing.assert_array_equal(out["image"], out["label"].astype(np.float32))


def test_odd_even_non_square_rot90_stays_exact():
    size = (2, 9, 14)  # y, x of different parity: the quarter-turned window is off centre by 1/2
    comp = Compose([Rotate(rot90=True, p=1)], size)
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 50, comp.sample_size).astype(np.uint8)
    for k in range(4):
        plan = comp.plan([RotateParams(k=k)])
        assert plan.integral
        out = comp.apply({"image": lab, "label": lab}, [RotateParams(k=k)])
        assert out["label"].shape == size
        np.testing.assert_array_equal(
            out["image"], out["label"].astype(np.float32) * np.float32(1 / 255)
        )
        _, coords = plan.coordinates()
        assert coords.min() >= 0 and coords[..., 0].max() <= comp.sample_size[1] - 1
        assert coords[..., 1].max() <= comp.sample_size[2] - 1


# ----------------------------------------------------------------------------- reach
@pytest.mark.parametrize(
    "size,rot90",
    [
        ((17, 225, 225), True),
        ((17, 257, 257), False),
        ((5, 64, 96), False),
        ((6, 33, 50), True),
        ((1, 65, 40), False),
    ],
)
def test_random_maps_never_leave_the_sample(size, rot90):
    comp = Compose(full_chain(rot90=rot90), size)
    S = comp.sample_size
    rng = np.random.default_rng(11)
    centre = [(S[1] - 1) / 2, (S[2] - 1) / 2]
    used = [0.0, 0.0]
    for _ in range(40):
        params = comp.randomize(rng)
        z_index, coords = comp.plan(params).coordinates()
        assert z_index.min() >= 0 and z_index.max() <= S[0] - 1
        for a in (0, 1):
            c = coords[..., a]
            assert c.min() >= 0 and c.max() <= S[1 + a] - 1
            used[a] = max(used[a], c.max() - centre[a], centre[a] - c.min())
    # and the bound is not absurdly loose: on some axis a random draw uses half of the margin
    half = [(n - 1) / 2 for n in size[1:]]
    assert any(u > h + 0.5 * (c - h) for u, h, c in zip(used, half, centre))


def test_extreme_parameters_reach_the_border_but_not_beyond():
    size = (7, 48, 48)
    comp = Compose(full_chain(rot90=False), size)
    S = comp.sample_size
    el = comp.transforms[3]
    b = np.float32(el.bound(size))
    field = np.full((2, 48, 48), b, np.float32)
    mis = comp.transforms[4]
    worst = []
    for angle in np.linspace(0, 2 * np.pi, 33):
        for sign in (1, -1):
            params = [
                RotateParams(angle=float(angle)),
                RescaleParams(1.25, 1.25),
                FlipParams(False, False, False, False),
                ElasticParams(field * sign),
                Misalign(
                    idx=1,
                    mode="translation",
                    shift0=(8 * sign, 8 * sign),
                    shift1=(8 * sign, 8 * sign),
                ),
                MissingSectionParams((1, 2)),
            ]
            _, c = comp.plan(params).coordinates()
            assert c.min() >= 0 and c[..., 0].max() <= S[1] - 1 and c[..., 1].max() <= S[2] - 1
            worst.append(max(-c.min(), c.max() - (S[1] - 1)))
    assert max(worst) > -1.5  # within 1.5 voxels of the border: the margin is tight
    # a misalignment rotation never moves a point further than DISPLACEMENT / 2
    a = mis.max_angle(comp._misalign_radius)
    assert 2 * comp._misalign_radius * math.sin(a / 2) <= 8 + 1e-9


def test_sample_smaller_than_sample_size_is_rejected():
    comp = Compose(full_chain(), (5, 32, 32))
    small = tuple(s - 1 for s in comp.sample_size)
    from connectomics_data.errors import VolumeError

    with pytest.raises(VolumeError, match="smaller than Compose.sample_size"):
        comp({"image": np.zeros(small, np.uint8)}, np.random.default_rng(0))


def test_larger_sample_is_centred():
    size = (3, 16, 16)
    comp = Compose([Flip(p=0)], size)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (6, 21, 24), dtype=np.uint8)
    out = comp({"image": big, "label": big}, rng)
    np.testing.assert_array_equal(out["label"], centre_crop(big, size))


# ----------------------------------------------------------------------------- identities
def test_alpha_zero_and_zero_angle_are_identity():
    size = (4, 30, 22)
    comp = Compose([Rotate(rot90=False, p=1), Elastic(alpha=0, p=1)], size)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, comp.sample_size, dtype=np.uint8)
    lab = rng.integers(0, 2**32 - 1, comp.sample_size, dtype=np.uint32)
    params = comp.randomize(rng)
    params[0] = RotateParams(angle=0.0)
    assert not np.any(params[1].field)
    out = comp.apply({"image": img, "label": lab}, params)
    np.testing.assert_array_equal(out["label"], centre_crop(lab, size))
    np.testing.assert_array_equal(
        out["image"], centre_crop(img, size).astype(np.float32) * np.float32(1 / 255)
    )


# ----------------------------------------------------------------------------- exact masks
@pytest.mark.parametrize(
    "dtype,offset",
    [
        (np.uint8, 0),
        (np.uint16, 60000),
        (np.uint32, 2**24 + 1),
        (np.uint64, 2**53 + 1),
        (np.int64, -(2**60)),
    ],
)
def test_mask_values_are_a_subset_of_the_input(dtype, offset):
    size = (6, 40, 52)
    comp = Compose(full_chain(rot90=False), size)
    shape = comp.sample_size
    lab = blob_labels(shape, cell=6, dtype=np.uint64 if dtype == np.int64 else dtype, offset=0)
    if dtype == np.int64:
        lab = lab.astype(np.int64) + offset
    elif offset:
        lab = (lab.astype(np.uint64) % 200 + np.uint64(offset)).astype(dtype)
    rng = np.random.default_rng(5)
    values = set(np.unique(lab).tolist())
    for _ in range(5):
        out = comp({"image": np.zeros(shape, np.uint8), "label": lab}, rng)["label"]
        assert out.dtype == lab.dtype and out.shape == size
        assert set(np.unique(out).tolist()) <= values


# ----------------------------------------------------------------------------- reference
def _inverse_ops(arr2d: np.ndarray, k: int, f: FlipParams | None) -> np.ndarray:
    """The G-grid array F with ops(F) == arr2d (ops: rot90 k, flip y, flip x, transpose)."""
    a = arr2d
    if f is not None:
        if f.yx:
            a = a.T
        if f.x:
            a = a[:, ::-1]
        if f.y:
            a = a[::-1]
    return np.rot90(a, -k)


def _ops(vol: np.ndarray, k: int, f: FlipParams | None) -> np.ndarray:
    a = np.rot90(vol, k, axes=(1, 2))
    if f is not None:
        if f.z:
            a = a[::-1]
        if f.y:
            a = a[:, ::-1]
        if f.x:
            a = a[:, :, ::-1]
        if f.yx:
            a = a.transpose(0, 2, 1)
    return a


def reference_warp(comp: Compose, params, vol: np.ndarray, order: int) -> np.ndarray:
    """Apply the geometric params stage by stage, one resample per stage (scipy
    map_coordinates, order 1 or 0), in data order: misalign, delete sections, rescale+rotate,
    elastic + crop, then the permutations with numpy."""
    rot, res, flip, ela, mis, ms = params
    Z, Y, X = comp.input_size
    Sz, Sy, Sx = vol.shape
    wz = comp.sample_size[0]
    k = rot.k if rot is not None and rot.angle is None else 0
    swap = (k % 2 == 1) ^ bool(flip is not None and flip.yx)
    yp, xp = (X, Y) if swap else (Y, X)
    cy = (Sy - yp) // 2 + (yp - 1) / 2
    cx = (Sx - xp) // 2 + (xp - 1) / 2
    yy, xx = np.meshgrid(
        np.arange(Sy, dtype=np.float64), np.arange(Sx, dtype=np.float64), indexing="ij"
    )
    z0 = (Sz - wz) // 2
    # 1. misalignment, per window slice
    x1 = np.empty((wz, Sy, Sx), vol.dtype)
    for w in range(wz):
        src = vol[z0 + w]
        uy, ux = yy - cy, xx - cx
        if mis is not None and (w == mis.idx if mis.mode == "slip" else w >= mis.idx):
            hit = True
        else:
            hit = False
        if mis is None:
            qy, qx = yy, xx
        elif mis.angle is None:
            t = mis.shift1 if hit else mis.shift0
            qy, qx = yy + t[0], xx + t[1]
        else:
            a = mis.angle if hit else 0.0
            qy = cy + np.cos(a) * uy - np.sin(a) * ux
            qx = cx + np.sin(a) * uy + np.cos(a) * ux
        x1[w] = ndimage.map_coordinates(src, [qy, qx], order=order, mode="constant")
    # 2. missing sections
    if ms is not None:
        keep = [w for w in range(wz) if w not in ms.deleted]
    else:
        keep = list(range((wz - Z) // 2, (wz - Z) // 2 + Z))
    x2 = x1[keep]
    # 3. rescale + any-angle rotation about the centre
    lin = np.eye(2)
    if rot is not None and rot.angle is not None:
        c, s = np.cos(rot.angle), np.sin(rot.angle)
        lin = np.array([[c, -s], [s, c]])
    if res is not None:
        lin = np.diag([res.sy, res.sx]) @ lin
    uy, ux = yy - cy, xx - cx
    qy = cy + lin[0, 0] * uy + lin[0, 1] * ux
    qx = cx + lin[1, 0] * uy + lin[1, 1] * ux
    x3 = np.stack(
        [ndimage.map_coordinates(s_, [qy, qx], order=order, mode="constant") for s_ in x2]
    )
    # 4. elastic on the (permuted) output window, then the permutations
    gy, gx = np.meshgrid(
        np.arange(yp, dtype=np.float64), np.arange(xp, dtype=np.float64), indexing="ij"
    )
    ry = cy + gy - (yp - 1) / 2
    rx = cx + gx - (xp - 1) / 2
    if ela is not None:
        dy = _inverse_ops(ela.field[0].astype(np.float64), k, flip)
        dx = _inverse_ops(ela.field[1].astype(np.float64), k, flip)
        inv = np.linalg.inv(lin)
        ry = ry + inv[0, 0] * dy + inv[0, 1] * dx
        rx = rx + inv[1, 0] * dy + inv[1, 1] * dx
    g = np.stack([ndimage.map_coordinates(s_, [ry, rx], order=order, mode="constant") for s_ in x3])
    return np.ascontiguousarray(_ops(g, k, flip))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("rot90", [True, False])
def test_fused_warp_matches_stage_by_stage_reference(seed, rot90):
    size = (6, 40, 56)
    comp = Compose(full_chain(rot90=rot90, rotate_ratio=0.5), size)
    S = comp.sample_size
    img = smooth_image(S, seed)
    lab = blob_labels(S, cell=28, seed=seed)
    rng = np.random.default_rng(100 + seed)
    params = comp.randomize(rng)
    out = comp.apply({"image": img, "label": lab}, params)
    ref_img = reference_warp(comp, params, img.astype(np.float64), order=1)
    assert np.abs(out["image"] - ref_img).max() < 5e-3
    ref_lab = reference_warp(comp, params, lab, order=0)
    # compare masks away from object boundaries: where the fused source voxel's 7x7
    # neighbourhood holds one id, every stage's rounding lands on that id
    plan = comp.plan(params)
    z_index, coords = plan.coordinates()
    uniform = ndimage.maximum_filter(lab, size=(1, 7, 7)) == ndimage.minimum_filter(
        lab, size=(1, 7, 7)
    )
    iy = np.floor(coords[..., 0] + 0.5).astype(int)
    ix = np.floor(coords[..., 1] + 0.5).astype(int)
    safe = uniform[z_index[:, None, None], iy, ix]
    assert safe.mean() > 0.3
    np.testing.assert_array_equal(out["label"][safe], ref_lab[safe])
    assert (out["label"] == ref_lab).mean() > 0.97


def test_linear_and_nearest_warps_handle_channels():
    size = (3, 20, 20)
    comp = Compose(full_chain(rot90=False), size)
    S = comp.sample_size
    rng = np.random.default_rng(0)
    img4 = rng.random((2,) + S, dtype=np.float32)
    params = comp.randomize(rng)
    plan = comp.plan(params)
    both = warp_linear(img4, plan)
    assert both.shape == (2,) + size
    for c in range(2):
        np.testing.assert_array_equal(both[c], warp_linear(img4[c], plan))
    lab4 = rng.integers(0, 7, (2,) + S).astype(np.uint16)
    near = warp_nearest(lab4, plan)
    np.testing.assert_array_equal(near[1], warp_nearest(lab4[1], plan))


# ----------------------------------------------------------------------------- torch backend
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _torch_matches_numpy(device: str) -> None:
    torch = pytest.importorskip("torch")
    from connectomics_data.augment.warp_torch import warp_batch_torch, warp_plan_torch

    size = (5, 36, 44)
    comp = Compose(full_chain(rot90=False, rotate_ratio=0.5), size)
    S = comp.sample_size
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, S, dtype=np.uint8)
    labs = {
        "u16": rng.integers(0, 65535, S).astype(np.uint16),
        "u32": (rng.integers(0, 100, S) + 2**31).astype(np.uint32),
        "u64": (rng.integers(0, 100, S).astype(np.uint64) + np.uint64(2**63 + 5)),
        "i32": rng.integers(-(2**31), 2**31 - 1, S).astype(np.int32),
    }
    plans = [comp.plan(comp.randomize(rng)) for _ in range(3)]
    for plan in plans:
        ref = warp_linear(img, plan, 1 / 255)
        got = warp_plan_torch(img, plan, "img", scale=1 / 255, device=device).cpu().numpy()
        assert np.abs(got - ref).max() < 1e-4
        for lab in labs.values():
            got = warp_plan_torch(lab, plan, "mask", device=device).cpu().numpy()
            np.testing.assert_array_equal(got, warp_nearest(lab, plan))
    # one batch of three samples, two channels
    vol = torch.from_numpy(np.stack([np.stack([img, img[::-1].copy()])] * 3)).to(device)
    zi = torch.from_numpy(np.stack([p.coordinates()[0] for p in plans]))
    co = torch.from_numpy(np.stack([p.coordinates()[1] for p in plans]))
    out = warp_batch_torch(vol, zi, co, "img", 1 / 255).cpu().numpy()
    for b, plan in enumerate(plans):
        assert np.abs(out[b, 1] - warp_linear(img[::-1].copy(), plan, 1 / 255)).max() < 1e-4


def test_torch_cpu_warp_matches_numpy():
    _torch_matches_numpy("cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not _cuda_available(), reason="needs CUDA")
def test_torch_cuda_warp_matches_numpy():
    _torch_matches_numpy("cuda")


# ----------------------------------------------------------------------------- property


@settings(max_examples=40, deadline=None)
@given(
    size=st.tuples(st.integers(1, 6), st.integers(4, 70), st.integers(4, 70)),
    which=st.lists(st.booleans(), min_size=6, max_size=6),
    rot90=st.booleans(),
    alpha=st.floats(0, 30),
    sigma=st.floats(0.5, 8),
    disp=st.integers(0, 20),
    sections=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_reach_bound_holds_for_any_chain(size, which, rot90, alpha, sigma, disp, sections, seed):
    chain = [
        Rotate(rot90=rot90, p=1),
        Rescale(fix_aspect=bool(seed % 2), p=1),
        Flip(p=1),
        Elastic(alpha=alpha, sigma=sigma, p=1),
        MisAlignment(displacement=disp, rotate_ratio=0.5, p=1),
        MissingSection(num_sections=sections, p=1),
    ]
    comp = Compose([t for t, keep in zip(chain, which) if keep], size)
    S = comp.sample_size
    rng = np.random.default_rng(seed)
    for _ in range(3):
        params = comp.randomize(rng)
        z_index, coords = comp.plan(params).coordinates()
        assert z_index.min() >= 0 and z_index.max() < S[0]
        assert coords.min() >= 0
        assert coords[..., 0].max() <= S[1] - 1 and coords[..., 1].max() <= S[2] - 1
        out = comp.apply({"image": np.zeros(S, np.uint8), "label": np.ones(S, np.uint8)}, params)
        assert out["image"].shape == size and (out["label"] == 1).all()
