"""Label -> training targets and weights, by the TARGET_OPT / WEIGHT_OPT codes of PyTC v1.

Typical use (the dataset does this per sample)::

    specs = parse_targets(cfg.MODEL.TARGET_OPT, do_2d=cfg.DATASET.DO_2D)   # at config load
    wspecs = parse_weights(cfg.MODEL.WEIGHT_OPT, num_targets=len(specs))
    label = reduce_label(crop) if cfg.DATASET.REDUCE_LABEL else crop
    targets = seg_to_targets(label, specs, cfg.MODEL.LABEL_EROSION, cfg.MODEL.LABEL_DILATION)
    weights = seg_to_weights(targets, wspecs, valid_mask, label)

Modules: ``codes`` (parsing, specs), ``labels`` (validation, reduce/erode/dilate), one module
per target family (``affinity``, ``contour``, ``small_objects``, ``distance``, ``flows``,
``skeleton``), ``build``
(``seg_to_targets``) and ``weights`` (``seg_to_weights``).
"""

from .build import build_target, seg_to_targets
from .codes import (
    AffinityTarget,
    BinaryRatioWeight,
    BinaryTarget,
    ContourTarget,
    DilatedEDTTarget,
    FlowTarget,
    InstanceEDTTarget,
    NoWeight,
    PolarityTarget,
    SemanticClassTarget,
    SemanticEDTTarget,
    SkeletonEDTTarget,
    SmallObjectTarget,
    TargetSpec,
    UNetBorderWeight,
    WeightSpec,
    parse_target,
    parse_targets,
    parse_weight,
    parse_weights,
    resolve_rates,
)
from .labels import dilate_label, erode_label, reduce_label
from .weights import (
    DeferredWeight,
    binary_ratio_factors,
    binary_ratio_weight,
    seg_to_weights,
    unet_border_weight,
)

__all__ = [
    "DeferredWeight",
    "binary_ratio_factors",
    "AffinityTarget",
    "BinaryRatioWeight",
    "BinaryTarget",
    "ContourTarget",
    "DilatedEDTTarget",
    "FlowTarget",
    "InstanceEDTTarget",
    "NoWeight",
    "PolarityTarget",
    "SemanticClassTarget",
    "SemanticEDTTarget",
    "SkeletonEDTTarget",
    "SmallObjectTarget",
    "TargetSpec",
    "UNetBorderWeight",
    "WeightSpec",
    "binary_ratio_weight",
    "build_target",
    "dilate_label",
    "erode_label",
    "parse_target",
    "parse_targets",
    "parse_weight",
    "parse_weights",
    "reduce_label",
    "resolve_rates",
    "seg_to_targets",
    "seg_to_weights",
    "unet_border_weight",
]
