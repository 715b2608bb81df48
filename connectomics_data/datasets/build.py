"""Build a :class:`VolumeDataset` from a config (PyTC v1 keys plus ours)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from yacs.config import CfgNode

from ..config.loader import REPO_ROOT
from ..errors import ConfigError, VolumeError, VolumeNotFoundError
from ..io import open_volume, resolve_volume_specs
from ..io.base import ArrayVolume, Volume
from ..io.scales import format_voxel_size, same_voxel_size
from ..io.shared import SharedArrayVolume
from ..normalize import normalizer_for
from ..sampling import RejectionPolicy
from ..targets import parse_targets, parse_weights
from .volume_dataset import LabelTransform, VolumeDataset

NAME_KEYS = {
    "train": ("IMAGE_NAME", "LABEL_NAME", "VALID_MASK_NAME"),
    "val": ("VAL_IMAGE_NAME", "VAL_LABEL_NAME", "VAL_VALID_MASK_NAME"),
    "test": ("IMAGE_NAME", None, None),
}


def resolve_input_path(input_path: Any) -> Any:
    """INPUT_PATH as given when it exists from the working directory, else from the repository
    root (so the shipped configs work from anywhere); '@'-joined paths are resolved one by one."""
    if not isinstance(input_path, str) or not input_path:
        return input_path
    parts = input_path.split("@")
    out = []
    for part in parts:
        p = Path(part)
        if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
            p = REPO_ROOT / p
        out.append(str(p))
    return "@".join(out)


def _zoom(volume: Volume, scale: Sequence[float], order: int) -> Volume:
    from scipy.ndimage import zoom

    if all(float(s) == 1.0 for s in scale):
        return volume
    data = volume.read()
    factors = [1.0] * len(volume.channel_shape) + [float(s) for s in scale]
    return ArrayVolume(zoom(data, factors, order=order, mode="nearest", grid_mode=False), path=volume.path)


def _ensure_min_size(volume: Volume, min_size: Sequence[int], order: int) -> Volume:
    from scipy.ndimage import zoom

    shape = volume.spatial_shape
    if all(n >= m for n, m in zip(shape, min_size)):
        return volume
    factors = [1.0] * len(volume.channel_shape) + [max(1.0, m / n) for n, m in zip(shape, min_size)]
    data = zoom(volume.read(), factors, order=order, mode="nearest")
    return ArrayVolume(data, path=volume.path)


def _preload(volume: Volume) -> Volume:
    if isinstance(volume, (SharedArrayVolume,)):
        return volume
    return SharedArrayVolume(volume.read(), path=volume.path, spatial_ndim=volume.spatial_ndim)


class _Inputs:
    def __init__(self):
        self.images: list[Volume] = []
        self.labels: list[Volume | None] = []
        self.masks: list[Volume | None] = []
        self.extra: dict[str, list[Volume]] = {}
        self.weights: list[float] = []
        self.names: list[str] = []


def voxel_scale(cfg: CfgNode) -> int | tuple[float, ...] | None:
    """DATASET.VOXEL_SIZE as ``open_volume``'s ``scale``: a level index, a voxel size or None."""
    value = cfg.DATASET.get("VOXEL_SIZE")
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_voxel_sizes(inputs: _Inputs) -> None:
    """Image, label, valid mask (and extra images) of one volume share their voxel size."""
    others = [("label", inputs.labels), ("valid mask", inputs.masks)]
    others += [(f"extra image {k!r}", v) for k, v in inputs.extra.items()]
    for i, image in enumerate(inputs.images):
        for what, volumes in others:
            other = volumes[i] if i < len(volumes) else None
            if image.voxel_size is None or other is None or other.voxel_size is None:
                continue
            if not same_voxel_size(image.voxel_size, other.voxel_size):
                raise ConfigError(
                    f"the image {image.path} has voxel size {format_voxel_size(image.voxel_size)} "
                    f"but its {what} {other.path} has {format_voxel_size(other.voxel_size)}; choose "
                    "one level for both (DATASET.VOXEL_SIZE) or give files of the same voxel size"
                )


def _open(path: str, cfg: CfgNode, what: str, is_label: bool = False) -> Volume:
    kwargs: dict[str, Any] = {}
    if path.endswith(".json"):
        from ..io.tiles.volume import CONFIG_MISSING_HINT

        kwargs = {"cache_bytes": int(cfg.DATASET.TILE_CACHE_MB) << 20, "threads": int(cfg.DATASET.TILE_THREADS),
                  "fill_value": cfg.DATASET.TILE_FILL_VALUE, "missing_hint": CONFIG_MISSING_HINT}
        if is_label:
            kwargs["label_vast"] = bool(cfg.DATASET.LABEL_VAST)
    try:
        return open_volume(path, allow_2d=bool(cfg.DATASET.LOAD_2D),
                           drop_channel=bool(cfg.DATASET.DROP_CHANNEL) and not is_label,
                           scale=voxel_scale(cfg), **kwargs)
    except (VolumeError, VolumeNotFoundError) as err:
        raise type(err)(f"{what}: {err}") from err


def _from_dataset_json(cfg: CfgNode, mode: str) -> _Inputs:
    path = Path(cfg.DATASET.DATASET_JSON)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"DATASET.DATASET_JSON: file {str(path)!r} does not exist") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"DATASET.DATASET_JSON {str(path)!r} is not valid JSON: {err}") from err
    section = {"train": "training", "val": "validation", "test": "test"}[mode]
    items = data.get(section) if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"DATASET.DATASET_JSON {str(path)!r}: expected a non-empty list under {section!r}")
    base = cfg.DATASET.INPUT_PATH
    base_dir = Path(resolve_input_path(base)) if base and base != "path/to/input" else path.parent
    extra_img = {n for n, t in zip(cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME, cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE) if t == "img"}
    inputs = _Inputs()
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"image": item}
        if not isinstance(item, dict) or "image" not in item:
            raise ConfigError(f"DATASET.DATASET_JSON {str(path)!r}: {section}[{i}] needs an 'image' entry, got {item!r}")

        def resolve(p: str) -> str:
            return p if os.path.isabs(p) else str(base_dir / p)

        inputs.images.append(_open(resolve(item["image"]), cfg, f"{section}[{i}].image"))
        inputs.names.append(resolve(item["image"]))
        lab = item.get("label")
        inputs.labels.append(None if lab is None or mode == "test" else _open(resolve(lab), cfg, f"{section}[{i}].label", True))
        mask = item.get("valid_mask")
        inputs.masks.append(None if mask is None or mode == "test" else _open(resolve(mask), cfg, f"{section}[{i}].valid_mask", True))
        weight = item.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"DATASET.DATASET_JSON {str(path)!r}: {section}[{i}].weight must be a non-negative number, got {weight!r}")
        inputs.weights.append(float(weight))
        for key in extra_img:
            if key not in item:
                raise ConfigError(f"DATASET.DATASET_JSON {str(path)!r}: {section}[{i}] lacks the 'img' target {key!r}")
            inputs.extra.setdefault(key, []).append(_open(resolve(item[key]), cfg, f"{section}[{i}].{key}"))
    return inputs


def _from_names(cfg: CfgNode, mode: str) -> _Inputs:
    img_key, lab_key, mask_key = NAME_KEYS[mode]
    d = cfg.DATASET
    if d[img_key] is None:
        raise ConfigError(f"DATASET.{img_key} is not set: name the image volume(s) to use in {mode} mode")
    input_path = resolve_input_path(d.INPUT_PATH)
    abs_ = bool(d.IS_ABSOLUTE_PATH)
    images = resolve_volume_specs(d[img_key], input_path, abs_, bool(d.LOAD_2D), what=f"DATASET.{img_key}")
    inputs = _Inputs()
    inputs.names = [str(p) for p in images]
    inputs.images = [_open(p, cfg, f"DATASET.{img_key}") for p in images]

    def aligned(key: str | None, is_label: bool) -> list[Volume | None]:
        if key is None or d[key] is None:
            return [None] * len(images)
        specs = resolve_volume_specs(d[key], input_path, abs_, bool(d.LOAD_2D), what=f"DATASET.{key}")
        if len(specs) != len(images):
            raise ConfigError(f"DATASET.{key} names {len(specs)} volumes but DATASET.{img_key} names {len(images)}")
        return [_open(p, cfg, f"DATASET.{key}", is_label) for p in specs]

    inputs.labels = aligned(lab_key, True)
    inputs.masks = aligned(mask_key, True)
    if mode == "train" and d.EXTRA_IMAGE_NAME is not None:
        names = [n for n, t in zip(cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME, cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE) if t == "img"]
        if len(names) != 1:
            raise ConfigError("DATASET.EXTRA_IMAGE_NAME needs exactly one AUGMENTOR.ADDITIONAL_TARGETS_NAME of type 'img'")
        specs = resolve_volume_specs(d.EXTRA_IMAGE_NAME, input_path, abs_, bool(d.LOAD_2D), what="DATASET.EXTRA_IMAGE_NAME")
        inputs.extra[names[0]] = [_open(p, cfg, "DATASET.EXTRA_IMAGE_NAME") for p in specs]
    inputs.weights = [1.0] * len(images)
    return inputs


def load_inputs(cfg: CfgNode, mode: str) -> _Inputs:
    """Open (and, with DATASET.PRELOAD, load into shared memory) the volumes of ``mode``."""
    inputs = _from_dataset_json(cfg, mode) if cfg.DATASET.DATASET_JSON else _from_names(cfg, mode)
    check_voxel_sizes(inputs)
    d = cfg.DATASET
    scales = (d.IMAGE_SCALE or d.DATA_SCALE, d.LABEL_SCALE or d.DATA_SCALE, d.VALID_MASK_SCALE or d.DATA_SCALE)
    inputs.images = [_zoom(v, scales[0], 1) for v in inputs.images]
    inputs.labels = [None if v is None else _zoom(v, scales[1], 0) for v in inputs.labels]
    inputs.masks = [None if v is None else _zoom(v, scales[2], 0) for v in inputs.masks]
    inputs.extra = {k: [_zoom(v, scales[0], 1) for v in vs] for k, vs in inputs.extra.items()}
    return inputs


def target_specs_from_cfg(cfg: CfgNode) -> tuple[list, list]:
    """Parsed MODEL.TARGET_OPT (a trailing 'all' dropped) and MODEL.WEIGHT_OPT."""
    codes = [t for t in cfg.MODEL.TARGET_OPT if t != "all"]
    specs = parse_targets(codes, do_2d=bool(cfg.DATASET.DO_2D))
    return specs, parse_weights(cfg.MODEL.WEIGHT_OPT, num_targets=len(specs))


def rejection_policy_from_cfg(cfg: CfgNode) -> RejectionPolicy:
    """DATASET.VALID_RATIO and DATASET.REJECT_SAMPLING.*."""
    d, rs = cfg.DATASET, cfg.DATASET.REJECT_SAMPLING
    return RejectionPolicy(
        size_thres=int(rs.SIZE_THRES), diversity=int(rs.DIVERSITY), p=float(rs.P),
        valid_ratio=float(d.VALID_RATIO), num_trial=int(rs.NUM_TRIAL), exhausted=str(rs.EXHAUSTED),
        screen=bool(rs.SCREEN),
    )


def train_length(cfg: CfgNode) -> int:
    """Training samples per epoch: DATASET.SAMPLES_PER_EPOCH, else ITERATION_TOTAL x batch."""
    return int(cfg.DATASET.SAMPLES_PER_EPOCH) or int(cfg.SOLVER.ITERATION_TOTAL) * int(cfg.SOLVER.SAMPLES_PER_BATCH)


def build_dataset(cfg: CfgNode, mode: str = "train", rank: int = 0, seed: int | None = None,
                  augmentor: Any = "auto") -> VolumeDataset:
    """The dataset of ``mode`` ('train', 'val' or 'test') described by ``cfg``."""
    from ..augment import build_train_augmentor

    if mode not in NAME_KEYS:
        raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
    d, m = cfg.DATASET, cfg.MODEL
    if augmentor == "auto":
        augmentor = build_train_augmentor(cfg) if mode == "train" else None
    input_size = [int(s) for s in m.INPUT_SIZE]
    sample_size = list(augmentor.sample_size) if augmentor is not None else input_size
    inputs = load_inputs(cfg, mode)
    pad = list(d.VAL_PAD_SIZE) if mode == "val" else (list(d.PAD_SIZE) if not isinstance(d.PAD_SIZE, int) else d.PAD_SIZE)
    if d.ENSURE_MIN_SIZE:
        from ..geometry import normalize_halo

        widths = normalize_halo(pad, 3)
        need = [s - a - b for s, (a, b) in zip(sample_size, widths)]
        inputs.images = [_ensure_min_size(v, need, 1) for v in inputs.images]
        inputs.labels = [None if v is None else _ensure_min_size(v, need, 0) for v in inputs.labels]
        inputs.masks = [None if v is None else _ensure_min_size(v, need, 0) for v in inputs.masks]
    if d.PRELOAD:
        inputs.images = [_preload(v) for v in inputs.images]
        inputs.labels = [None if v is None else _preload(v) for v in inputs.labels]
        inputs.masks = [None if v is None else _preload(v) for v in inputs.masks]
        inputs.extra = {k: [_preload(v) for v in vs] for k, vs in inputs.extra.items()}
    normalizers = [normalizer_for(v, d.MEAN, d.STD, d.MATCH_ACT, d.NORMALIZE_RANGE) for v in inputs.images]
    specs, wspecs = target_specs_from_cfg(cfg) if mode != "test" else ([], [])
    policy = rejection_policy_from_cfg(cfg)
    if mode == "train":
        length, stride = train_length(cfg), None
    elif mode == "val":
        length, stride = None, [max(1, s // 2) for s in input_size]
    else:
        length, stride = None, list(cfg.INFERENCE.STRIDE)
    weights = inputs.weights if (d.VOLUME_SAMPLING == "element") else None
    try:
        return VolumeDataset(
            inputs.images, inputs.labels, inputs.masks,
            sample_size=sample_size, augmentor=augmentor, mode=mode, extra_images=inputs.extra,
            target_specs=specs, weight_specs=wspecs, erosion=m.LABEL_EROSION, dilation=m.LABEL_DILATION,
            normalizers=normalizers, pad=pad, pad_mode=d.PAD_MODE, rejection=policy, length=length,
            stride=stride, seed=int(cfg.SYSTEM.SEED if seed is None else seed), rank=rank,
            volume_weights=weights, do_2d=bool(d.DO_2D), reduce_labels=bool(d.REDUCE_LABEL),
            label_transform=LabelTransform(bool(d.LABEL_BINARY), float(d.LABEL_MAG)), names=inputs.names,
        )
    except ValueError as err:
        if isinstance(err, (ConfigError, VolumeError)):
            raise
        raise VolumeError(str(err)) from err


def volume_array(volume: Volume) -> np.ndarray:
    """The whole volume as an array (for small validation volumes)."""
    return volume.read()
