"""The yacs defaults, built from the key table in :mod:`.schema`."""

from __future__ import annotations

import copy

from yacs.config import CfgNode

from .schema import KEYS


def _build_defaults() -> CfgNode:
    root = CfgNode()
    for spec in KEYS:
        *parents, leaf = spec.key.split(".")
        node = root
        for name in parents:
            if name not in node:
                node[name] = CfgNode()
            node = node[name]
        node[leaf] = copy.deepcopy(spec.default)
    return root


_DEFAULTS = _build_defaults()
_DEFAULTS.freeze()


def get_cfg_defaults() -> CfgNode:
    """A mutable copy of the defaults (PyTC v1's key tree plus our keys)."""
    cfg = _DEFAULTS.clone()
    cfg.defrost()
    return cfg
