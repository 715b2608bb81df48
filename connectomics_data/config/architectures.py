"""Which ``MODEL.ARCHITECTURE`` names load, and the ``MODEL.BUILDER`` hook (no torch import).

The networks themselves live in :mod:`connectomics_data.models`; this table lets the config
loader refuse an unusable architecture at load time, before any data is read.

* Built in: ``unet_3d``, ``unet_residual_3d`` (PyTC's older name of the same residual 3D
  U-Net), ``unet_plus_3d`` (plus bottleneck features added at every decoder level and a
  non-local block), ``unet_2d``, ``unet_plus_2d``.
* Through MONAI (``pip install connectomics_data[monai]``): ``unetr``, ``swinunetr``.
* Anything else, and every user model: ``MODEL.BUILDER: 'package.module:callable'``. The
  callable receives the merged config and returns a ``torch.nn.Module`` mapping
  ``(B, IN_PLANES, z, y, x)`` (``(B, IN_PLANES, y, x)`` with DATASET.DO_2D) to
  ``(B, OUT_PLANES, same spatial size)``. MODEL.ARCHITECTURE is then only a label (saved in
  checkpoints).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from ..errors import ConfigError

__all__ = [
    "BUILTIN_ARCHITECTURES",
    "MONAI_ARCHITECTURES",
    "check_architecture",
    "parse_builder",
    "supported_text",
]

BUILTIN_ARCHITECTURES: dict[str, int] = {
    "unet_3d": 3,
    "unet_residual_3d": 3,
    "unet_plus_3d": 3,
    "unet_2d": 2,
    "unet_plus_2d": 2,
}
"""Architectures of this package and their spatial dimensionality."""

MONAI_ARCHITECTURES: dict[str, int] = {"unetr": 3, "swinunetr": 3}
"""Architectures built from MONAI's networks (optional extra ``[monai]``)."""

_PYTC_ELSEWHERE = ("fpn_3d", "fpn_2d", "deeplabv3a", "deeplabv3b", "deeplabv3c", "unet_super")
_BUILDER_RE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def supported_text() -> str:
    """One sentence naming every supported architecture and the hook."""
    return (
        f"supported: {', '.join(BUILTIN_ARCHITECTURES)}, and with the [monai] extra "
        f"{', '.join(MONAI_ARCHITECTURES)}; for any other network set MODEL.BUILDER to "
        f"'package.module:callable' (called with the config, returning a torch.nn.Module)"
    )


def parse_builder(value: Any) -> tuple[str, str] | None:
    """``MODEL.BUILDER`` -> ``(module, attribute path)``, or None when unset ('' or None).

    Raises:
        ConfigError: a value that is not ``'package.module:callable'``.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _BUILDER_RE.fullmatch(value):
        raise ConfigError(
            f"MODEL.BUILDER {value!r} must be 'package.module:callable', e.g. "
            f"'my_models.nets:build' (a function that receives the config and returns a "
            f"torch.nn.Module)"
        )
    module, attr = value.split(":")
    return module, attr


def check_architecture(name: Any, builder: Any = None) -> None:
    """Refuse an architecture that cannot be built (called at config load).

    With MODEL.BUILDER set, any name is accepted (it only labels the model). A MONAI name
    needs ``monai`` importable.

    Raises:
        ConfigError: naming MODEL.ARCHITECTURE, the supported names and the hook.
    """
    if parse_builder(builder) is not None:
        return
    if name in BUILTIN_ARCHITECTURES:
        return
    if name in MONAI_ARCHITECTURES:
        if importlib.util.find_spec("monai") is None:
            raise ConfigError(
                f"MODEL.ARCHITECTURE {name!r} is built from MONAI, which is not installed: "
                f"pip install 'connectomics_data[monai]' (or pip install monai)"
            )
        return
    hint = ""
    if name in _PYTC_ELSEWHERE:
        hint = (
            f" ({name!r} is a PyTC v1 network not shipped here: wrap PyTC's class, or your "
            f"own, in a function and name it in MODEL.BUILDER)"
        )
    raise ConfigError(f"MODEL.ARCHITECTURE {name!r} is not available{hint}; {supported_text()}")
