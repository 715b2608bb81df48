"""Build the training ``Compose`` from a yacs config with PyTC v1's ``AUGMENTOR`` keys.

The list is built in the order PyTC effectively applied its transforms (it ran its list in
reverse): geometry first (fused into one warp whatever its order), then CopyPaste, CutNoise,
CutBlur, MotionBlur, MissingParts, Grayscale, and our Noise last. ``DATASET.DO_2D`` (or an input
with one slice) leaves out MissingSection and MisAlignment.

``AUGMENTOR.NOISE`` is this project's optional node, read with ``.get`` so configs without it
work (noise then stays off).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import KINDS, Transform
from .compose import Compose
from .copy_paste import CopyPaste
from .geometry import Elastic, Flip, MisAlignment, MissingSection, Rescale, Rotate
from .intensity import CutBlur, CutNoise, Grayscale, MissingParts, MotionBlur, Noise

#: (config node, transform, constructor argument -> config key), in the order the list is
#: built: geometry (fused, order irrelevant), then PyTC's effective intensity order, Noise last
TABLE: tuple[tuple[str, type[Transform], dict[str, str]], ...] = (
    ("ROTATE", Rotate, {"rot90": "ROT90"}),
    ("RESCALE", Rescale, {"fix_aspect": "FIX_ASPECT"}),
    ("FLIP", Flip, {"do_ztrans": "DO_ZTRANS"}),
    ("ELASTIC", Elastic, {"alpha": "ALPHA", "sigma": "SIGMA"}),
    (
        "MISALIGNMENT",
        MisAlignment,
        {"displacement": "DISPLACEMENT", "rotate_ratio": "ROTATE_RATIO"},
    ),
    ("MISSINGSECTION", MissingSection, {"num_sections": "NUM_SECTION"}),
    ("COPYPASTE", CopyPaste, {"aug_thres": "AUG_THRES"}),
    ("CUTNOISE", CutNoise, {"length_ratio": "LENGTH_RATIO", "scale": "SCALE"}),
    (
        "CUTBLUR",
        CutBlur,
        {
            "length_ratio": "LENGTH_RATIO",
            "down_ratio_min": "DOWN_RATIO_MIN",
            "down_ratio_max": "DOWN_RATIO_MAX",
            "downsample_z": "DOWNSAMPLE_Z",
        },
    ),
    ("MOTIONBLUR", MotionBlur, {"sections": "SECTIONS", "kernel_size": "KERNEL_SIZE"}),
    ("MISSINGPARTS", MissingParts, {"iterations": "ITER"}),
    ("GRAYSCALE", Grayscale, {}),
    ("NOISE", Noise, {"mode": "MODE", "scale": "SCALE"}),
)
#: transforms that need a z stack (left out for DATASET.DO_2D or one-slice inputs)
Z_ONLY = frozenset({"MISALIGNMENT", "MISSINGSECTION"})
#: nodes of this project that may be absent or partial in a config: their defaults
OPTIONAL_NODES = {"NOISE": {"P": 0.5, "MODE": "gaussian", "SCALE": 0.05}}


def _get(node: Any, key: str, path: str) -> Any:
    try:
        return node[key]
    except (KeyError, AttributeError, TypeError):
        raise ConfigError(f"config key {path}.{key} is missing") from None


def _skip(node: Any, path: str) -> list[str]:
    skip = node.get("SKIP", []) if hasattr(node, "get") else []
    if skip is None:
        return []
    if isinstance(skip, str):
        skip = [skip]
    if not all(isinstance(s, str) for s in skip):
        raise ConfigError(f"{path}.SKIP must be a list of sample keys, got {skip!r}")
    return list(skip)


def _targets(aug: Any) -> dict[str, str]:
    names = aug.get("ADDITIONAL_TARGETS_NAME", ["label"])
    kinds = aug.get("ADDITIONAL_TARGETS_TYPE", ["mask"])
    names = [] if names is None else ([names] if isinstance(names, str) else list(names))
    kinds = [] if kinds is None else ([kinds] if isinstance(kinds, str) else list(kinds))
    if len(names) != len(kinds):
        raise ConfigError(
            f"AUGMENTOR.ADDITIONAL_TARGETS_NAME {names} and AUGMENTOR.ADDITIONAL_TARGETS_TYPE "
            f"{kinds} must have the same length"
        )
    for name, kind in zip(names, kinds):
        if kind not in KINDS:
            raise ConfigError(
                f"AUGMENTOR.ADDITIONAL_TARGETS_TYPE for {name!r} is {kind!r}; expected 'img' or 'mask'"
            )
    targets = dict(zip(names, kinds))
    # the dataset's valid mask (if any) must move with the image; it is never interpolated
    targets.setdefault("valid_mask", "mask")
    return targets


def build_train_augmentor(cfg: Any) -> Compose | None:
    """The training augmentor of ``cfg`` (a yacs ``CfgNode``), or None if
    ``AUGMENTOR.ENABLED`` is False (the sample size is then ``MODEL.INPUT_SIZE``).

    Raises:
        ConfigError naming the key when a key is missing or a value is out of range.
    """
    aug = _get(cfg, "AUGMENTOR", "cfg")
    if not _get(aug, "ENABLED", "AUGMENTOR"):
        return None
    input_size = list(_get(_get(cfg, "MODEL", "cfg"), "INPUT_SIZE", "MODEL"))
    dataset = cfg.get("DATASET", None) if hasattr(cfg, "get") else None
    do_2d = bool(dataset.get("DO_2D", False)) if dataset is not None else False
    if len(input_size) == 2:
        input_size = [1] + input_size
    if len(input_size) != 3 or any(not isinstance(v, int) or v < 1 for v in input_size):
        raise ConfigError(
            f"MODEL.INPUT_SIZE must be 3 positive integers (z, y, x), got {input_size}"
        )
    one_slice = input_size[0] == 1

    transforms: list[Transform] = []
    try:
        for name, cls, args in TABLE:
            node = aug.get(name, None)
            if node is None or not node.get("ENABLED", False):
                continue
            if name in Z_ONLY and (do_2d or one_slice):
                continue
            defaults = OPTIONAL_NODES.get(name)
            path = f"AUGMENTOR.{name}"

            def value(
                key: str, node: Any = node, defaults: Any = defaults, path: str = path
            ) -> Any:
                return node.get(key, defaults[key]) if defaults else _get(node, key, path)

            kwargs = {arg: value(key) for arg, key in args.items()}
            transforms.append(cls(p=value("P"), skip=_skip(node, path), **kwargs))
        return Compose(
            transforms,
            input_size=input_size,
            additional_targets=_targets(aug),
            smooth=bool(aug.get("SMOOTH", False)),
        )
    except ConfigError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith("AUGMENTOR") else f"AUGMENTOR.{msg}") from None
