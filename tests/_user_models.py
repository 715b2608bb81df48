"""User models for the MODEL.BUILDER hook tests (imported by name from the config)."""

from __future__ import annotations

from torch import nn


def tiny_net(cfg):
    """A 3D (or 2D with DATASET.DO_2D) two-conv network: IN_PLANES -> OUT_PLANES."""
    conv = nn.Conv2d if cfg.DATASET.DO_2D else nn.Conv3d
    return nn.Sequential(
        conv(cfg.MODEL.IN_PLANES, 4, 3, padding=1), nn.ReLU(), conv(4, cfg.MODEL.OUT_PLANES, 1)
    )


class Factory:
    @staticmethod
    def build(cfg):
        return tiny_net(cfg)


def not_a_model(cfg):
    return "model"


NOT_CALLABLE = 3
