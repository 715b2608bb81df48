"""UNETR and Swin UNETR from MONAI (``pip install connectomics_data[monai]``), configured from
PyTC v1's keys as PyTC does.

``unetr``: ``monai.networks.nets.UNETR`` with ``img_size = MODEL.INPUT_SIZE`` (each axis a
multiple of 16, the patch size), MODEL.{UNETR_FEATURE_SIZE, HIDDEN_SIZE, MLP_DIM,
UNETR_NUM_HEADS, POS_EMBED, NORM_NAME, CONV_BLOCK, RES_BLOCK, UNETR_DROPOUT_RATE}.
``swinunetr``: ``monai.networks.nets.SwinUNETR`` (each axis a multiple of 32) with
MODEL.{SWIN_UNETR_FEATURE_SIZE (a multiple of 12), DEPTHS, SWIN_UNETR_NUM_HEADS, NORM_NAME,
SWIN_UNETR_DROPOUT_RATE, ATTN_DROP_RATE, DROPOUT_PATH_RATE, NORMALIZE, USE_CHECKPOINT,
DOWNSAMPLE, USE_V2}. Arguments a MONAI version does not take (``img_size`` of older Swin
UNETR, ``pos_embed`` renamed ``proj_type``) are adapted to its signature.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..errors import ConfigError

PATCH_MULTIPLE = {"unetr": 16, "swinunetr": 32}
"""Each axis of MODEL.INPUT_SIZE must be a multiple of this."""


def _import_nets() -> Any:
    try:
        from monai.networks import nets
    except ImportError as err:  # pragma: no cover - checked at config load
        raise ConfigError(
            "MODEL.ARCHITECTURE unetr / swinunetr need MONAI: pip install "
            "'connectomics_data[monai]'"
        ) from err
    return nets


def _call(cls: Any, kwargs: dict[str, Any]) -> nn.Module:
    params = inspect.signature(cls.__init__).parameters
    if "pos_embed" in kwargs and "pos_embed" not in params and "proj_type" in params:
        value = kwargs.pop("pos_embed")
        kwargs["proj_type"] = "perceptron" if value == "perceptron" else "conv"
    return cls(**{k: v for k, v in kwargs.items() if k in params})


def build_monai(name: str, cfg: Any) -> nn.Module:
    """Build ``unetr`` or ``swinunetr`` from ``cfg.MODEL`` (see the module docstring)."""
    m = cfg.MODEL
    nets = _import_nets()
    common = {
        "in_channels": int(m.IN_PLANES),
        "out_channels": int(m.OUT_PLANES),
        "img_size": tuple(int(s) for s in m.INPUT_SIZE),
        "norm_name": m.NORM_NAME,
        "spatial_dims": 3,
    }
    if name == "unetr":
        return _call(
            nets.UNETR,
            {
                **common,
                "feature_size": int(m.UNETR_FEATURE_SIZE),
                "hidden_size": int(m.HIDDEN_SIZE),
                "mlp_dim": int(m.MLP_DIM),
                "num_heads": int(m.UNETR_NUM_HEADS),
                "pos_embed": m.POS_EMBED,
                "conv_block": bool(m.CONV_BLOCK),
                "res_block": bool(m.RES_BLOCK),
                "dropout_rate": float(m.UNETR_DROPOUT_RATE),
            },
        )
    if name == "swinunetr":
        if int(m.SWIN_UNETR_FEATURE_SIZE) % 12:
            raise ConfigError(
                f"MODEL.SWIN_UNETR_FEATURE_SIZE {m.SWIN_UNETR_FEATURE_SIZE} must be a multiple "
                f"of 12 for swinunetr"
            )
        return _call(
            nets.SwinUNETR,
            {
                **common,
                "feature_size": int(m.SWIN_UNETR_FEATURE_SIZE),
                "depths": tuple(int(d) for d in m.DEPTHS),
                "num_heads": tuple(int(h) for h in m.SWIN_UNETR_NUM_HEADS),
                "drop_rate": float(m.SWIN_UNETR_DROPOUT_RATE),
                "attn_drop_rate": float(m.ATTN_DROP_RATE),
                "dropout_path_rate": float(m.DROPOUT_PATH_RATE),
                "normalize": bool(m.NORMALIZE),
                "use_checkpoint": bool(m.USE_CHECKPOINT),
                "downsample": m.DOWNSAMPLE,
                "use_v2": bool(m.USE_V2),
            },
        )
    raise ConfigError(f"{name!r} is not a MONAI architecture")
