"""``seg_to_targets``: one label crop -> the list of training targets of TARGET_OPT.

For each target, in order (as PyTC's ``seg_to_targets``): copy the label, erode it
(LABEL_EROSION, :func:`~connectomics_data.targets.labels.erode_label`), dilate it
(LABEL_DILATION), then build the target. Targets that share the same (erosion, dilation) pair
share the preprocessed label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .affinity import affinity
from .codes import (
    AffinityTarget,
    BinaryTarget,
    ContourTarget,
    DilatedEDTTarget,
    FlowTarget,
    InstanceEDTTarget,
    PolarityTarget,
    SemanticClassTarget,
    SemanticEDTTarget,
    SkeletonEDTTarget,
    SmallObjectTarget,
    TargetSpec,
    resolve_rates,
)
from .contour import instance_contour
from .distance import instance_edt, semantic_edt
from .flows import diffusion_flows
from .labels import as_label_volume, dilate_label, erode_label
from .skeleton import skeleton_edt
from .small_objects import small_objects

__all__ = ["build_target", "seg_to_targets"]


def build_target(seg: np.ndarray, spec: TargetSpec) -> np.ndarray:
    """One target from a preprocessed id volume ``seg`` ``(z, y, x)`` (integer dtype).

    Returns ``(spec.target_channels, z, y, x)`` of ``spec.dtype``.

    Raises:
        ValueError: for '9-C', when the label holds values outside 0..C-1.
    """
    if isinstance(spec, BinaryTarget):
        fg = np.isin(seg, np.asarray(spec.ids)) if spec.ids else seg != 0
        return fg[None].astype(np.float32)
    if isinstance(spec, PolarityTarget):
        fg = seg != 0
        odd = (seg % 2 == 1) & fg
        even = (seg % 2 == 0) & fg
        if spec.exclusive:
            return (odd.astype(np.int64) + 2 * even.astype(np.int64))[None]
        return np.stack([odd, even, fg]).astype(np.float32)
    if isinstance(spec, AffinityTarget):
        return affinity(seg, spec.offsets, spec.version, do_2d=spec.do_2d)
    if isinstance(spec, SmallObjectTarget):
        return small_objects(seg, spec.size_thres, spec.zratio, do_2d=spec.do_2d)
    if isinstance(spec, ContourTarget):
        return instance_contour(seg, spec.bd_sz, spec.do_bg)
    if isinstance(spec, InstanceEDTTarget):
        return instance_edt(
            seg, spec.mode, spec.padding, spec.quantize, spec.zres, spec.erosion, do_2d=spec.do_2d
        )
    if isinstance(spec, DilatedEDTTarget):
        e = spec.edt
        dilated = dilate_label(seg, spec.dilation) if spec.dilation else seg
        return instance_edt(
            dilated, e.mode, e.padding, e.quantize, e.zres, e.erosion, do_2d=spec.do_2d
        )
    if isinstance(spec, FlowTarget):
        return diffusion_flows(seg, with_mask=spec.with_mask)
    if isinstance(spec, SkeletonEDTTarget):
        return skeleton_edt(seg, spec.resolution, spec.quantize, do_2d=spec.do_2d)
    if isinstance(spec, SemanticEDTTarget):
        return semantic_edt(seg, spec.mode, spec.alpha_fore, spec.alpha_back, do_2d=spec.do_2d)
    if isinstance(spec, SemanticClassTarget):
        if seg.size:
            lo, hi = int(seg.min()), int(seg.max())
            if lo < 0 or hi >= spec.num_classes:
                raise ValueError(
                    f"target {spec.code!r} expects class values 0..{spec.num_classes - 1} in the "
                    f"label, found values in [{lo}, {hi}] (DATASET.REDUCE_LABEL must be off)"
                )
        return seg[None].astype(np.int64)
    raise TypeError(f"not a target spec: {spec!r}")


def seg_to_targets(
    label: np.ndarray,
    specs: Sequence[TargetSpec],
    erosion: Any = None,
    dilation: Any = None,
) -> list[np.ndarray]:
    """Build every target of ``specs`` from one label crop.

    Args:
        label: integer ids ``(z, y, x)``, or ``(y, x)`` when every spec was parsed with
            ``do_2d=True``. Float labels with integral values are accepted (cast to int64).
        specs: parsed TARGET_OPT (:func:`~connectomics_data.targets.parse_targets`).
        erosion: MODEL.LABEL_EROSION: None, one radius, or one radius per target.
        dilation: MODEL.LABEL_DILATION: same forms.

    Returns:
        One array per spec, ``(C, z, y, x)`` (``(C, y, x)`` for a 2D label) with
        ``C = spec.target_channels``: float32, or int64 for class targets ('1-1', quantised
        '5', '9-C').

    Raises:
        ValueError: a 2D label with a spec parsed for 3D, or a bad label dtype/shape.
        ConfigError: malformed erosion/dilation values.
    """
    specs = list(specs)
    arr = np.asarray(label)
    seg = as_label_volume(arr)
    is_2d = arr.ndim == 2
    if is_2d:
        for spec in specs:
            if not spec.do_2d:
                raise ValueError(
                    f"a 2D label {arr.shape} needs target specs parsed with do_2d=True; "
                    f"{spec.code!r} was parsed for 3D"
                )
    ero = resolve_rates(erosion, len(specs), "MODEL.LABEL_EROSION")
    dil = resolve_rates(dilation, len(specs), "MODEL.LABEL_DILATION")
    prepared: dict[tuple[int, int], np.ndarray] = {}
    out = []
    for spec, e, d in zip(specs, ero, dil):
        if (e, d) not in prepared:
            s = erode_label(seg, e) if e else seg
            prepared[(e, d)] = dilate_label(s, d) if d else s
        target = build_target(prepared[(e, d)], spec)
        out.append(target[:, 0] if is_2d else target)
    return out
