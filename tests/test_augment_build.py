"""build_train_augmentor from a yacs config with PyTC v1's AUGMENTOR keys."""

from __future__ import annotations

import numpy as np
import pytest
from yacs.config import CfgNode as CN

from connectomics_data.augment import (
    Compose,
    CopyPaste,
    Elastic,
    MisAlignment,
    MissingSection,
    Noise,
    Rotate,
    build_train_augmentor,
)
from connectomics_data.errors import ConfigError


def _node(**kw) -> CN:
    n = CN()
    for k, v in kw.items():
        setattr(n, k, v)
    return n


def aug_cfg(input_size=(8, 256, 256), noise: bool | None = None) -> CN:
    """PyTC v1 defaults of every key the augmentor reads (defaults.py lines 293-380)."""
    c = CN()
    c.MODEL = _node(INPUT_SIZE=list(input_size))
    c.DATASET = _node(DO_2D=False)
    a = CN()
    a.ENABLED = True
    a.SMOOTH = False
    a.ADDITIONAL_TARGETS_NAME = ["label"]
    a.ADDITIONAL_TARGETS_TYPE = ["mask"]
    a.ROTATE = _node(ENABLED=True, ROT90=True, P=1.0, SKIP=[])
    a.RESCALE = _node(ENABLED=True, FIX_ASPECT=False, P=0.5, SKIP=[])
    a.FLIP = _node(ENABLED=True, P=1.0, DO_ZTRANS=0, SKIP=[])
    a.ELASTIC = _node(ENABLED=True, P=0.75, ALPHA=16.0, SIGMA=4.0, SKIP=[])
    a.GRAYSCALE = _node(ENABLED=True, P=0.75, SKIP=[])
    a.MISSINGPARTS = _node(ENABLED=True, P=0.9, ITER=64, SKIP=[])
    a.MISSINGSECTION = _node(ENABLED=True, P=0.5, NUM_SECTION=2, SKIP=[])
    a.MISALIGNMENT = _node(ENABLED=True, P=0.5, DISPLACEMENT=16, ROTATE_RATIO=0.5, SKIP=[])
    a.MOTIONBLUR = _node(ENABLED=True, P=0.5, SECTIONS=2, KERNEL_SIZE=11, SKIP=[])
    a.CUTBLUR = _node(
        ENABLED=True,
        P=0.5,
        LENGTH_RATIO=0.4,
        DOWN_RATIO_MIN=2.0,
        DOWN_RATIO_MAX=8.0,
        DOWNSAMPLE_Z=False,
        SKIP=[],
    )
    a.CUTNOISE = _node(ENABLED=True, P=0.75, LENGTH_RATIO=0.4, SCALE=0.3, SKIP=[])
    a.COPYPASTE = _node(ENABLED=False, AUG_THRES=0.7, P=0.8, SKIP=[])
    if noise is not None:
        a.NOISE = _node(ENABLED=noise, P=0.5, MODE="poisson", SCALE=0.05, SKIP=[])
    c.AUGMENTOR = a
    return c


def test_disabled_gives_none():
    c = aug_cfg()
    c.AUGMENTOR.ENABLED = False
    assert build_train_augmentor(c) is None


# PyTC v1's arithmetic gives [19,332,332], [114,190,190], [19,372,372], [10,370,370],
# [1,196,196]; the fused bound is tighter and still provably sufficient
@pytest.mark.parametrize(
    "size,do_2d,expected,pytc",
    [
        ((17, 225, 225), False, (19, 305, 305), (19, 332, 332)),
        ((112, 112, 112), False, (114, 164, 164), (114, 190, 190)),
        ((17, 257, 257), False, (19, 345, 345), (19, 372, 372)),
        ((8, 256, 256), False, (10, 344, 344), (10, 370, 370)),
        ((1, 129, 129), True, (1, 169, 169), (1, 196, 196)),
    ],
)
def test_default_sample_sizes(size, do_2d, expected, pytc):
    c = aug_cfg(size)
    c.DATASET.DO_2D = do_2d
    comp = build_train_augmentor(c)
    assert comp.sample_size == expected
    assert all(a <= b for a, b in zip(comp.sample_size, pytc))


def test_any_angle_rotation_needs_a_larger_sample():
    c = aug_cfg((17, 257, 257))
    c.AUGMENTOR.ROTATE.ROT90 = False
    comp = build_train_augmentor(c)
    assert comp.sample_size[1] > 345 and comp.sample_size[1] <= 507  # PyTC: 507


def test_do_2d_drops_z_transforms_and_2d_runs():
    c = aug_cfg((1, 64, 64))
    c.DATASET.DO_2D = True
    comp = build_train_augmentor(c)
    assert not any(isinstance(t, (MisAlignment, MissingSection)) for t in comp.transforms)
    c3 = aug_cfg((8, 64, 64))
    assert any(isinstance(t, MissingSection) for t in build_train_augmentor(c3).transforms)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, comp.sample_size, dtype=np.uint8)
    out = comp({"image": img, "label": (img > 128).astype(np.uint8)}, rng)
    assert out["image"].shape == (1, 64, 64)


def test_parameters_reach_the_transforms():
    c = aug_cfg((8, 64, 64))
    c.AUGMENTOR.ELASTIC.ALPHA = 5.0
    c.AUGMENTOR.ELASTIC.P = 0.25
    c.AUGMENTOR.ROTATE.SKIP = ["label"]
    c.AUGMENTOR.COPYPASTE.ENABLED = True
    comp = build_train_augmentor(c)
    el = next(t for t in comp.transforms if isinstance(t, Elastic))
    assert el.alpha == 5.0 and el.p == 0.25
    rot = next(t for t in comp.transforms if isinstance(t, Rotate))
    assert rot.skip == {"label"}
    assert any(isinstance(t, CopyPaste) for t in comp.transforms)
    c.AUGMENTOR.RESCALE.FIX_ASPECT = True
    resc = next(t for t in build_train_augmentor(c).transforms if type(t).__name__ == "Rescale")
    for seed in range(5):
        p = resc.randomize(np.random.default_rng(seed), comp.context())
        assert p.sy == p.sx and 0.8 <= p.sy <= 1.25
    assert comp.additional_targets == {"label": "mask", "valid_mask": "mask"}


@pytest.mark.parametrize("noise", [None, False, True])
def test_noise_node_is_optional(noise):
    comp = build_train_augmentor(aug_cfg((4, 32, 32), noise=noise))
    found = [t for t in comp.transforms if isinstance(t, Noise)]
    assert len(found) == (1 if noise else 0)
    if noise:
        assert found[0].mode == "poisson" and found[0].scale == 0.05


def test_additional_targets():
    c = aug_cfg((4, 32, 32))
    c.AUGMENTOR.ADDITIONAL_TARGETS_NAME = ["label", "aux"]
    c.AUGMENTOR.ADDITIONAL_TARGETS_TYPE = ["mask", "img"]
    comp = build_train_augmentor(c)
    assert comp.additional_targets == {"label": "mask", "aux": "img", "valid_mask": "mask"}
    c.AUGMENTOR.ADDITIONAL_TARGETS_TYPE = ["mask"]
    with pytest.raises(ConfigError, match="same length"):
        build_train_augmentor(c)
    c.AUGMENTOR.ADDITIONAL_TARGETS_TYPE = ["mask", "linear"]
    with pytest.raises(ConfigError, match="'linear'"):
        build_train_augmentor(c)


@pytest.mark.parametrize(
    "node,key,value,match",
    [
        ("ELASTIC", "ALPHA", -1.0, "AUGMENTOR.ELASTIC.ALPHA"),
        ("ROTATE", "P", 2.0, "AUGMENTOR.ROTATE.P"),
        ("MISALIGNMENT", "DISPLACEMENT", 2.5, "AUGMENTOR.MISALIGNMENT.DISPLACEMENT"),
        ("CUTBLUR", "DOWN_RATIO_MIN", 9.0, "AUGMENTOR.CUTBLUR"),
        ("FLIP", "DO_ZTRANS", 1, "AUGMENTOR.FLIP.DO_ZTRANS"),
    ],
)
def test_bad_values_name_the_key(node, key, value, match):
    c = aug_cfg((4, 32, 32))
    setattr(c.AUGMENTOR[node], key, value)
    with pytest.raises(ConfigError, match=match):
        build_train_augmentor(c)


def test_missing_key_and_bad_input_size():
    c = aug_cfg((4, 32, 32))
    del c.AUGMENTOR.ELASTIC["ALPHA"]
    with pytest.raises(ConfigError, match="AUGMENTOR.ELASTIC.ALPHA is missing"):
        build_train_augmentor(c)
    c = aug_cfg((4, 32, 0))
    with pytest.raises(ConfigError, match="MODEL.INPUT_SIZE"):
        build_train_augmentor(c)


def test_project_config_defaults_build():
    config = pytest.importorskip("connectomics_data.config")
    try:
        cfg = config.get_cfg_defaults()
    except Exception as err:  # the config package is developed alongside
        pytest.skip(f"config defaults unavailable: {err}")
    cfg.defrost()
    cfg.MODEL.INPUT_SIZE = [17, 225, 225]
    comp = build_train_augmentor(cfg)
    assert isinstance(comp, Compose) and comp.sample_size == (19, 305, 305)
