"""VolumeDataset rejection sampling: PyTC semantics, NUM_TRIAL, counters, and the screen.

The key property (see ``connectomics_data.sampling.reject``): screening candidate positions with
block-count bounds changes the cost of hopeless trials, never the samples. Datasets built with
``RejectionPolicy(screen=True)`` and ``screen=False`` must give bit-identical samples, while the
screened one reads and augments less.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from connectomics_data.augment import build_train_augmentor
from connectomics_data.config import load_cfg
from connectomics_data.datasets import VolumeDataset
from connectomics_data.errors import SamplingError
from connectomics_data.geometry import Box
from connectomics_data.io.base import ArrayVolume, Volume
from connectomics_data.sampling import Coins, RejectionPolicy, sample_rng
from connectomics_data.targets import parse_targets, parse_weights

SHAPE = (10, 72, 72)
PAD = ((1, 1), (4, 4), (4, 4))


class CountingVolume(Volume):
    """An in-memory volume that counts ``read`` calls."""

    def __init__(self, array: np.ndarray, path: str):
        self.inner = ArrayVolume(array, path=path)
        self.path = path
        self.reads = 0

    @property
    def shape(self):
        return self.inner.shape

    @property
    def dtype(self):
        return self.inner.dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        return self.inner._read_inside(box)

    def read(self, box=None, pad_mode="reflect", cval=0):
        self.reads += 1
        return super().read(box, pad_mode, cval)


class CountingAugmentor:
    """Wraps a Compose and counts its calls."""

    def __init__(self, inner):
        self.inner = inner
        self.sample_size = inner.sample_size
        self.input_size = inner.input_size
        self.calls = 0

    def __call__(self, sample, rng):
        self.calls += 1
        return self.inner(sample, rng)


def sparse_volumes(seed: int = 0, objects: int = 3):
    """uint8 image and a label with a few small cuboid objects (ids 3, 4, ...), ~0.2% foreground."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    label = np.zeros(SHAPE, np.uint16)
    for k in range(objects):
        z, y, x = rng.integers(0, SHAPE[0] - 3), rng.integers(0, SHAPE[1] - 5), rng.integers(0, SHAPE[2] - 5)
        label[z:z + 3, y:y + 5, x:x + 5] = 3 + k
    return image, label


def augmentor(input_size=(4, 17, 17)):
    cfg = load_cfg(None, opts=["MODEL.INPUT_SIZE", str(list(input_size))])
    return build_train_augmentor(cfg)


def make_dataset(image, label, policy, aug=None, valid=None, length=1000, seed=5, targets=("0", "4-1-1")):
    specs = parse_targets(list(targets))
    size = aug.sample_size if aug is not None else (4, 17, 17)
    ds = VolumeDataset(
        [CountingVolume(image, "image.h5")],
        [CountingVolume(label, "label.h5")],
        [None if valid is None else CountingVolume(valid, "mask.h5")],
        sample_size=size, augmentor=aug, mode="train", target_specs=specs,
        weight_specs=parse_weights([["1"]] + [["0"]] * (len(specs) - 1), num_targets=len(specs)),
        pad=[a for a, _ in PAD], rejection=policy, length=length, seed=seed,
    )
    for vol in (*ds.volumes, *ds.labels, *ds.valid_masks):
        if vol is not None:
            vol.reads = 0  # count sample reads only (building the screen tables reads too)
    return ds


def assert_same_sample(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in ("image", "image_affine", "pos"):
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key])
    assert a["trials"] == b["trials"]
    assert len(a["targets"]) == len(b["targets"])
    for x, y in zip(a["targets"], b["targets"]):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    for wa, wb in zip(a["weights"], b["weights"]):
        for x, y in zip(wa, wb):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)


def padded_crop(array: np.ndarray, box: Box, mode: str = "reflect") -> np.ndarray:
    """Reference crop: np.pad of the whole volume, then slice at the (padded) box."""
    full = np.pad(array, PAD, mode=mode)
    return full[box.shift([a for a, _ in PAD]).slices()]


# ------------------------------------------------------------------ the screening property
@pytest.mark.parametrize("p", [1.0, 0.7])
@pytest.mark.parametrize("augment", [False, True], ids=["crop", "aug"])
def test_screen_gives_identical_samples_with_fewer_reads(p, augment):
    image, label = sparse_volumes()
    n = 24 if augment else 40
    policy = RejectionPolicy(size_thres=20, p=p, num_trial=400)
    aug_s = CountingAugmentor(augmentor()) if augment else None
    aug_n = CountingAugmentor(augmentor()) if augment else None
    screened = make_dataset(image, label, replace(policy, screen=True), aug_s)
    full = make_dataset(image, label, replace(policy, screen=False), aug_n)
    for i in range(n):
        a, b = screened[i], full[i]
        assert_same_sample(a, b)
        assert b["screened"] == 0
    s, f = screened.stats, full.stats
    assert s.trials == f.trials > n  # rejections happened
    assert s.accepted == f.accepted == n
    assert f.screened == 0 and s.screened > 0
    # every screened trial skipped one read of each volume (and one augmentation)
    assert full.labels[0].reads == f.trials
    assert screened.labels[0].reads == s.trials - s.screened
    assert screened.volumes[0].reads == s.trials - s.screened
    if augment:
        assert aug_n.calls == f.trials
        assert aug_s.calls == s.trials - s.screened


def test_screen_keeps_samples_that_only_augmentation_makes_pass():
    """Objects of 4 voxels, SIZE_THRES 5, P 1: a crop passes only when the warp (zoom-in,
    elastic) repeats object voxels, so the final count exceeds the source count. The screen
    must not treat the source count as a bound of the augmented crop."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    label = np.zeros(SHAPE, np.uint16)
    for k in range(4):  # sparse: most source regions hold at most one object (bound 4 < 5)
        z, y, x = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1] - 2), rng.integers(0, SHAPE[2] - 2)
        label[z, y:y + 2, x:x + 2] = k + 1
    policy = RejectionPolicy(size_thres=5, p=1.0, num_trial=5000)
    screened = make_dataset(image, label, replace(policy, screen=True), augmentor(), targets=("0",))
    full = make_dataset(image, label, replace(policy, screen=False), augmentor(), targets=("0",))
    counts = []
    for i in range(8):
        a, b = screened[i], full[i]
        assert_same_sample(a, b)
        counts.append(int(a["targets"][0].sum()))
    assert min(counts) >= 5
    assert any(c % 4 for c in counts)  # not a sum of whole 4-voxel objects: voxels were repeated
    assert screened.stats.screened > 0 and screened.stats.trials == full.stats.trials


@pytest.mark.parametrize("augment", [False, True], ids=["crop", "aug"])
def test_screen_with_valid_mask_gives_identical_samples(augment):
    image, label = sparse_volumes(seed=1)
    valid = np.zeros(SHAPE, np.uint8)
    valid[:, :, :20] = 1  # annotated strip: most positions are invalid
    policy = RejectionPolicy(valid_ratio=0.5, num_trial=400)
    aug_s = augmentor() if augment else None
    screened = make_dataset(image, label, replace(policy, screen=True), aug_s, valid=valid)
    full = make_dataset(image, label, replace(policy, screen=False), augmentor() if augment else None, valid=valid)
    for i in range(20):
        a, b = screened[i], full[i]
        assert_same_sample(a, b)
        # the accepted crop's source lies mostly in the annotated strip
        assert a["pos"][3] < 20
    assert screened.stats.trials == full.stats.trials
    assert screened.stats.screened > 0
    assert screened.valid_masks[0].reads == screened.stats.trials - screened.stats.screened


def test_counters_add_up():
    image, label = sparse_volumes(seed=2)
    ds = make_dataset(image, label, RejectionPolicy(size_thres=20, p=0.9, num_trial=400))
    samples = [ds[i] for i in range(30)]
    assert ds.stats.accepted == 30
    assert ds.stats.trials == sum(s["trials"] for s in samples)
    assert ds.stats.screened == sum(s["screened"] for s in samples)
    assert ds.labels[0].reads == ds.stats.trials - ds.stats.screened
    assert ds.stats.rejection_rate == pytest.approx(1 - 30 / ds.stats.trials)


# ------------------------------------------------------------------ the accepted distribution
def replay(ds: VolumeDataset, label: np.ndarray, index: int, thres: int, p: float):
    """Decide sample ``index`` from its random streams with plain numpy: (trials, pos, failing kept?)."""
    for trial in range(ds.rejection.num_trial):
        rng = sample_rng(ds.seed, 0, ds.rank, index, trial)
        vol, box = ds.positions.draw(rng)
        coins = Coins.draw(rng)
        fg = int(np.count_nonzero(padded_crop(label, box)))
        if fg >= thres or coins.fg >= p:
            return trial + 1, [vol, *box.start], fg < thres, fg
    raise AssertionError("replay exhausted")


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_accepted_samples_follow_the_rejection_rule(p):
    image, label = sparse_volumes(seed=3, objects=6)
    thres = 30
    ds = make_dataset(image, label, RejectionPolicy(size_thres=thres, p=p, num_trial=1000), targets=("0",))
    kept_failing = failing = 0
    for i in range(120):
        s = ds[i]
        trials, pos, kept, fg = replay(ds, label, i, thres, p)
        assert s["trials"] == trials
        assert s["pos"].tolist() == pos
        # target '0' is the foreground mask of the accepted crop
        assert int(s["targets"][0].sum()) == fg
        if p == 1.0:
            assert fg >= thres
        kept_failing += kept
    # every rejected candidate failed the size test; kept ones failed it too
    failing = (ds.stats.trials - ds.stats.accepted) + kept_failing
    if p == 0.5:
        assert failing > 100
        assert abs(kept_failing / failing - 0.5) < 0.12


# ------------------------------------------------------------------ NUM_TRIAL and EXHAUSTED
@pytest.mark.parametrize("screen", [False, True])
def test_exhausted_raise_names_volume_position_and_counts(screen):
    image, label = sparse_volumes()
    policy = RejectionPolicy(size_thres=10**6, p=1.0, num_trial=7, screen=screen)
    ds = make_dataset(image, label, policy)
    with pytest.raises(SamplingError) as err:
        ds[3]
    msg = str(err.value)
    assert "image.h5" in msg and "Box(" in msg and "sample 3" in msg
    assert "NUM_TRIAL=7" in msg and "SIZE_THRES=1000000" in msg
    assert "foreground" in msg
    assert ds.stats.trials == 7 and ds.stats.accepted == 0
    if screen:
        assert ds.stats.screened == 7 and ds.labels[0].reads == 0
        assert "at most" in msg  # the bound that decided
    else:
        assert ds.labels[0].reads == 7
        assert "foreground size: foreground" in msg


def test_exhausted_warn_warns_once_and_keeps_drawing():
    image, label = sparse_volumes(seed=3, objects=6)
    policy = RejectionPolicy(size_thres=30, p=1.0, num_trial=1, exhausted="warn")
    ds = make_dataset(image, label, policy, targets=("0",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = [ds[i] for i in range(15)]
    ours = [w for w in caught if "NUM_TRIAL" in str(w.message)]
    assert len(ours) == 1
    assert max(s["trials"] for s in samples) > 1
    assert all(s["targets"][0].sum() >= 30 for s in samples)


# ------------------------------------------------------------------ impossible settings
@pytest.mark.parametrize("screen", [True, False])
def test_all_zero_valid_mask_raises(screen):
    image, label = sparse_volumes()
    policy = RejectionPolicy(valid_ratio=0.5, num_trial=5, screen=screen)
    valid = np.zeros(SHAPE, np.uint8)
    with pytest.raises(SamplingError, match="mask.h5" if screen else "valid ratio"):
        ds = make_dataset(image, label, policy, valid=valid)
        ds[0]


@pytest.mark.parametrize("screen", [True, False])
def test_no_foreground_with_p_one_raises(screen):
    image, _ = sparse_volumes()
    label = np.zeros(SHAPE, np.uint16)
    policy = RejectionPolicy(size_thres=1, p=1.0, num_trial=5, screen=screen)
    with pytest.raises(SamplingError, match="label.h5" if screen else "foreground"):
        ds = make_dataset(image, label, policy)
        ds[0]


def test_no_foreground_with_p_below_one_still_samples():
    image, _ = sparse_volumes()
    label = np.zeros(SHAPE, np.uint16)
    ds = make_dataset(image, label, RejectionPolicy(size_thres=1, p=0.5, num_trial=200))
    s = ds[0]
    assert s["targets"][0].sum() == 0
