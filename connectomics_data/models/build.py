"""Build the configured network (``MODEL.ARCHITECTURE`` or the ``MODEL.BUILDER`` hook) and
check ``MODEL.INPUT_SIZE`` for it. The supported names are listed in
:mod:`connectomics_data.config.architectures`."""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..config.architectures import (
    BUILTIN_ARCHITECTURES,
    MONAI_ARCHITECTURES,
    check_architecture,
    parse_builder,
)
from ..errors import ConfigError
from .blocks import BLOCK_TYPES, NonLocalBlock
from .unet import UNet, level_shapes, plan_levels

ARCHITECTURES: dict[str, int] = {**BUILTIN_ARCHITECTURES, **MONAI_ARCHITECTURES}
"""Available architectures and their spatial dimensionality (MONAI ones need the extra)."""

_PYTC_DEFAULT_ISOTROPY = (False, False, False, True, True)


def _model_node(cfg: Any) -> Any:
    try:
        return cfg.MODEL
    except AttributeError as err:
        raise ConfigError("the config has no MODEL section") from err


def architecture_ndim(cfg: Any) -> tuple[str, int]:
    """``(MODEL.ARCHITECTURE, its spatial ndim)``; ConfigError listing the available ones."""
    node = _model_node(cfg)
    name = node.get("ARCHITECTURE", "unet_3d")
    builder = node.get("BUILDER", "")
    check_architecture(name, builder)
    if parse_builder(builder) is not None:  # a user model: 2D exactly when the data are
        do_2d = cfg.get("DATASET") is not None and bool(cfg.DATASET.get("DO_2D", False))
        return name, 2 if do_2d else 3
    return name, ARCHITECTURES[name]


def _filters(cfg: Any) -> list[int]:
    filters = list(_model_node(cfg).get("FILTERS", [28, 36, 48, 64, 80]))
    if not filters or any(int(f) != f or f < 1 for f in filters):
        raise ConfigError(f"MODEL.FILTERS {filters} must be a non-empty list of positive integers")
    return [int(f) for f in filters]


def _isotropy(cfg: Any, n_levels: int) -> list[bool]:
    if cfg.get("DATASET") is not None and cfg.DATASET.get("IS_ISOTROPIC", False):
        return [True] * n_levels
    isotropy = list(_model_node(cfg).get("ISOTROPY", list(_PYTC_DEFAULT_ISOTROPY)))
    if len(isotropy) != n_levels:
        raise ConfigError(
            f"MODEL.ISOTROPY has {len(isotropy)} entries {isotropy} but MODEL.FILTERS has "
            f"{n_levels} levels; give one True/False per level (True = that level also "
            f"downsamples z)"
        )
    return [bool(v) for v in isotropy]


def _spatial_input_size(cfg: Any, ndim: int, input_size: Sequence[int] | None) -> tuple[int, ...]:
    size = list(input_size if input_size is not None else _model_node(cfg).get("INPUT_SIZE"))
    if ndim == 2 and len(size) == 3:
        if size[0] != 1:
            raise ConfigError(
                f"MODEL.INPUT_SIZE {size} has z={size[0]} but MODEL.ARCHITECTURE is 2D; "
                f"use [1, y, x]"
            )
        size = size[1:]
    if len(size) != ndim or any(int(s) != s or s < 1 for s in size):
        axes = "[z, y, x]" if ndim == 3 else "[1, y, x] or [y, x]"
        raise ConfigError(f"MODEL.INPUT_SIZE {size} must be {axes} of positive integers")
    return tuple(int(s) for s in size)


def check_input_size(cfg: Any, input_size: Sequence[int] | None = None) -> tuple[int, ...]:
    """Check that ``input_size`` (default ``MODEL.INPUT_SIZE``) suits the configured network.

    A 2D network needs DATASET.DO_2D True and a 3D one False (checked when the config has
    DATASET.DO_2D). Every spatial axis must be at least the network's total downsampling
    factor along it (``2 ** (len(FILTERS) - 1)`` for y and x; ``2 ** (number of isotropic
    levels after the first)`` for z), and with ``PAD_MODE='reflect'`` every level must be
    larger than the padding. MONAI networks need multiples of their patch size; a
    MODEL.BUILDER network is not checked. Returns the spatial size ((z, y, x) or (y, x)).

    Raises:
        ConfigError: naming MODEL.INPUT_SIZE (the axis and the minimum size) or the
            MODEL.ARCHITECTURE / DATASET.DO_2D mismatch.
    """
    name, ndim = architecture_ndim(cfg)
    dataset = cfg.get("DATASET")
    do_2d = dataset.get("DO_2D") if dataset is not None else None
    if do_2d is not None and bool(do_2d) != (ndim == 2):
        need = "True (2D samples)" if ndim == 2 else "False (3D samples)"
        raise ConfigError(
            f"MODEL.ARCHITECTURE {name!r} is a {ndim}D network but DATASET.DO_2D is {do_2d}: "
            f"set DATASET.DO_2D {need}, or use a {'3D' if ndim == 2 else '2D'} architecture "
            f"(e.g. {'unet_3d' if ndim == 2 else 'unet_2d'})"
        )
    size = _spatial_input_size(cfg, ndim, input_size)
    if parse_builder(_model_node(cfg).get("BUILDER", "")) is not None:
        return size  # the user's network decides what it accepts
    if name in MONAI_ARCHITECTURES:
        from .monai_nets import PATCH_MULTIPLE

        multiple = PATCH_MULTIPLE[name]
        if any(n % multiple for n in size):
            raise ConfigError(
                f"MODEL.INPUT_SIZE {list(size)} must be a multiple of {multiple} along every "
                f"axis for {name}"
            )
        return size
    filters = _filters(cfg)
    isotropy = _isotropy(cfg, len(filters)) if ndim == 3 else None
    levels = plan_levels(ndim, filters, isotropy)
    axes = ("z", "y", "x")[-ndim:]
    for axis, n in enumerate(size):
        factor = math.prod(level.stride[axis] for level in levels)
        if n < factor:
            raise ConfigError(
                f"MODEL.INPUT_SIZE {list(size)} is too small for {name} with {len(levels)} "
                f"levels (MODEL.FILTERS {filters}): axis {axes[axis]} is {n} but the network "
                f"downsamples it by {factor}, so it needs at least {factor} voxels"
            )
    if _model_node(cfg).get("PAD_MODE", "replicate") == "reflect":
        shapes = level_shapes(levels, size)
        for i, (level, shape) in enumerate(zip(levels, shapes)):
            for axis, (n, k) in enumerate(zip(shape, level.kernel)):
                pad = 2 if i == 0 and k > 1 else k // 2  # the stem uses 5-wide kernels
                if n <= pad:
                    raise ConfigError(
                        f"MODEL.INPUT_SIZE {list(size)} is too small for MODEL.PAD_MODE "
                        f"'reflect': level {i} has {n} voxels along {axes[axis]}, reflect "
                        f"padding needs more than {pad}"
                    )
    return size


def _import(module_name: str) -> Any:
    """Import ``module_name``; if its top-level package is not found, retry with the working
    directory on sys.path (scripts/train.py puts its own folder there, not the caller's)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if err.name != module_name.split(".")[0] or cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def _from_builder(cfg: Any, module_name: str, attr: str) -> nn.Module:
    """Import ``module_name``, follow ``attr`` (dots allowed), call it with ``cfg``."""
    where = f"MODEL.BUILDER '{module_name}:{attr}'"
    try:
        obj: Any = _import(module_name)
    except ImportError as err:
        raise ConfigError(
            f"{where}: cannot import module {module_name!r} ({err}); it must be importable "
            f"from sys.path or the working directory"
        ) from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where} is not callable")
    model = obj(cfg)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{where} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Kaiming-normal conv weights (fan_in), zero biases, unit norm scales; non-local blocks
    start as the identity.

    All random draws come from ``generator`` (torch's global generator when None).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_in", nonlinearity="relu", generator=generator
            )
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, NonLocalBlock):
            module.zero_init()


def build_model(
    cfg: Any,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Build ``MODEL.ARCHITECTURE`` from the config, initialise it and move it to ``device``.

    Reads MODEL.{ARCHITECTURE, BLOCK_TYPE, FILTERS, ISOTROPY, IN_PLANES, OUT_PLANES,
    INPUT_SIZE, NORM_MODE, ACT_MODE, PAD_MODE, POOLING_LAYER} and DATASET.IS_ISOTROPIC.
    With MODEL.BUILDER the named callable builds the model from the config instead (its own
    initialisation, run with torch's generator seeded from ``generator``); 'unetr' and
    'swinunetr' come from MONAI (:mod:`.monai_nets`) the same way.
    The returned module has an ``architecture`` attribute (the config name), which
    checkpoints record. Weights are drawn from ``generator`` (see :func:`init_weights`).

    Raises:
        ConfigError: unknown architecture / block / norm / activation / padding, or an input
            size too small for the network (see :func:`check_input_size`).
    """
    name, ndim = architecture_ndim(cfg)
    node = _model_node(cfg)
    builder = parse_builder(node.get("BUILDER", ""))
    if builder is not None or name in MONAI_ARCHITECTURES:
        check_input_size(cfg)
        seed = int(generator.initial_seed()) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:  # their own initialisation draws from the global generator
                torch.manual_seed(seed)
            if builder is not None:
                model = _from_builder(cfg, *builder)
            else:
                from .monai_nets import build_monai

                model = build_monai(name, cfg)
        model.architecture = name
        return model.to(device) if device is not None else model
    block_type = node.get("BLOCK_TYPE", "residual")
    if block_type not in BLOCK_TYPES:
        raise ConfigError(
            f"MODEL.BLOCK_TYPE {block_type!r} is not available; expected one of {BLOCK_TYPES}"
        )
    check_input_size(cfg)
    filters = _filters(cfg)
    model = UNet(
        ndim=ndim,
        in_channels=int(node.get("IN_PLANES", 1)),
        out_channels=int(node.get("OUT_PLANES", 1)),
        filters=filters,
        isotropy=_isotropy(cfg, len(filters)) if ndim == 3 else None,
        block_type=block_type,
        norm_mode=node.get("NORM_MODE", "bn"),
        act_mode=node.get("ACT_MODE", "elu"),
        pad_mode=node.get("PAD_MODE", "replicate"),
        pooling=bool(node.get("POOLING_LAYER", False)),
        plus=name in ("unet_plus_3d", "unet_plus_2d"),
    )
    model.architecture = name
    init_weights(model, generator)
    if device is not None:
        model = model.to(device)
    return model
