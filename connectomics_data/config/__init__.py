"""PyTC v1-compatible yacs configuration: defaults, merge order, validation, reference."""

from .defaults import get_cfg_defaults
from .loader import (
    UnusedPyTCKeysWarning,
    apply_derived_values,
    apply_inference_overrides,
    load_cfg,
    read_yaml,
    resolve_config_path,
    save_cfg,
)
from .schema import KEY_INDEX, KEYS, KeySpec
from .validate import validate_cfg

__all__ = [
    "KEYS",
    "KEY_INDEX",
    "KeySpec",
    "UnusedPyTCKeysWarning",
    "apply_derived_values",
    "apply_inference_overrides",
    "get_cfg_defaults",
    "load_cfg",
    "read_yaml",
    "resolve_config_path",
    "save_cfg",
    "validate_cfg",
]
