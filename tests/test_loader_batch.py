"""collate_samples / Batch (shapes, dtypes, normalisation on .to), pinning, DevicePrefetcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from connectomics_data.datasets import VolumeDataset
from connectomics_data.io.base import ArrayVolume
from connectomics_data.loader import Batch, DevicePrefetcher, collate_samples, normalize_image
from connectomics_data.normalize import ImageNormalizer
from connectomics_data.targets import parse_targets, parse_weights


def make_sample(seed: int, dtype=np.uint8, affine=(-1.0, 2.0 / 255.0), with_weight=True):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (1, 2, 4, 4)).astype(dtype)
    t0 = (rng.random((1, 2, 4, 4)) > 0.5).astype(np.float32)
    t1 = rng.integers(0, 3, (1, 2, 4, 4)).astype(np.int64)
    return {
        "image": image,
        "image_affine": np.array(affine, np.float32),
        "targets": [t0, t1],
        "weights": [[np.ones((1, 2, 4, 4), np.float32) if with_weight else None, None], [None]],
        "extra": {},
        "pos": np.array([0, seed, 1, 2], np.int64),
        "trials": seed + 1,
        "screened": seed,
    }


def test_collate_shapes_and_dtypes():
    samples = [make_sample(i) for i in range(3)]
    b = collate_samples(samples)
    assert len(b) == 3 and not b.normalized and b.in_transit
    # the compact transfer form (internal)
    assert b._image.shape == (3, 1, 2, 4, 4) and b._image.dtype == torch.uint8
    assert b.image_affine.shape == (3, 2) and b.image_affine.dtype == torch.float32
    assert [t.shape for t in b._targets] == [(3, 1, 2, 4, 4)] * 2
    assert [t.dtype for t in b._targets] == [torch.float32, torch.int64]
    assert b._weights[0][0].shape == (3, 1, 2, 4, 4) and b._weights[0][1] is None and b._weights[1] == [None]
    assert b.pos.tolist() == [[0, 0, 1, 2], [0, 1, 1, 2], [0, 2, 1, 2]]
    assert b.trials.tolist() == [1, 2, 3] and b.screened.tolist() == [0, 1, 2]
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(b._image[i].numpy(), s["image"])
        np.testing.assert_array_equal(b._targets[1][i].numpy(), s["targets"][1])


def test_a_missing_weight_in_one_sample_counts_as_ones():
    """None means unweighted; next to weighted samples it becomes ones, never drops the others."""
    s0 = make_sample(0)
    s0["weights"][0][0] = np.full((1, 2, 4, 4), 3.0, np.float32)
    b = collate_samples([s0, make_sample(1, with_weight=False)])
    assert torch.equal(b.weights[0][0][0], torch.full((1, 2, 4, 4), 3.0))
    assert torch.equal(b.weights[0][0][1], torch.ones(1, 2, 4, 4))


def test_deferred_weights_expand_exactly_like_seg_to_weights():
    from connectomics_data.targets import binary_ratio_factors, binary_ratio_weight
    from connectomics_data.targets.weights import DeferredWeight

    rng = np.random.default_rng(3)
    samples = []
    for i in range(3):
        s = make_sample(i)
        target = (rng.random((1, 2, 4, 4)) > 0.8).astype(np.uint8)
        valid = (rng.random((2, 4, 4)) > 0.3).astype(np.uint8)
        s["targets"][0] = target
        s["valid"] = valid
        w_fg, w_bg = binary_ratio_factors(target, valid)
        s["weights"][0] = [DeferredWeight("ratio", 0, w_fg, w_bg, masked=True), DeferredWeight("mask", 0)]
        s["reference"] = (binary_ratio_weight(target.astype(np.float32), valid), valid[None].astype(np.float32))
        samples.append(s)
    out = collate_samples(samples).to("cpu")
    assert out.targets[0].dtype == torch.float32
    for i, s in enumerate(samples):
        assert torch.equal(out.weights[0][0][i], torch.from_numpy(s["reference"][0]))
        assert torch.equal(out.weights[0][1][i], torch.from_numpy(s["reference"][1]))


def test_to_normalises_once_in_float32():
    samples = [make_sample(i, affine=(-0.5 * i, 1.0 / 255 * (i + 1))) for i in range(2)]
    b = collate_samples(samples)
    out = b.to("cpu")
    assert out.normalized and out.image.dtype == torch.float32
    for i, s in enumerate(samples):
        ref = s["image"].astype(np.float64) * s["image_affine"][1] + s["image_affine"][0]
        np.testing.assert_allclose(out.image[i].numpy(), ref, rtol=1e-6, atol=1e-6)
    again = out.to("cpu")
    assert torch.equal(again.image, out.image)  # not normalised twice
    raw = b.to("cpu", normalize=False)
    assert raw._image.dtype == torch.uint8 and raw.in_transit
    assert b._image.dtype == torch.uint8 and b.in_transit  # .to() does not modify the original


def test_mixed_image_dtypes_are_stacked_as_float32():
    a = make_sample(0)
    b = make_sample(1)
    b["image"] = (b["image"].astype(np.float32) / 255).astype(np.float32)
    b["image_affine"] = np.array([-1.0, 2.0], np.float32)
    batch = collate_samples([a, b])
    assert batch.image.dtype == torch.float32
    out = batch.to("cpu").image
    np.testing.assert_allclose(out[0].numpy(), a["image"] * (2 / 255) - 1, atol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), b["image"] * 2 - 1, atol=1e-6)


def test_normalize_image_per_sample():
    image = torch.arange(8, dtype=torch.uint8).reshape(2, 1, 4)
    affine = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    out = normalize_image(image, affine)
    assert out.tolist() == [[[1.0, 3.0, 5.0, 7.0]], [[1.0, 1.5, 2.0, 2.5]]]


def test_empty_collate_raises():
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory_and_cuda_transfer():
    b = collate_samples([make_sample(i) for i in range(2)]).pin_memory()
    assert b.image.is_pinned() and all(t.is_pinned() for t in b.targets)
    out = b.to("cuda", non_blocking=True)
    assert out.image.is_cuda and out.image.dtype == torch.float32
    assert torch.equal(out.image.cpu(), collate_samples([make_sample(i) for i in range(2)]).to("cpu").image)


def tiny_loader(batch_size=2):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 20, 20), dtype=np.uint8)
    label = (rng.random((6, 20, 20)) > 0.7).astype(np.uint8)
    ds = VolumeDataset([ArrayVolume(image)], [ArrayVolume(label)], sample_size=(2, 8, 8),
                       target_specs=parse_targets(["0"]), weight_specs=parse_weights([["1"]], num_targets=1),
                       normalizers=[ImageNormalizer(0.3, 0.2)], pad=[1, 2, 2], length=7, seed=9)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate_samples)


def test_device_prefetcher_on_cpu_matches_the_loader():
    loader = tiny_loader()
    ref = [b.to("cpu") for b in loader]
    pre = DevicePrefetcher(loader, "cpu")
    got = list(pre)
    assert len(got) == len(ref) == 4 and len(got[-1]) == 1
    for a, b in zip(ref, got):
        assert b.normalized and b.image.dtype == torch.float32
        assert torch.equal(a.image, b.image) and torch.equal(a.pos, b.pos)
        assert all(torch.equal(x, y) for x, y in zip(a.targets, b.targets))
        assert torch.equal(a.weights[0][0], b.weights[0][0])
    assert pre.wait_seconds >= 0.0
    assert not pre.use_cuda and pre.stream is None


def test_device_prefetcher_on_empty_loader():
    pre = DevicePrefetcher([], "cpu")
    assert list(pre) == [] and pre.wait_seconds >= 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_prefetcher_on_cuda():
    loader = tiny_loader()
    ref = [b.to("cpu") for b in loader]
    got = [b.image.cpu() for b in DevicePrefetcher(loader, "cuda")]
    assert all(torch.equal(a.image, b) for a, b in zip(ref, got))


def test_batch_defaults():
    b = Batch(image=torch.zeros(2, 1, 3), image_affine=torch.zeros(2, 2))
    assert b.targets == [] and b.weights == [] and b.extra == {} and len(b) == 2


def deferred_batch():
    """An in-transit batch with uint8 binary targets, ratio + mask recipes and a valid mask."""
    from connectomics_data.targets import binary_ratio_factors
    from connectomics_data.targets.weights import DeferredWeight

    rng = np.random.default_rng(5)
    samples = []
    for i in range(2):
        s = make_sample(i)
        s["targets"][0] = (rng.random((1, 2, 4, 4)) > 0.6).astype(np.uint8)
        s["valid"] = (rng.random((2, 4, 4)) > 0.2).astype(np.uint8)
        w_fg, w_bg = binary_ratio_factors(s["targets"][0], s["valid"])
        s["weights"][0] = [DeferredWeight("ratio", 0, w_fg, w_bg, masked=True), DeferredWeight("mask", 0)]
        samples.append(s)
    return collate_samples(samples)


def assert_ready(b: Batch) -> None:
    """The contract after .to(): float32 image, float32 / int64 targets, weights tensors or None."""
    assert not b.in_transit and b.normalized
    assert b.image.dtype == torch.float32
    assert [t.dtype for t in b.targets] == [torch.float32, torch.int64]
    for ws, t in zip(b.weights, b.targets):
        for w in ws:
            assert w is None or (isinstance(w, torch.Tensor) and w.dtype == torch.float32)
            if w is not None:
                torch.broadcast_shapes(w.shape, t.shape)


def test_after_to_every_field_keeps_the_docstring():
    b = deferred_batch()
    out = b.to("cpu")
    assert_ready(out)
    assert out.weights[0][0].shape == (2, 1, 2, 4, 4) and out.weights[0][1].shape == (2, 1, 2, 4, 4)
    assert out.valid.dtype == torch.uint8 and out.valid.shape == (2, 2, 4, 4)
    # the mask weight is the valid mask; the ratio weight is zero outside it
    assert torch.equal(out.weights[0][1][:, 0], out.valid.float())
    assert torch.all(out.weights[0][0][:, 0][out.valid == 0] == 0)
    assert b.in_transit  # the original still holds the compact form


def test_reading_before_to_finishes_in_place_exactly_like_to():
    ref = deferred_batch().to("cpu")
    b = deferred_batch()
    assert b.in_transit
    image = b.image  # a read finishes the batch on the CPU
    assert_ready(b)
    assert torch.equal(image, ref.image)
    assert all(torch.equal(x, y) for x, y in zip(b.targets, ref.targets))
    assert torch.equal(b.weights[0][0], ref.weights[0][0]) and torch.equal(b.weights[0][1], ref.weights[0][1])
    # and a ready batch moves without being finished again
    assert torch.equal(b.to("cpu").image, ref.image)


def test_setting_a_field_finishes_first():
    b = deferred_batch()
    b.targets = [t * 2 for t in b.targets]
    assert_ready(b)
    b2 = deferred_batch()
    b2.image = torch.zeros(2, 1, 2, 4, 4)
    assert not b2.in_transit and b2.weights[0][0].dtype == torch.float32


def test_repr_shows_dtypes_and_shapes_not_values():
    b = deferred_batch()
    text = repr(b)
    assert text.startswith("Batch(2 samples on cpu, in transit (call .to(device))")
    assert "image=uint8[2, 1, 2, 4, 4] -> normalised float32," in text
    assert "targets=[uint8[2, 1, 2, 4, 4] -> float32, int64[2, 1, 2, 4, 4]]" in text
    assert "ratio-weight recipe -> float32[2, 1, 2, 4, 4]" in text
    assert "valid=uint8[2, 2, 4, 4], pos=int64[2, 4]" in text
    ready = repr(b.to("cpu"))
    assert "ready" in ready and "image=float32[2, 1, 2, 4, 4]," in ready and "recipe" not in ready
    assert "weights=[[float32[2, 1, 2, 4, 4], float32[2, 1, 2, 4, 4]], [None]]" in ready
    assert "tensor(" not in text + ready and len(ready.splitlines()) == 6


def test_in_transit_batch_pickles_compact():
    import pickle

    b = deferred_batch()
    back = pickle.loads(pickle.dumps(b))
    assert back.in_transit and back._image.dtype == torch.uint8
    assert torch.equal(back.to("cpu").weights[0][0], b.to("cpu").weights[0][0])


def test_a_ready_batch_cannot_hold_recipes():
    b = deferred_batch()
    with pytest.raises(ValueError, match="recipes"):
        Batch(b._image, b.image_affine, b._targets, b._weights, normalized=True)
