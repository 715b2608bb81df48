"""The small reference networks the scripts train (residual 2D/3D U-Nets); not the product's focus."""

from .build import ARCHITECTURES, build_model, check_input_size, init_weights
from .unet import UNet, level_shapes, plan_levels

__all__ = [
    "ARCHITECTURES",
    "UNet",
    "build_model",
    "check_input_size",
    "init_weights",
    "level_shapes",
    "plan_levels",
]
