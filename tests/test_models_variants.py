"""unet_plus_3d / unet_residual_3d / unet_plus_2d, the MODEL.BUILDER hook, MONAI networks, and
architecture checks at config load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from connectomics_data.config import load_cfg
from connectomics_data.errors import ConfigError
from connectomics_data.models import build_model, check_input_size

HAS_MONAI = importlib.util.find_spec("monai") is not None


def cfg_for(tmp_path: Path, *opts: str):
    (tmp_path / "c.yaml").write_text("MODEL:\n  OUT_PLANES: 2\n  TARGET_OPT: ['0', '4-1-1']\n"
                                     "  LOSS_OPTION: [['WeightedBCE'], ['WeightedBCE']]\n"
                                     "  LOSS_WEIGHT: [[1.0], [1.0]]\n  WEIGHT_OPT: [['1'], ['1']]\n"
                                     "  OUTPUT_ACT: [['none'], ['none']]\n"
                                     "INFERENCE:\n  OUTPUT_ACT: ['sigmoid', 'sigmoid']\n")
    base = ["MODEL.FILTERS", "[4, 8, 8]", "MODEL.ISOTROPY", "[False, True, True]",
            "MODEL.INPUT_SIZE", "[8, 16, 16]"]
    return load_cfg(tmp_path / "c.yaml", opts=base + list(opts), freeze=False)


def seeded():
    return torch.Generator().manual_seed(0)


def test_unet_plus_3d_adds_bottleneck_features_and_non_local(tmp_path):
    plain = build_model(cfg_for(tmp_path), generator=seeded())
    plus = build_model(cfg_for(tmp_path, "MODEL.ARCHITECTURE", "unet_plus_3d",
                               "MODEL.BLOCK_TYPE", "residual_se"), generator=seeded())
    assert plus.architecture == "unet_plus_3d"
    extra = set(plus.state_dict()) - set(plain.state_dict())
    assert any(k.startswith("non_local.") for k in extra) and any(k.startswith("feat.") for k in extra)
    assert not plus.non_local.out[1].weight.any()  # starts as the identity, as in PyTC
    x = torch.randn(2, 1, 8, 16, 16)
    plus.eval()
    assert plus(x).shape == (2, 2, 8, 16, 16)
    # the bottleneck features reach the output through the extra path: perturbing the
    # projection of level 0 changes the result
    before = plus(x)
    with torch.no_grad():
        plus.feat[0][0].weight.add_(1.0)
    assert not torch.allclose(before, plus(x))


def test_unet_residual_3d_is_the_residual_unet(tmp_path):
    a = build_model(cfg_for(tmp_path), generator=seeded())
    b = build_model(cfg_for(tmp_path, "MODEL.ARCHITECTURE", "unet_residual_3d"), generator=seeded())
    assert b.architecture == "unet_residual_3d"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unet_plus_2d(tmp_path):
    cfg = cfg_for(tmp_path, "MODEL.ARCHITECTURE", "unet_plus_2d", "DATASET.DO_2D", "True",
                  "MODEL.INPUT_SIZE", "[1, 16, 16]")
    assert build_model(cfg, generator=seeded())(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


@pytest.mark.parametrize("name,do_2d,size", [("unet_2d", "False", "[1, 16, 16]"),
                                             ("unet_plus_2d", "False", "[1, 16, 16]"),
                                             ("unet_3d", "True", "[1, 16, 16]")])
def test_network_and_do_2d_must_agree(tmp_path, name, do_2d, size):
    cfg = cfg_for(tmp_path, "MODEL.ARCHITECTURE", name, "DATASET.DO_2D", do_2d,
                  "MODEL.INPUT_SIZE", size)
    with pytest.raises(ConfigError, match=rf"{name}.*DATASET.DO_2D is {do_2d}"):
        build_model(cfg)


@pytest.mark.parametrize("name", ["fpn_3d", "deeplabv3c", "resunet"])
def test_unsupported_architecture_fails_at_load_naming_supported_and_hook(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        cfg_for(tmp_path, "MODEL.ARCHITECTURE", name)
    msg = str(info.value)
    for part in (repr(name), "unet_plus_3d", "unetr", "swinunetr", "MODEL.BUILDER", "command line"):
        assert part in msg


@pytest.mark.parametrize("target", ["_user_models:tiny_net", "_user_models:Factory.build"])
def test_builder_hook_builds_the_user_model(tmp_path, target):
    cfg = cfg_for(tmp_path, "MODEL.ARCHITECTURE", "fpn_3d", "MODEL.BUILDER", target)
    model = build_model(cfg, generator=seeded())
    assert model.architecture == "fpn_3d"
    assert model(torch.randn(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)
    again = build_model(cfg, generator=seeded())  # seeded: the same initial weights
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    assert check_input_size(cfg) == (8, 16, 16)


@pytest.mark.parametrize(
    "target,fragment",
    [("_user_models:not_a_model", "returned str"), ("_user_models:NOT_CALLABLE", "not callable"),
     ("_user_models:missing", "no attribute"), ("no_such_module_xyz:f", "cannot import")],
)
def test_builder_errors_at_build(tmp_path, target, fragment):
    cfg = cfg_for(tmp_path, "MODEL.BUILDER", target)
    with pytest.raises(ConfigError, match=fragment):
        build_model(cfg)


@pytest.mark.parametrize("value", ["module", "a.b:", "a b:c", ":f"])
def test_builder_syntax_checked_at_load(tmp_path, value):
    with pytest.raises(ConfigError, match="package.module:callable"):
        cfg_for(tmp_path, "MODEL.BUILDER", value)


@pytest.mark.skipif(not HAS_MONAI, reason="MONAI (the [monai] extra) is not installed")
def test_monai_unetr_from_pytc_keys(tmp_path):
    """(Training both MONAI networks is in test_pytc_cases.py.)"""
    cfg = cfg_for(tmp_path, "MODEL.ARCHITECTURE", "unetr", "MODEL.INPUT_SIZE", "[16, 16, 16]",
                  "MODEL.HIDDEN_SIZE", "32", "MODEL.MLP_DIM", "64", "MODEL.UNETR_NUM_HEADS", "4",
                  "MODEL.UNETR_FEATURE_SIZE", "4")
    model = build_model(cfg, generator=seeded())
    assert model.architecture == "unetr"
    assert model.vit.patch_embedding is not None and model.vit.blocks[0].mlp.linear1.out_features == 64
    assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
    with pytest.raises(ConfigError, match="multiple of 16"):
        check_input_size(cfg, [17, 16, 16])
    swin = cfg_for(tmp_path, "MODEL.ARCHITECTURE", "swinunetr", "MODEL.INPUT_SIZE", "[32, 32, 48]")
    with pytest.raises(ConfigError, match="multiple of 32"):
        check_input_size(swin)


@pytest.mark.skipif(HAS_MONAI, reason="MONAI is installed")
def test_monai_names_without_monai_say_how_to_install(tmp_path):
    with pytest.raises(ConfigError, match=r"connectomics_data\[monai\]"):
        cfg_for(tmp_path, "MODEL.ARCHITECTURE", "unetr")
