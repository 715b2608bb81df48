"""``seg_to_weights``: per-target, per-loss weight maps (MODEL.WEIGHT_OPT).

* '0' -> the valid mask as float32 ``(1, z, y, x)`` (1 where annotated) if one is given, else
  ``None``. PyTC returns a placeholder ``np.zeros((1,))`` that its loss treats as "no weight";
  ``None`` says the same thing without a fake array (the collate step must keep None).
* '1' / '1-1' -> :func:`binary_ratio_weight`, shape of the target ``(C, z, y, x)``.
* '2-w0-w1' -> :func:`unet_border_weight` of the *raw* label (before erosion/dilation, as in
  PyTC), ``(1, z, y, x)``.

Every weight except '0' is multiplied by the valid mask when one is given (PyTC does so for
'1' only; a voxel outside the mask has no label, so '2' should not weight it either).
2D inputs (target ``(C, y, x)``, mask and label ``(y, x)``) give 2D weights ``(C, y, x)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import edt
import fastremap
import numpy as np
from scipy import ndimage

from .codes import BinaryRatioWeight, NoWeight, UNetBorderWeight, WeightSpec
from .labels import as_label_volume

__all__ = ["binary_ratio_weight", "seg_to_weights", "unet_border_weight"]

MIN_RATIO = 0.05


def _ratio(target: np.ndarray, valid: np.ndarray | None) -> tuple[float, float] | None:
    """``(ww, factor)`` of :func:`binary_ratio_weight`; None for a constant target; factor 0
    for an empty mask."""
    if target.size == 0 or target.max() == target.min():
        return None
    fg = target != 0
    if valid is None:
        ww = float(np.count_nonzero(fg)) / fg.size
    else:
        total = float(np.count_nonzero(valid)) * fg.shape[0]
        if total == 0:
            return 0.0, 0.0
        ww = float(np.count_nonzero(fg & valid[None])) / total
    ww = min(max(ww, MIN_RATIO), 1.0 - MIN_RATIO)
    return ww, max(ww, 1.0 - ww) / min(ww, 1.0 - ww)


def binary_ratio_factors(target: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """``(w_fg, w_bg)`` such that ``binary_ratio_weight(target, mask)`` (no dilation) equals
    ``where(target != 0, w_fg, w_bg) * mask`` exactly (float32). Lets the loader ship two
    numbers per sample instead of a float32 volume and expand them on the device."""
    valid = None if mask is None else (np.asarray(mask) != 0)
    ratio = _ratio(target, valid)
    if ratio is None:
        return 1.0, 1.0
    ww, factor = ratio
    if factor == 0.0:
        return 0.0, 0.0
    return (1.0, factor) if ww > 1.0 - ww else (factor, 1.0)


def binary_ratio_weight(
    target: np.ndarray, mask: np.ndarray | None = None, dilate: bool = False
) -> np.ndarray:
    """PyTC ``weight_binary_ratio``: rebalance the foreground (``target != 0``) and background.

    ``ww`` = foreground fraction (inside the mask if given, over all channels), clipped to
    [0.05, 0.95]. The minority class gets ``max(ww, 1-ww) / min(ww, 1-ww)`` and the majority
    1; the result is multiplied by the mask. With ``dilate`` ('1-1') the foreground is dilated
    by a 3x3 in-plane window *after* ``ww`` is measured and before the classes are assigned.
    A constant target gives ones (times the mask); an all-zero mask gives zeros.

    PyTC divides the masked foreground count by ``mask.sum()`` without the channel count, so
    for a multi-channel target (affinity) its masked ratio is up to C times too large; here it
    is the true fraction.

    Args:
        target: ``(C, *spatial)`` any numeric dtype.
        mask: ``spatial`` valid mask (non-zero = valid) or None.

    Returns:
        float32 of ``target``'s shape.
    """
    valid = None if mask is None else (np.asarray(mask) != 0)
    ratio = _ratio(target, valid)
    if ratio is None:  # constant target: ones (times the mask)
        w = np.ones(target.shape, np.float32)
        return w if valid is None else w * valid[None]
    ww, factor = ratio
    if factor == 0.0:  # empty mask
        return np.zeros(target.shape, np.float32)
    fg = target != 0
    if dilate:
        fg8 = fg.view(np.uint8)
        fg8 = ndimage.maximum_filter1d(fg8, 3, axis=-1, mode="constant")
        fg = ndimage.maximum_filter1d(fg8, 3, axis=-2, mode="constant").view(bool)
    minority = ~fg if ww > 1.0 - ww else fg
    w = np.where(minority, np.float32(factor), np.float32(1.0))
    return w if valid is None else w * valid[None]


def _colour_objects(seg: np.ndarray, reach: float) -> tuple[np.ndarray, int]:
    """Colour the objects of a slice so that two objects whose bounding boxes are closer than
    ``reach`` (a lower bound of their distance) never share a colour.

    Returns ``(colour_map, n_colours)``: int64 ``(y, x)`` with -1 on background.
    """
    renum, _ = fastremap.renumber(seg, preserve_zero=True, in_place=False)
    boxes = ndimage.find_objects(renum)
    n = len(boxes)
    lo = np.array([[s.start for s in b] for b in boxes], np.int64)  # (n, 2), inclusive bounds
    up = np.array([[s.stop - 1 for s in b] for b in boxes], np.int64)
    # greedy colouring, largest boxes first; the neighbour row is computed on the fly (O(n) memory)
    order = np.argsort(-np.prod(up - lo + 1, axis=1), kind="stable")
    colour = np.full(n, -1, np.int64)
    for i in order:
        gap = np.maximum(0, np.maximum(lo - up[i], lo[i] - up))
        near = (gap * gap).sum(1) < reach * reach
        taken = np.zeros(n + 1, bool)
        taken[colour[near & (colour >= 0)]] = True
        colour[i] = int(np.argmin(taken))
    table = np.concatenate([[-1], colour])
    return table[renum], int(colour.max()) + 1


def _unet_slice(seg: np.ndarray, w0: float, w1: float, sigma: float) -> np.ndarray:
    """U-Net weight of one slice ``(y, x)`` that holds foreground; see :func:`unet_border_weight`."""
    hi = max(w0, w1)
    fg = seg != 0
    out = np.where(fg, np.float32(min(max(w1, 1.0), hi)), np.float32(1.0))
    if w0 <= 1.0:
        return out  # the background weight w0 * exp(...) <= 1 is clipped to 1
    # d1 + d2 >= reach  =>  w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) < 1  =>  clipped to 1
    reach = sigma * math.sqrt(2.0 * math.log(w0)) + 1.0
    cmap, n_colours = _colour_objects(seg, reach)
    if n_colours < 2:
        return out  # fewer than two objects, or all of them far apart
    d1 = np.full(seg.shape, np.inf, np.float32)
    d2 = np.full(seg.shape, np.inf, np.float32)
    for c in range(n_colours):
        d = edt.edt(cmap != c, black_border=False)  # distance to the objects of colour c
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
    total = d1.astype(np.float64) + d2
    bg_w = w0 * np.exp(-(total**2) / (2.0 * sigma**2))
    return np.where(fg, out, np.clip(bg_w, 1.0, hi)).astype(np.float32)


def unet_border_weight(
    label: np.ndarray, w0: float = 10.0, w1: float = 5.0, sigma: float = 5.0
) -> np.ndarray:
    """U-Net border weight (Ronneberger et al.; PyTC ``weight_unet3d``), per z slice.

    On background: ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` with ``d1``, ``d2`` the distances
    to the nearest and second-nearest object (objects = distinct non-zero ids in the slice);
    on foreground: ``w1``; everything clipped to ``[1, max(w0, w1)]``. A slice with fewer than
    two objects has no second distance: background 1, foreground ``clip(w1)``.

    Efficient and exact: PyTC runs one EDT per object. Here objects are coloured so that two
    objects closer than ``reach = sigma * sqrt(2 ln w0)`` (+1) never share a colour (bounding
    box test), one EDT per colour gives the distance to each colour group, and the two
    smallest per voxel are ``d1`` and ``d2`` wherever the weight exceeds 1; where the nearest
    and second-nearest objects share a colour, they are >= reach apart, so both the true and the
    computed weight are clipped to 1.

    Args:
        label: ids ``(z, y, x)``.

    Returns:
        ``(1, z, y, x)`` float32.
    """
    seg = as_label_volume(label)
    out = np.ones((1, *seg.shape), np.float32)
    for z in range(seg.shape[0]):
        if seg[z].any():
            out[0, z] = _unet_slice(seg[z], float(w0), float(w1), float(sigma))
    return out


def seg_to_weights(
    targets: Sequence[np.ndarray],
    weight_specs: Sequence[Sequence[WeightSpec]],
    valid_mask: np.ndarray | None = None,
    label: np.ndarray | None = None,
) -> list[list[np.ndarray | None]]:
    """Weights for every target and every weight code of that target.

    Args:
        targets: output of :func:`~connectomics_data.targets.seg_to_targets`, each
            ``(C, z, y, x)`` (or ``(C, y, x)``).
        weight_specs: parsed WEIGHT_OPT, one list per target.
        valid_mask: spatial ``(z, y, x)`` (or ``(y, x)``), non-zero = annotated; or None.
        label: the raw id label (spatial shape), needed by '2-w0-w1'.

    Returns:
        ``out[i][j]``: float32 ``(1 or C_i, z, y, x)``, or None for '0' without a mask.

    Raises:
        ValueError: mismatched list lengths or shapes, or '2' without a label.
    """
    if len(weight_specs) != len(targets):
        raise ValueError(
            f"got {len(targets)} targets but {len(weight_specs)} weight lists (WEIGHT_OPT needs "
            f"one list per target)"
        )
    mask = None
    if valid_mask is not None:
        mask = np.asarray(valid_mask) != 0
    out: list[list[np.ndarray | None]] = []
    for target, specs in zip(targets, weight_specs):
        spatial = target.shape[1:]
        if mask is not None and mask.shape != spatial:
            raise ValueError(f"valid mask shape {mask.shape} != target spatial shape {spatial}")
        row: list[np.ndarray | None] = []
        for spec in specs:
            if isinstance(spec, NoWeight):
                row.append(None if mask is None else mask[None].astype(np.float32))
            elif isinstance(spec, BinaryRatioWeight):
                row.append(binary_ratio_weight(target, mask, spec.dilate))
            elif isinstance(spec, UNetBorderWeight):
                if label is None:
                    raise ValueError(f"weight {spec.code!r} needs the label")
                lab = np.asarray(label)
                if lab.shape != spatial:
                    raise ValueError(f"label shape {lab.shape} != target spatial shape {spatial}")
                w = unet_border_weight(lab, spec.w0, spec.w1, spec.sigma)
                w = w[:, 0] if lab.ndim == 2 else w
                row.append(w if mask is None else w * mask[None])
            else:
                raise TypeError(f"not a weight spec: {spec!r}")
        out.append(row)
    return out


@dataclass(frozen=True)
class DeferredWeight:
    """A weight map described by a few numbers, expanded where it is used (on the device).

    ``kind`` 'mask': the valid mask as float32 (WEIGHT_OPT '0' with a valid mask).
    ``kind`` 'ratio': ``where(target[target_index] != 0, w_fg, w_bg)``, times the valid mask
    when ``masked`` (WEIGHT_OPT '1'; see :func:`binary_ratio_factors`). Equal, bit for bit, to
    what :func:`seg_to_weights` computes, at a tiny fraction of the bytes to move.
    """

    kind: str
    target_index: int
    w_fg: float = 1.0
    w_bg: float = 1.0
    masked: bool = False
