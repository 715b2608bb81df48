"""Adapters from a PyTC v1 yacs config to the explicit inference API.

Keys read (PyTC semantics; ours marked *):

* window: ``INFERENCE.INPUT_SIZE`` / ``OUTPUT_SIZE`` (override ``MODEL.INPUT_SIZE`` /
  ``OUTPUT_SIZE`` when set; with only ``INFERENCE.INPUT_SIZE`` set the output size is taken from
  the model), ``INFERENCE.STRIDE``, ``INFERENCE.PAD_SIZE`` else ``DATASET.PAD_SIZE``,
  ``DATASET.PAD_MODE``, ``INFERENCE.UNPAD``, ``INFERENCE.BLENDING``, ``INFERENCE.AUG_MODE`` /
  ``AUG_NUM``, ``INFERENCE.SAMPLES_PER_BATCH``, ``DATASET.DO_2D``;
* input: ``DATASET.MEAN`` / ``STD`` / ``MATCH_ACT`` / ``NORMALIZE_RANGE``, ``DATASET.LOAD_2D``,
  ``DATASET.DROP_CHANNEL``; tile JSONs: ``DATASET.TILE_CACHE_MB`` / ``TILE_THREADS`` /
  ``TILE_FILL_VALUE``* (as in training);
* output: ``INFERENCE.OUTPUT_PATH`` (else ``DATASET.OUTPUT_PATH``), ``INFERENCE.OUTPUT_NAME``,
  ``INFERENCE.OUTPUT_DTYPE``* ('uint8'), ``OUTPUT_FORMAT``* ('h5'), ``MEMORY_BUDGET_MB``* (2048),
  ``WRITE_CHUNK_FILES``* (False);
* modes: ``INFERENCE.DO_SINGLY`` (+ ``DO_SINGLY_START_INDEX`` / ``DO_SINGLY_STEP``): one output
  per input file, globs expanded and 2D images read as ``(1, y, x)`` whatever ``LOAD_2D`` says;
  ``INFERENCE.DO_CHUNK_TITLE`` else ``DATASET.DO_CHUNK_TITLE`` with ``DATA_CHUNK_NUM``,
  ``DATA_CHUNK_IND``, ``CHUNK_IND_SPLIT``, ``DATA_COORD_RANGE``, each from ``INFERENCE.*``* when
  set, else ``DATASET.*`` (:func:`chunk_key`); with a coordinate range only that region is
  written (zarr attribute ``region_offset_zyx``);
* ``INFERENCE.DO_EVAL``; ``INFERENCE.OUTPUT_SCALE`` (the prediction is resampled, see
  :mod:`.resample`; with ``DATASET.DO_2D`` only y and x, as PyTC); ``INFERENCE.DATA_SCALE``
  must be unset or all ones (input resizing is not supported at inference).

``OUTPUT_ACT`` is applied through the ``activation`` callable the caller passes (the models
package builds it from ``MODEL.TARGET_OPT`` and ``INFERENCE.OUTPUT_ACT``).
Every key is read with ``.get(key, default)``, so configs without our new keys work.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..geometry import ChunkGrid, parse_chunk_split
from ..io.names import expand_glob, is_glob
from ..normalize import normalizer_for
from .chunked import predict_chunked
from .distributed import (
    predict_chunked_distributed,
    predict_singly_distributed,
    predict_volumes_distributed,
)
from .engine import InferenceSettings, RunStats, SlidingWindowInference, predict_volumes_to_file
from .naming import check_output_name
from .outputs import check_output_format, with_extension
from .resample import check_output_scale
from .singly import predict_singly


def _node(cfg, name: str):
    node = cfg.get(name, None) if hasattr(cfg, "get") else None
    return node if node is not None else {}


def _get(cfg, key: str, default=None):
    section, leaf = key.split(".")
    value = _node(cfg, section).get(leaf, default)
    return default if value is None else value


def _all_ones(value) -> bool:
    return value is None or all(float(v) == 1.0 for v in value)


def inference_settings_from_cfg(cfg) -> InferenceSettings:
    """:class:`InferenceSettings` from PyTC keys (see the module docstring)."""
    inf_input = _get(cfg, "INFERENCE.INPUT_SIZE")
    inf_output = _get(cfg, "INFERENCE.OUTPUT_SIZE")
    input_size = inf_input if inf_input is not None else _get(cfg, "MODEL.INPUT_SIZE", [8, 256, 256])
    if inf_output is not None:
        output_size = inf_output
    elif inf_input is not None:
        output_size = None  # the training output size need not hold for a new window
    else:
        output_size = _get(cfg, "MODEL.OUTPUT_SIZE")
    pad = _get(cfg, "INFERENCE.PAD_SIZE")
    if pad is None:
        pad = _get(cfg, "DATASET.PAD_SIZE", [0, 0, 0])
    output_scale = check_output_scale(_get(cfg, "INFERENCE.OUTPUT_SCALE"))
    if bool(_get(cfg, "DATASET.DO_2D", False)) and output_scale[0] != 1.0:
        warnings.warn(
            f"INFERENCE.OUTPUT_SCALE {list(output_scale)} with DATASET.DO_2D: the z factor "
            f"{output_scale[0]} is not used (PyTC resamples 2D outputs in y and x only)",
            stacklevel=2,
        )
        output_scale = (1.0, *output_scale[1:])
    if not _all_ones(_get(cfg, "INFERENCE.DATA_SCALE")):
        raise ConfigError(
            f"INFERENCE.DATA_SCALE {list(_get(cfg, 'INFERENCE.DATA_SCALE'))} is not supported "
            "at inference; rescale the input volume instead"
        )
    aug_num = _get(cfg, "INFERENCE.AUG_NUM")
    return InferenceSettings(
        input_size=tuple(input_size),
        stride=tuple(_get(cfg, "INFERENCE.STRIDE", [4, 128, 128])),
        output_size=None if output_size is None else tuple(output_size),
        pad=pad if isinstance(pad, int) else tuple(pad),
        pad_mode=str(_get(cfg, "DATASET.PAD_MODE", "reflect")),
        unpad=bool(_get(cfg, "INFERENCE.UNPAD", True)),
        blending=str(_get(cfg, "INFERENCE.BLENDING", "gaussian")),
        aug_num=None if aug_num is None else int(aug_num),
        aug_mode=str(_get(cfg, "INFERENCE.AUG_MODE", "mean")),
        batch_size=int(_get(cfg, "INFERENCE.SAMPLES_PER_BATCH", 4)),
        do_2d=bool(_get(cfg, "DATASET.DO_2D", False)),
        output_dtype=str(_get(cfg, "INFERENCE.OUTPUT_DTYPE", "uint8")),
        memory_budget_mb=float(_get(cfg, "INFERENCE.MEMORY_BUDGET_MB", 2048)),
        output_scale=output_scale,
    )


def build_inference_from_cfg(
    cfg,
    model: Callable[[torch.Tensor], torch.Tensor],
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> SlidingWindowInference:
    """The engine for ``model`` (put in eval mode when ``INFERENCE.DO_EVAL``, default True)."""
    settings = inference_settings_from_cfg(cfg)
    if isinstance(model, torch.nn.Module):
        model.train(not bool(_get(cfg, "INFERENCE.DO_EVAL", True)))
    return SlidingWindowInference(model, settings, activation=activation, device=device)


def build_normalizer_fn_from_cfg(cfg) -> Callable:
    """``volume -> ImageNormalizer`` from ``DATASET.MEAN/STD/MATCH_ACT/NORMALIZE_RANGE``."""
    return functools.partial(
        normalizer_for,
        mean=float(_get(cfg, "DATASET.MEAN", 0.5)),
        std=float(_get(cfg, "DATASET.STD", 0.5)),
        match_act=str(_get(cfg, "DATASET.MATCH_ACT", "none")),
        normalize_range=bool(_get(cfg, "DATASET.NORMALIZE_RANGE", True)),
    )


def output_dir_from_cfg(cfg) -> Path:
    """``INFERENCE.OUTPUT_PATH`` when set, else ``DATASET.OUTPUT_PATH``."""
    path = _get(cfg, "INFERENCE.OUTPUT_PATH", "") or _get(cfg, "DATASET.OUTPUT_PATH", ".")
    return Path(str(path))


def tile_options_from_cfg(cfg) -> dict:
    """``open_tiled_volume`` keywords from ``DATASET.TILE_CACHE_MB`` / ``TILE_THREADS`` /
    ``TILE_FILL_VALUE``, as training and validation use them; missing-tile messages name the key."""
    from ..io.tiles.volume import CONFIG_MISSING_HINT

    return {
        "cache_bytes": int(_get(cfg, "DATASET.TILE_CACHE_MB", 1024)) << 20,
        "threads": int(_get(cfg, "DATASET.TILE_THREADS", 4)),
        "fill_value": _get(cfg, "DATASET.TILE_FILL_VALUE"),
        "missing_hint": CONFIG_MISSING_HINT,
    }


def _open_input(path, tile_options: dict | None = None, **kwargs):
    """``open_volume`` for an inference input (tile options for tile JSONs); a missing or
    unreadable file names the key."""
    from ..errors import VolumeError, VolumeNotFoundError
    from ..io import open_volume
    from ..io.open import TILE_EXTENSIONS, extension

    if tile_options and isinstance(path, (str, Path)) and extension(str(path)) in TILE_EXTENSIONS:
        kwargs = {**kwargs, **tile_options}
    try:
        return open_volume(path, **kwargs)
    except (VolumeError, VolumeNotFoundError) as err:
        raise type(err)(f"INFERENCE.IMAGE_NAME: {err}") from err


def _default_open_fn(cfg, singly: bool = False) -> Callable:
    voxel = _get(cfg, "DATASET.VOXEL_SIZE", None)
    return functools.partial(
        _open_input,
        allow_2d=singly or bool(_get(cfg, "DATASET.LOAD_2D", False)),
        drop_channel=bool(_get(cfg, "DATASET.DROP_CHANNEL", False)),
        scale=tuple(float(v) for v in voxel) if isinstance(voxel, (list, tuple)) else voxel,
        tile_options=tile_options_from_cfg(cfg),
    )


def chunk_key(cfg, leaf: str, default=None) -> tuple[str, object]:
    """``(key, value)`` of a chunking key at inference: ``INFERENCE.<leaf>`` when set (ours), else
    ``DATASET.<leaf>`` (PyTC: shared with training, whose chunks overlap)."""
    value = _get(cfg, f"INFERENCE.{leaf}")
    if value is not None:
        return f"INFERENCE.{leaf}", value
    return f"DATASET.{leaf}", _get(cfg, f"DATASET.{leaf}", default)


def _stem(name: str) -> str:
    for ext in (".h5", ".hdf5", ".hdf", ".zarr"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


BLOCKWISE_HINT_VOXELS = 10**10
"""Inputs above this many voxels get a note about ``scripts/predict_blockwise.py``."""


def blockwise_hint(volumes: Sequence, limit: int = BLOCKWISE_HINT_VOXELS) -> bool:
    """Print (stderr) a pointer to blockwise inference when the volumes exceed ``limit`` voxels."""
    import sys

    voxels = sum(int(np.prod(v.spatial_shape, dtype=np.int64)) for v in volumes)
    if voxels <= limit:
        return False
    print(f"note: {voxels:.2e} voxels to predict in one process; for volumes this large "
          "scripts/predict_blockwise.py spreads the blocks over many workers and machines and resumes "
          "after an interruption with the same output (see tutorials/scaling.md)", file=sys.stderr)
    return True


@dataclass
class InferenceReport:
    """What a config-driven run did: ``mode`` ('volumes' | 'singly' | 'chunked'), outputs."""

    mode: str
    outputs: list[Path]
    skipped: list = field(default_factory=list)
    stats: RunStats | None = None


def run_inference_from_cfg(
    cfg,
    model: Callable[[torch.Tensor], torch.Tensor],
    image_files: Sequence[str],
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    open_fn: Callable[[str], object] | None = None,
    overwrite: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> InferenceReport:
    """Run inference as ``scripts/train.py --inference`` would, dispatching on the mode keys.

    Args:
        image_files: resolved input paths (``INFERENCE.IMAGE_NAME`` / ``DATASET.IMAGE_NAME``
            joined with the input path; a tile JSON for ``DO_CHUNK_TITLE``).
        open_fn: path -> ``Volume``; default ``io.open_volume`` with ``allow_2d=LOAD_2D``.
        rank, world_size: ``torch.distributed`` rank and world (``--distributed``); with
            ``world_size > 1`` every mode is sharded across the ranks (see
            :mod:`.distributed`; the process group must be initialised) and every rank returns
            the same report.
    """
    inference = build_inference_from_cfg(cfg, model, activation, device)
    inference.show_progress = rank == 0
    normalizer_fn = build_normalizer_fn_from_cfg(cfg)
    singly_mode = bool(_get(cfg, "INFERENCE.DO_SINGLY", False))
    open_fn = open_fn or _default_open_fn(cfg, singly_mode)
    fmt = check_output_format(str(_get(cfg, "INFERENCE.OUTPUT_FORMAT", "h5")))
    out_dir = output_dir_from_cfg(cfg)
    name = str(_get(cfg, "INFERENCE.OUTPUT_NAME", "result.h5"))
    files = [str(f) for f in image_files]
    if not files:
        raise ConfigError("no input files for inference (INFERENCE.IMAGE_NAME / DATASET.IMAGE_NAME)")
    chunk_mode = _get(cfg, "INFERENCE.DO_CHUNK_TITLE")
    if chunk_mode is None:
        chunk_mode = _get(cfg, "DATASET.DO_CHUNK_TITLE", 0)
    if int(chunk_mode) == 1:
        if len(files) != 1:
            raise ConfigError(f"DO_CHUNK_TITLE inference takes one volume (tile JSON), got {len(files)}")
        if "{" in name:
            raise ConfigError(f"INFERENCE.OUTPUT_NAME {name!r}: templates apply to DO_SINGLY only")
        check_output_name(name)
        volume = open_fn(files[0])
        range_key, coord_range = chunk_key(cfg, "DATA_COORD_RANGE")
        if coord_range is not None and len(coord_range) and isinstance(coord_range[0], (list, tuple)):
            coord_range = coord_range[0]
        num_key, chunk_num = chunk_key(cfg, "DATA_CHUNK_NUM", [1, 1, 1])
        try:
            grid = ChunkGrid(volume.spatial_shape, chunk_num, overlap=False, coord_range=coord_range)
        except ValueError as err:
            raise ConfigError(f"{files[0]} (shape {list(volume.spatial_shape)}): {num_key} {list(chunk_num)} / "
                              f"{range_key} {coord_range}: {err}") from err
        split_key, split = chunk_key(cfg, "CHUNK_IND_SPLIT")
        try:
            rank_world = parse_chunk_split(split) if split is not None else None
        except ValueError as err:
            raise ConfigError(f"{split_key}: {err}") from err
        stem = _stem(name)
        chunk_kwargs = dict(
            normalizer=normalizer_fn(volume),
            chunk_indices=chunk_key(cfg, "DATA_CHUNK_IND")[1],
            write_chunk_files=bool(_get(cfg, "INFERENCE.WRITE_CHUNK_FILES", False)),
            chunk_file_stem=stem,
            chunk_file_dir=out_dir,
            overwrite=overwrite,
        )
        if world_size > 1:
            result = predict_chunked_distributed(volume, grid, inference, out_dir / f"{stem}.zarr",
                                                 job_split=rank_world, rank=rank, world_size=world_size,
                                                 **chunk_kwargs)
        else:
            result = predict_chunked(volume, grid, inference, out_dir / f"{stem}.zarr", rank_world=rank_world,
                                     **chunk_kwargs)
        return InferenceReport("chunked", [result.output], result.skipped, inference.last_stats)
    if singly_mode:
        # one output per input FILE, whatever LOAD_2D says: a glob is expanded to its files (a
        # 2D image is then a (1, y, x) volume), never predicted as one stack
        files = [m for f in files for m in (expand_glob(f, "INFERENCE.IMAGE_NAME") if is_glob(f) else [f])]
        singly = predict_singly
        if world_size > 1:
            singly = functools.partial(predict_singly_distributed, rank=rank, world_size=world_size)
        result = singly(
            files,
            open_fn,
            inference,
            out_dir,
            name,
            start_index=int(_get(cfg, "INFERENCE.DO_SINGLY_START_INDEX", 0)),
            step=int(_get(cfg, "INFERENCE.DO_SINGLY_STEP", 1)),
            normalizer_fn=normalizer_fn,
            output_format=fmt,
            overwrite=overwrite,
        )
        return InferenceReport("singly", result.written, result.skipped, inference.last_stats)
    if "{" in name:
        raise ConfigError(f"INFERENCE.OUTPUT_NAME {name!r}: templates apply to DO_SINGLY only")
    check_output_name(name)
    volumes = [open_fn(f) for f in files]
    if rank == 0:
        blockwise_hint(volumes)
    target = out_dir / with_extension(name, fmt)
    normalizers = [normalizer_fn(v) for v in volumes]
    if world_size > 1:
        predict_volumes_distributed(inference, volumes, target, fmt, normalizers, overwrite,
                                    rank=rank, world_size=world_size)
    else:
        predict_volumes_to_file(inference, volumes, target, fmt, normalizers, overwrite)
    return InferenceReport("volumes", [target], [], inference.last_stats)
