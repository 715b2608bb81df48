"""``VolumeDataset``: training, validation and test samples from volumes in memory or on disk.

Glue only: positions come from :mod:`connectomics_data.sampling`, reads from
:mod:`connectomics_data.io`, augmentation from :mod:`connectomics_data.augment`, targets and
weights from :mod:`connectomics_data.targets`.

A training sample is a pure function of ``(seed, rank, index)``: the DataLoader's sampler hands
out global sample indices (see :class:`connectomics_data.loader.SampleIndexSampler`), and every
random choice comes from :func:`~connectomics_data.sampling.sample_rng`. The result does not
depend on the number of workers.

Sample dict (what ``__getitem__`` returns, before collation):

* ``image``: ``(C, z, y, x)`` (``(C, y, x)`` with ``do_2d``); uint8 raw values when nothing
  changed the intensities (normalised later, in the training process: 4x fewer bytes cross the
  process boundary), else float32 in [0, 1]. ``image_affine`` = ``(offset, scale)`` maps it to
  the network input: ``input = image * scale + offset``.
* ``targets``: list, one ``(C_t, z, y, x)`` array per TARGET_OPT (float32, int64 for classes).
* ``weights``: list (per target) of lists (per WEIGHT_OPT entry) of float32 arrays or None.
* ``extra``: dict of extra 'img' targets (float32 [0, 1], same geometry as the image).
* ``pos``: int64 ``[volume, z, y, x]``, the crop origin (unpadded coordinates, may be < 0).
* ``trials`` / ``screened``: rejection-sampling counts of this sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from ..errors import SamplingError, VolumeError
from ..geometry import Box, SlidingWindowGrid, normalize_halo
from ..io.base import Volume
from ..normalize import ImageNormalizer
from ..sampling import (
    STREAM_AUGMENT,
    BlockCountTable,
    Coins,
    PositionSampler,
    RejectionPolicy,
    SamplingStats,
    judge,
    sample_rng,
    screen,
    source_extent,
)
from ..targets import (
    AffinityTarget,
    BinaryRatioWeight,
    BinaryTarget,
    ContourTarget,
    DeferredWeight,
    NoWeight,
    PolarityTarget,
    SmallObjectTarget,
    binary_ratio_factors,
    seg_to_targets,
    seg_to_weights,
)

MODES = ("train", "val", "test")


class LabelTransform:
    """PyTC's per-volume label options: LABEL_BINARY (``// 255`` when the max is above 1) and
    LABEL_MAG (``/ LABEL_MAG`` as float32), applied to each crop."""

    def __init__(self, binary: bool = False, mag: float = 0):
        self.binary = bool(binary)
        self.mag = float(mag)
        self.divide_255: list[bool] = []

    def prepare(self, labels: Sequence[Volume]) -> None:
        if self.binary:
            from ..normalize import volume_range

            self.divide_255 = [volume_range(v)[1] > 1 for v in labels]

    def __call__(self, crop: np.ndarray, volume_index: int) -> np.ndarray:
        if self.binary and self.divide_255 and self.divide_255[volume_index]:
            crop = crop // 255
        if self.mag:
            crop = crop.astype(np.float32) / np.float32(self.mag)
        return crop


class VolumeDataset(torch.utils.data.Dataset):
    """Samples from one or more volumes.

    Args:
        volumes: image :class:`~connectomics_data.io.Volume` sources, ``(z, y, x)`` or
            ``(c, z, y, x)``.
        labels, valid_masks: one per volume (or None); spatial shapes must match the image.
        sample_size: crop size (z, y, x) read per sample (``augmentor.sample_size`` in training).
        augmentor: a :class:`~connectomics_data.augment.Compose` (train mode only) or None.
        mode: 'train' (random positions, augmentation, rejection), 'val' (sliding-window grid,
            targets, no augmentation) or 'test' (grid, image only).
        extra_images: name -> volumes of extra 'img' targets (e.g. a clean image).
        target_specs, weight_specs: parsed TARGET_OPT / WEIGHT_OPT (see :mod:`..targets`).
        erosion, dilation: MODEL.LABEL_EROSION / LABEL_DILATION.
        normalizers: one :class:`ImageNormalizer` per volume (default: uint8 PyTC one).
        pad: DATASET.PAD_SIZE (3 or 6 ints), read from outside the volume with ``pad_mode``.
        rejection: VALID_RATIO and REJECT_SAMPLING settings.
        length: samples per epoch in train mode (required there).
        stride: window stride in val/test mode (default half the sample size).
        seed, rank: the random stream of this process (see module docstring).
        volume_weights: per-volume weights ('element' volume sampling) or None ('automatic').
        do_2d: samples have z = 1 and are squeezed to 2D.
        reduce_labels: DATASET.REDUCE_LABEL, accepted for PyTC compatibility; relabelling a crop
            changes none of the targets here (labels are never cast to float), so it is not done.
        label_transform: LABEL_BINARY / LABEL_MAG handling.
        names: volume names for messages (default: the volumes' paths).
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        labels: Sequence[Volume | None] | None = None,
        valid_masks: Sequence[Volume | None] | None = None,
        *,
        sample_size: Sequence[int],
        augmentor: Any = None,
        mode: str = "train",
        extra_images: Mapping[str, Sequence[Volume]] | None = None,
        target_specs: Sequence[Any] = (),
        weight_specs: Sequence[Sequence[Any]] = (),
        erosion: Any = None,
        dilation: Any = None,
        normalizers: Sequence[ImageNormalizer] | None = None,
        pad: int | Sequence[int] = 0,
        pad_mode: str = "reflect",
        rejection: RejectionPolicy | None = None,
        length: int | None = None,
        stride: Sequence[int] | None = None,
        seed: int = 0,
        rank: int = 0,
        volume_weights: Sequence[float] | None = None,
        do_2d: bool = False,
        reduce_labels: bool = True,
        label_transform: LabelTransform | None = None,
        names: Sequence[str] | None = None,
        screen_block: Sequence[int] = (1, 8, 8),
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not volumes:
            raise ValueError("VolumeDataset needs at least one image volume")
        self.mode = mode
        self.volumes = list(volumes)
        n = len(self.volumes)
        self.names = list(names) if names is not None else [getattr(v, "path", f"volume {i}") for i, v in enumerate(self.volumes)]
        self.labels = self._per_volume(labels, "labels")
        self.valid_masks = self._per_volume(valid_masks, "valid masks")
        self.extra_images = {k: self._per_volume(v, f"extra image {k!r}") for k, v in (extra_images or {}).items()}
        self.sample_size = tuple(int(s) for s in sample_size)
        self.augmentor = augmentor if mode == "train" else None
        self.target_specs = list(target_specs)
        self.weight_specs = [list(w) for w in weight_specs]
        self.erosion, self.dilation = erosion, dilation
        self.normalizers = list(normalizers) if normalizers is not None else [ImageNormalizer() for _ in range(n)]
        self.pad = normalize_halo(pad, 3)
        self.pad_mode = pad_mode
        self.rejection = rejection or RejectionPolicy()
        self.seed, self.rank = int(seed), int(rank)
        self.do_2d = bool(do_2d)
        # PyTC relabels each crop to 1..N so that float32 holds its ids; labels stay integer
        # here and every target depends only on which voxels share an id (or, for '0-a-b', '1'
        # and '9', on the ids themselves), so relabelling would change nothing or break targets.
        self.reduce_labels = False
        # binary-valued targets travel as uint8 (4x fewer bytes) and become float32 in Batch.to
        self._compact_targets = [
            isinstance(spec, (BinaryTarget, AffinityTarget, SmallObjectTarget, ContourTarget))
            or (isinstance(spec, PolarityTarget) and not spec.is_class_target)
            for spec in self.target_specs
        ]
        self.label_transform = label_transform or LabelTransform()
        self.stats = SamplingStats()
        self._warned_exhausted = False
        self._check_shapes()
        if self.augmentor is not None:
            aug_size = tuple(self.augmentor.sample_size)
            if aug_size != self.sample_size:
                raise ValueError(f"sample_size {list(self.sample_size)} differs from the augmentor's sample size {list(aug_size)}")
            self.output_size = tuple(self.augmentor.input_size)
        else:
            self.output_size = self.sample_size
        if self.do_2d and self.output_size[0] != 1:
            raise ValueError(f"do_2d needs samples of z = 1, got {list(self.output_size)}")
        self.label_transform.prepare([lab for lab in self.labels if lab is not None])
        shapes = [v.spatial_shape for v in self.volumes]
        if mode == "train":
            if length is None or length < 1:
                raise ValueError("train mode needs length >= 1 (samples per epoch)")
            self.length = int(length)
            self.positions = PositionSampler(shapes, self.sample_size, self.pad, volume_weights, self.names)
            self._fg_tables: list[BlockCountTable | None] = [None] * n
            self._valid_tables: list[BlockCountTable | None] = [None] * n
            if self.rejection.screen:
                self._build_screen_tables(screen_block)
        else:
            stride = tuple(int(s) for s in (stride or [max(1, s // 2) for s in self.sample_size]))
            self.grids = []
            for shape, name in zip(shapes, self.names):
                padded = [s + a + b for s, (a, b) in zip(shape, self.pad)]
                try:
                    self.grids.append(SlidingWindowGrid(padded, self.sample_size, stride))
                except ValueError as err:
                    raise VolumeError(
                        f"{name}: the window {list(self.sample_size)} does not fit the volume {list(shape)} "
                        f"padded to {padded}: {err}"
                    ) from err
            self._offsets = np.cumsum([0] + [len(g) for g in self.grids])
            self.length = int(self._offsets[-1])

    # ------------------------------------------------------------------ setup
    def _per_volume(self, items, what: str) -> list:
        if items is None:
            return [None] * len(self.volumes)
        items = list(items)
        if len(items) != len(self.volumes):
            raise ValueError(f"got {len(items)} {what} for {len(self.volumes)} image volumes")
        return items

    def _check_shapes(self) -> None:
        nch = {len(v.channel_shape) and v.channel_shape for v in self.volumes}
        if len(nch) > 1:
            raise VolumeError(f"image volumes have different channel counts: {sorted(map(str, nch))}")
        for i, vol in enumerate(self.volumes):
            for what, other in (("label", self.labels[i]), ("valid mask", self.valid_masks[i]),
                                *((f"extra image {k!r}", v[i]) for k, v in self.extra_images.items())):
                if other is not None and tuple(other.spatial_shape) != tuple(vol.spatial_shape):
                    raise VolumeError(
                        f"{what} {getattr(other, 'path', '?')} has shape {list(other.spatial_shape)} but image "
                        f"{self.names[i]} has shape {list(vol.spatial_shape)}"
                    )
            if self.labels[i] is not None and len(self.labels[i].channel_shape):
                raise VolumeError(f"label {self.labels[i].path} must be 3D (z, y, x), got shape {list(self.labels[i].shape)}")

    def _build_screen_tables(self, block: Sequence[int]) -> None:
        policy = self.rejection
        for i in range(len(self.volumes)):
            if self.labels[i] is not None and policy.tests_foreground:
                self._fg_tables[i] = BlockCountTable(self.labels[i], block)
            if self.valid_masks[i] is not None:
                table = BlockCountTable(self.valid_masks[i], block)
                if table.total == 0:
                    raise SamplingError(
                        f"valid mask {self.valid_masks[i].path} is zero everywhere: no sample of "
                        f"{self.names[i]} can pass DATASET.VALID_RATIO = {policy.valid_ratio}"
                    )
                self._valid_tables[i] = table
            fg = self._fg_tables[i]
            if fg is not None and fg.total == 0 and policy.p >= 1.0:
                raise SamplingError(
                    f"label {self.labels[i].path} has no foreground anywhere, and rejection sampling "
                    f"(SIZE_THRES={policy.size_thres}, DIVERSITY={policy.diversity}, P=1.0) rejects every sample"
                )

    def __len__(self) -> int:
        return self.length

    # ------------------------------------------------------------------ reading
    def _read(self, vol: int, box: Box) -> dict[str, np.ndarray]:
        sample: dict[str, np.ndarray] = {"image": self.volumes[vol].read(box, self.pad_mode)}
        if self.labels[vol] is not None:
            sample["label"] = self.label_transform(self.labels[vol].read(box, self.pad_mode), vol)
        if self.valid_masks[vol] is not None:
            sample["valid_mask"] = self.valid_masks[vol].read(box, self.pad_mode)
        for key, vols in self.extra_images.items():
            sample[key] = self.normalizers[vol].to_unit(vols[vol].read(box, self.pad_mode))
        return sample

    def _image_for_augment(self, vol: int, raw: np.ndarray) -> np.ndarray:
        if raw.dtype == np.uint8 and self.normalizers[vol].value_range is None:
            return raw
        return self.normalizers[vol].to_unit(raw)

    # ------------------------------------------------------------------ samples
    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.mode == "train":
            return self._train_sample(int(index))
        return self._grid_sample(int(index))

    def _train_sample(self, index: int) -> dict[str, Any]:
        policy = self.rejection
        max_trials = policy.num_trial if policy.exhausted == "raise" else policy.num_trial * 100
        crop_voxels = int(np.prod(self.output_size))
        screened = 0
        last = None
        for trial in range(max_trials):
            rng = sample_rng(self.seed, 0, self.rank, index, trial)
            vol, box = self.positions.draw(rng)
            coins = Coins.draw(rng)
            self.stats.trials += 1
            reason = self._screen(vol, box, coins, crop_voxels) if policy.screen else ""
            if reason:
                screened += 1
                self.stats.screened += 1
                last = (vol, box, reason)
                continue
            sample = self._read(vol, box)
            if self.augmentor is not None:
                sample["image"] = self._image_for_augment(vol, sample["image"])
                sample = self.augmentor(sample, sample_rng(self.seed, 0, self.rank, index, trial, STREAM_AUGMENT))
            label, valid = sample.get("label"), sample.get("valid_mask")
            verdict = judge(policy, coins, label, valid)
            if verdict.accepted:
                self.stats.accepted += 1
                out = self._finish(vol, box, sample)
                out["trials"] = trial + 1
                out["screened"] = screened
                return out
            last = (vol, box, verdict)
            if trial + 1 == policy.num_trial and policy.exhausted == "warn" and not self._warned_exhausted:
                self._warned_exhausted = True
                warnings.warn(
                    f"sample {index}: {policy.num_trial} trials (DATASET.REJECT_SAMPLING.NUM_TRIAL) all "
                    f"rejected; drawing more (EXHAUSTED='warn')", stacklevel=2,
                )
        vol, box, verdict = last  # type: ignore[misc]
        detail = verdict if isinstance(verdict, str) else (
            f"{verdict.reason}: foreground {verdict.fg_count}, distinct ids {verdict.distinct}, "
            f"valid fraction {verdict.valid_fraction:.3f}"
        )
        raise SamplingError(
            f"rejection sampling gave up on sample {index} after {max_trials} trials "
            f"(DATASET.REJECT_SAMPLING.NUM_TRIAL={policy.num_trial}); last candidate: {self.names[vol]} at "
            f"{box} ({detail}); thresholds SIZE_THRES={policy.size_thres}, DIVERSITY={policy.diversity}, "
            f"VALID_RATIO={policy.valid_ratio}, P={policy.p}"
        )

    def _screen(self, vol: int, box: Box, coins: Coins, crop_voxels: int) -> str:
        """The rejection reason (with the bounds that decided it) of a screened-out trial, or ''."""
        fg_table, valid_table = self._fg_tables[vol], self._valid_tables[vol]
        if fg_table is None and valid_table is None:
            return ""
        # Every voxel of the final crop is a copy of a voxel of ``src`` (see sampling.reject).
        src, mult = source_extent(box, self.volumes[vol].spatial_shape, self.pad_mode)
        exact = self.augmentor is None
        fg = None if fg_table is None else fg_table.upper_bound(src) * mult
        valid = None if valid_table is None else valid_table.upper_bound(src) * mult
        reason = screen(self.rejection, coins, fg, valid, crop_voxels, exact_crop=exact)
        if not reason:
            return ""
        bounds = ", ".join(f"{what} at most {n}" for what, n in (("foreground", fg), ("valid voxels", valid))
                           if n is not None)
        return f"{reason}, screened: {bounds} of {crop_voxels} in source region {src}"

    def _finish(self, vol: int, box: Box, sample: Mapping[str, Any]) -> dict[str, Any]:
        image = sample["image"]
        norm = self.normalizers[vol]
        if image.dtype == np.uint8 and norm.value_range is None:
            affine = norm.affine()
        elif image.dtype == np.float32 and (self.augmentor is not None):
            affine = norm.unit_affine()
        else:
            image = norm.to_unit(image)
            affine = norm.unit_affine()
        if image.ndim == 3:
            image = image[None]
        out: dict[str, Any] = {
            "pos": np.array([vol, *box.start], dtype=np.int64),
            "image_affine": np.array(affine, dtype=np.float32),
        }
        label = sample.get("label")
        valid = sample.get("valid_mask")
        targets: list[np.ndarray] = []
        weights: list[list[np.ndarray | None]] = []
        if label is not None and self.target_specs:
            try:
                targets = seg_to_targets(np.asarray(label), self.target_specs, self.erosion, self.dilation)
            except ValueError as err:  # e.g. a float label with non-integral values
                raise VolumeError(f"label {getattr(self.labels[vol], 'path', vol)} at {box}: {err}") from err
            weights = self._weights(targets, valid, label)
            targets = [t.astype(np.uint8) if compact else t for t, compact in zip(targets, self._compact_targets)]
        valid_out = None
        if valid is not None and any(isinstance(w, DeferredWeight) and (w.kind == "mask" or w.masked)
                                     for ws in weights for w in ws):
            valid_out = (np.asarray(valid) != 0).astype(np.uint8)
        extra = {k: sample[k] for k in self.extra_images}
        if self.do_2d:
            image = image[:, 0]
            targets = [t[:, 0] for t in targets]
            weights = [[w if w is None or isinstance(w, DeferredWeight) else w[:, 0] for w in ws] for ws in weights]
            extra = {k: v[..., 0, :, :] for k, v in extra.items()}
            valid_out = None if valid_out is None else valid_out[0]
        out["image"] = np.ascontiguousarray(image)
        out["targets"] = [np.ascontiguousarray(t) for t in targets]
        out["weights"] = weights
        out["valid"] = valid_out
        out["extra"] = extra
        return out

    def _weights(self, targets: list[np.ndarray], valid: np.ndarray | None,
                 label: np.ndarray) -> list[list[Any]]:
        """Weights per target and option; the valid mask ('0') and class-ratio ('1') weights are
        shipped as :class:`DeferredWeight` recipes and expanded on the device (exact)."""
        if not self.weight_specs:
            return []
        mask = None if valid is None else np.asarray(valid) != 0

        def deferrable(spec) -> bool:
            return isinstance(spec, NoWeight) or (isinstance(spec, BinaryRatioWeight) and not spec.dilate)

        rest = [[spec for spec in specs if not deferrable(spec)] for specs in self.weight_specs]
        computed = seg_to_weights(targets, rest, valid, label) if any(rest) else [[] for _ in targets]
        out: list[list[Any]] = []
        for i, specs in enumerate(self.weight_specs):
            row: list[Any] = []
            it = iter(computed[i])
            for spec in specs:
                if isinstance(spec, NoWeight):
                    row.append(None if mask is None else DeferredWeight("mask", i))
                elif deferrable(spec):
                    w_fg, w_bg = binary_ratio_factors(targets[i], mask)
                    row.append(DeferredWeight("ratio", i, w_fg, w_bg, masked=mask is not None))
                else:
                    row.append(next(it))
            out.append(row)
        return out

    def _grid_sample(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"sample index {index} out of range for {self.length} windows")
        vol = int(np.searchsorted(self._offsets, index, side="right") - 1)
        window = self.grids[vol][index - int(self._offsets[vol])]
        box = window.shift([-a for a, _ in self.pad])
        sample = self._read(vol, box)
        if self.mode == "test":
            sample = {"image": sample["image"]}
        out = self._finish(vol, box, sample)
        out["trials"], out["screened"] = 1, 0
        return out
