"""U-Net construction from config: shapes, anisotropic levels, input-size checks, variants."""

from __future__ import annotations

import pytest
import torch
from yacs.config import CfgNode as CN

from connectomics_data.errors import ConfigError
from connectomics_data.models import build_model, check_input_size, level_shapes, plan_levels


def model_cfg(**model: object) -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.ARCHITECTURE = "unet_3d"
    cfg.MODEL.BLOCK_TYPE = "residual"
    cfg.MODEL.FILTERS = [4, 8, 8, 16]
    cfg.MODEL.ISOTROPY = [False, False, True, True]
    cfg.MODEL.IN_PLANES = 1
    cfg.MODEL.OUT_PLANES = 3
    cfg.MODEL.INPUT_SIZE = [8, 64, 64]
    cfg.MODEL.NORM_MODE = "bn"
    cfg.MODEL.ACT_MODE = "elu"
    cfg.MODEL.PAD_MODE = "replicate"
    cfg.MODEL.POOLING_LAYER = False
    cfg.DATASET = CN()
    cfg.DATASET.IS_ISOTROPIC = False
    for key, value in model.items():
        cfg.MODEL[key] = value
    return cfg


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stage_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Spatial shapes produced by each encoder stage."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[2:])))
        for stage in model.down
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.parametrize(
    ("size", "expected_levels"),
    [
        ((8, 64, 64), [(8, 64, 64), (8, 32, 32), (4, 16, 16), (2, 8, 8)]),
        ((9, 65, 65), [(9, 65, 65), (9, 33, 33), (5, 17, 17), (3, 9, 9)]),
    ],
)
def test_3d_output_shape_and_anisotropic_levels_keep_z(size, expected_levels):
    cfg = model_cfg(INPUT_SIZE=list(size))
    model = build_model(cfg, generator=seeded()).eval()
    x = torch.randn(2, 1, *size, generator=seeded(1))
    assert stage_shapes(model, x) == expected_levels
    assert level_shapes(model.levels, size) == expected_levels
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_plan_levels_kernels_and_strides():
    levels = plan_levels(3, [4, 8, 16], [False, False, True])
    assert [lv.stride for lv in levels] == [(1, 1, 1), (1, 2, 2), (2, 2, 2)]
    assert [lv.kernel for lv in levels] == [(1, 3, 3), (1, 3, 3), (3, 3, 3)]
    assert [lv.stride for lv in plan_levels(2, [4, 8], None)] == [(1, 1), (2, 2)]


def test_dataset_is_isotropic_downsamples_z_everywhere():
    cfg = model_cfg(INPUT_SIZE=[16, 32, 32])
    cfg.DATASET.IS_ISOTROPIC = True
    model = build_model(cfg, generator=seeded()).eval()
    shapes = stage_shapes(model, torch.zeros(1, 1, 16, 32, 32))
    assert shapes == [(16, 32, 32), (8, 16, 16), (4, 8, 8), (2, 4, 4)]


@pytest.mark.parametrize("size", [(64, 64), (65, 65), (33, 47)])
def test_2d_output_shape(size):
    cfg = model_cfg(ARCHITECTURE="unet_2d", FILTERS=[4, 8, 16], INPUT_SIZE=[1, *size])
    model = build_model(cfg, generator=seeded()).eval()
    x = torch.randn(3, 1, *size, generator=seeded(2))
    assert stage_shapes(model, x) == level_shapes(model.levels, size)
    with torch.no_grad():
        assert model(x).shape == (3, 3, *size)


def test_2d_model_rejects_3d_input():
    cfg = model_cfg(ARCHITECTURE="unet_2d", FILTERS=[4, 8], INPUT_SIZE=[1, 16, 16])
    model = build_model(cfg, generator=seeded())
    with pytest.raises(ValueError, match=r"\(B, C, y, x\)"):
        model(torch.zeros(1, 1, 1, 16, 16))


@pytest.mark.parametrize(
    "overrides",
    [
        {"NORM_MODE": "gn"},
        {"NORM_MODE": "in", "ACT_MODE": "relu"},
        {"NORM_MODE": "none", "ACT_MODE": "leaky"},
        {"NORM_MODE": "sync_bn"},
        {"PAD_MODE": "zeros"},
        {"PAD_MODE": "reflect"},
        {"PAD_MODE": "circular"},
        {"BLOCK_TYPE": "residual_se"},
        {"POOLING_LAYER": True},
    ],
)
def test_variants_run_and_every_parameter_gets_a_gradient(overrides):
    cfg = model_cfg(INPUT_SIZE=[9, 33, 33], **overrides)
    model = build_model(cfg, generator=seeded()).train()
    out = model(torch.randn(2, 1, 9, 33, 33, generator=seeded(3)))
    assert out.shape == (2, 3, 9, 33, 33)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_same_generator_seed_gives_identical_weights():
    cfg = model_cfg()
    a = build_model(cfg, generator=seeded(5)).state_dict()
    b = build_model(cfg, generator=seeded(5)).state_dict()
    c = build_model(cfg, generator=seeded(6)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_model_records_architecture_name():
    assert build_model(model_cfg(), generator=seeded()).architecture == "unet_3d"


@pytest.mark.parametrize("name", ["fpn_3d", "deeplabv3a", "deeplabv3c", "unet_3dd"])
def test_other_pytc_architectures_are_config_errors(name):
    with pytest.raises(
        ConfigError, match=r"MODEL.ARCHITECTURE.*not available.*unet_3d.*unetr.*MODEL.BUILDER"
    ):
        build_model(model_cfg(ARCHITECTURE=name))


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("NORM_MODE", "batch", "MODEL.NORM_MODE"),
        ("ACT_MODE", "gelu", "MODEL.ACT_MODE"),
        ("PAD_MODE", "edge", "MODEL.PAD_MODE"),
        ("BLOCK_TYPE", "bottleneck", "MODEL.BLOCK_TYPE"),
        ("ISOTROPY", [False, False, False, True, True], "MODEL.ISOTROPY has 5 entries"),
        ("FILTERS", [], "MODEL.FILTERS"),
    ],
)
def test_bad_model_keys_name_the_key(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(model_cfg(**{key: value}))


@pytest.mark.parametrize(
    ("size", "axis", "needed"),
    [([8, 7, 64], "y", 8), ([8, 64, 5], "x", 8), ([3, 64, 64], "z", 4)],
)
def test_input_size_too_small_for_levels(size, axis, needed):
    with pytest.raises(ConfigError, match=rf"MODEL.INPUT_SIZE.*axis {axis} .*at least {needed}"):
        check_input_size(model_cfg(INPUT_SIZE=size))


def test_input_size_minimum_is_accepted_and_returned():
    assert check_input_size(model_cfg(INPUT_SIZE=[4, 8, 8])) == (4, 8, 8)
    assert check_input_size(model_cfg(), input_size=[17, 225, 225]) == (17, 225, 225)


def test_2d_input_size_with_depth_is_rejected():
    cfg = model_cfg(ARCHITECTURE="unet_2d", FILTERS=[4, 8], INPUT_SIZE=[3, 64, 64])
    with pytest.raises(ConfigError, match=r"MODEL.INPUT_SIZE.*\[1, y, x\]"):
        check_input_size(cfg)
    assert check_input_size(cfg, input_size=[64, 64]) == (64, 64)


def test_reflect_padding_needs_more_than_the_pad():
    cfg = model_cfg(INPUT_SIZE=[4, 8, 8], PAD_MODE="reflect")
    with pytest.raises(ConfigError, match=r"MODEL.INPUT_SIZE.*reflect"):
        check_input_size(cfg)
    assert check_input_size(model_cfg(INPUT_SIZE=[8, 16, 16], PAD_MODE="reflect"))
