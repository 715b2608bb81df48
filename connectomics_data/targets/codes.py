"""Parse PyTC v1 target and weight codes (MODEL.TARGET_OPT / WEIGHT_OPT) into typed specs.

Every code becomes a frozen dataclass that knows its channel count and output dtype, so the
config validator can check ``MODEL.OUT_PLANES`` at load time instead of a shape error mid-training.
The parsers are pure and cheap (string work only). A code that does not parse raises
:class:`~connectomics_data.errors.ConfigError` naming the code and the expected syntax; no other
exception escapes for any ``str`` input.

Target codes (``-`` separates fields; numbers are plain ASCII decimals)::

    '0'                 binary foreground, label > 0                      1 ch  float32
    '0-a-b-...'         foreground = label in {a, b, ...}                 1 ch  float32
    '1'                 synaptic polarity: odd ids, even ids, all > 0     3 ch  float32
    '1-1'               exclusive polarity classes 0 bg / 1 odd / 2 even  3 ch  int64 class map
    '2'                 nearest-neighbour affinity (z, y, x)              3 ch (2 with do_2d)
    '2-z-y-x-ver'       long-range affinity, ver in v1 / v2 / pni         3 ch (2 with do_2d)
    '3-thres-zratio-x'  small objects (per-plane CC size < thres)         1 ch  float32
    '4-bd-bg'           instance contour, dilation half-width bd          1 ch  float32
    '5[-mode-pad-quant-zres[-erosion]]'  instance EDT, default 5-2d-0-0-5.0-0
                                                    1 ch float32, or 11 classes int64 if quant
    '6[-mode-a-b]'      semantic EDT tanh(d_fg/a - d_bg/b), default 6-2d-8-50   1 ch float32
    '7' / '7-0'         Cellpose diffusion flows (dy, dx) per slice       2 ch  float32
                        ('-0': plus the binary foreground)                3 ch  float32
    '8-dil[-mode-pad-quant-zres[-erosion]]'  label dilated in-plane by dil, then the
                        instance EDT of '5' with those options            as '5'
    'a-quant-zres-yres-xres'  skeleton-aware EDT (SDT), voxel size (z, y, x)
                                                    1 ch float32, or 11 classes int64 if quant
    '9-C'               semantic classes 0..C-1                           C ch  int64 class map

``channels`` is what the *model* outputs for the target (PyTC's ``SplitActivation`` counts); a
class target ('1-1', quantised '5', '9-C') is stored as ONE int64 channel of class indices
(``target_channels == 1``) for a cross-entropy loss over ``channels`` logits.

Code '8' with dilation 0 is the plain '5' EDT (PyTC leaves that target empty, a bug).

Weight codes: '0' (valid mask or nothing), '1' (binary class ratio), '1-1' (ratio with the
foreground dilated 3x3 in-plane), '2-w0-w1' (U-Net border weight; bare '2' = '2-10-5').
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError

__all__ = [
    "AffinityTarget",
    "BinaryRatioWeight",
    "DilatedEDTTarget",
    "FlowTarget",
    "SkeletonEDTTarget",
    "BinaryTarget",
    "ContourTarget",
    "InstanceEDTTarget",
    "NoWeight",
    "PolarityTarget",
    "SemanticClassTarget",
    "SemanticEDTTarget",
    "SmallObjectTarget",
    "TargetSpec",
    "UNetBorderWeight",
    "WeightSpec",
    "parse_target",
    "parse_targets",
    "parse_weight",
    "parse_weights",
    "resolve_rates",
]

QUANT_LEVELS = 10
"""Quantised instance EDT: background class 0 plus 10 energy bins of width 0.1 (11 classes)."""

_INT_RE = re.compile(r"[0-9]+")
_FLOAT_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]\+?[0-9]+)?")
_MAX_ID = 2**63 - 1

TARGET_SYNTAX: dict[str, str] = {
    "0": "'0' (label > 0) or '0-a-b-...' (label in the listed ids, non-negative integers)",
    "1": "'1' (3-channel synaptic polarity) or '1-1' (exclusive classes 0/1/2)",
    "2": "'2' (nearest-neighbour affinity) or '2-z-y-x-ver' with integer offsets >= 1 and "
    "ver one of v1, v2, pni (e.g. '2-1-3-3-v1')",
    "3": "'3-size_thres-zratio-x' with integers size_thres >= 0, zratio >= 1 (e.g. '3-100-4-0')",
    "4": "'4-bd_sz-do_bg' with integer bd_sz >= 0 and do_bg 0 or 1 (e.g. '4-1-1')",
    "5": "'5' or '5-mode-padding-quant-zres[-erosion]' with mode 2d|3d, padding 0|1, quant 0|1, "
    "zres a number > 0, erosion an integer >= 0 (default '5-2d-0-0-5.0-0')",
    "6": "'6' or '6-mode-a-b' with mode 2d|3d and numbers a, b > 0 (default '6-2d-8-50')",
    "7": "'7' (Cellpose flows, 2 channels) or '7-0' (flows plus the binary foreground, 3 "
    "channels)",
    "8": "'8-dil' or '8-dil-mode-padding-quant-zres[-erosion]' with an integer dilation "
    "radius dil >= 0 followed by the options of '5' (e.g. '8-1-2d-0-0-5.0')",
    "9": "'9-C' with an integer number of classes C >= 2 (e.g. '9-3')",
    "a": "'a-quant-zres-yres-xres' with quant 0|1 and voxel sizes > 0 (e.g. 'a-0-40-16-16')",
}
WEIGHT_SYNTAX = (
    "'0' (valid mask or no weight), '1' (binary class ratio), '1-1' (class ratio with the "
    "foreground dilated 3x3), '2-w0-w1' (U-Net border weight, numbers >= 0, max(w0, w1) >= 1)"
)


# --------------------------------------------------------------------------------------------
# Target specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """A parsed target code.

    Attributes:
        code: the code as written in the config.
        do_2d: the label is processed slice by slice as independent 2D samples (DATASET.DO_2D):
            affinities have no z channel, EDT modes are forced to 2D.
    """

    code: str
    do_2d: bool = False

    kind: ClassVar[str] = "target"

    @property
    def channels(self) -> int:
        """Model output channels for this target (logits per class for class targets)."""
        raise NotImplementedError

    @property
    def is_class_target(self) -> bool:
        """True when the target is an int64 class-index map for a cross-entropy loss."""
        return False

    @property
    def target_channels(self) -> int:
        """Channels of the produced target array: 1 for class targets, else ``channels``."""
        return 1 if self.is_class_target else self.channels

    @property
    def dtype(self) -> np.dtype:
        """dtype of the produced target array: int64 for class targets, else float32."""
        return np.dtype(np.int64) if self.is_class_target else np.dtype(np.float32)

    @property
    def needs_original_ids(self) -> bool:
        """True when the target reads id *values* (id subsets, parity, classes), so relabelling
        a crop to 1..N (DATASET.REDUCE_LABEL) would change it. PyTC only turns REDUCE_LABEL off
        for '9'; '0-a-b' and '1' are equally affected."""
        return False


@dataclass(frozen=True, kw_only=True)
class BinaryTarget(TargetSpec):
    """'0': ``label > 0``; '0-a-b-...': ``label in ids``. One float32 channel of 0/1."""

    ids: tuple[int, ...] = ()
    kind: ClassVar[str] = "binary"

    @property
    def channels(self) -> int:
        return 1

    @property
    def needs_original_ids(self) -> bool:
        return bool(self.ids)


@dataclass(frozen=True, kw_only=True)
class PolarityTarget(TargetSpec):
    """'1': channels (odd id, even id, any id) float32; '1-1': one int64 map, 0 background,
    1 odd id (pre-synaptic), 2 even id (post-synaptic), for 3-class cross-entropy."""

    exclusive: bool = False
    kind: ClassVar[str] = "polarity"

    @property
    def channels(self) -> int:
        return 3

    @property
    def is_class_target(self) -> bool:
        return self.exclusive

    @property
    def needs_original_ids(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class AffinityTarget(TargetSpec):
    """'2' and '2-z-y-x-ver': affinity channels (z, y, x), or (y, x) with ``do_2d``.

    ``version`` is 'nn' for the bare '2' (offsets 1); otherwise 'v1', 'v2' or 'pni'. See
    :mod:`connectomics_data.targets.affinity` for each border convention.
    """

    offsets: tuple[int, int, int] = (1, 1, 1)
    version: str = "nn"
    kind: ClassVar[str] = "affinity"

    @property
    def channels(self) -> int:
        return 2 if self.do_2d else 3


@dataclass(frozen=True, kw_only=True)
class SmallObjectTarget(TargetSpec):
    """'3-size_thres-zratio-x': voxels of connected components smaller than ``size_thres`` in
    an xy plane, or smaller than ``size_thres // zratio`` in an xz or yz plane. The last field
    (PyTC's "mask dilation size") is parsed and unused, as in PyTC."""

    size_thres: int = 0
    zratio: int = 1
    unused: int = 0
    kind: ClassVar[str] = "small_objects"

    @property
    def channels(self) -> int:
        return 1


@dataclass(frozen=True, kw_only=True)
class ContourTarget(TargetSpec):
    """'4-bd_sz-do_bg': instance contours dilated with a (2*bd_sz+1)^2 in-plane window;
    ``do_bg`` also marks instance/background borders."""

    bd_sz: int = 1
    do_bg: bool = True
    kind: ClassVar[str] = "contour"

    @property
    def channels(self) -> int:
        return 1


@dataclass(frozen=True, kw_only=True)
class InstanceEDTTarget(TargetSpec):
    """'5-mode-padding-quant-zres-erosion': per-instance EDT divided by the instance maximum,
    background -1. ``quantize`` turns it into 11 int64 classes (0 = background)."""

    mode: str = "2d"
    padding: bool = False
    quantize: bool = False
    zres: float = 5.0
    erosion: int = 0
    kind: ClassVar[str] = "instance_edt"

    @property
    def channels(self) -> int:
        return QUANT_LEVELS + 1 if self.quantize else 1

    @property
    def is_class_target(self) -> bool:
        return self.quantize


@dataclass(frozen=True, kw_only=True)
class SemanticEDTTarget(TargetSpec):
    """'6-mode-a-b': ``tanh(EDT_fg / a - EDT_bg / b)``, one float32 channel in (-1, 1)."""

    mode: str = "2d"
    alpha_fore: float = 8.0
    alpha_back: float = 50.0
    kind: ClassVar[str] = "semantic_edt"

    @property
    def channels(self) -> int:
        return 1


@dataclass(frozen=True, kw_only=True)
class FlowTarget(TargetSpec):
    """'7': Cellpose diffusion flows, channels (dy, dx) float32, unit vectors inside every
    instance, 0 on background; computed per z slice. '7-0' appends the binary foreground
    (``label > 0``) as a third channel. See :mod:`connectomics_data.targets.flows`."""

    with_mask: bool = False
    kind: ClassVar[str] = "flows"

    @property
    def channels(self) -> int:
        return 3 if self.with_mask else 2


@dataclass(frozen=True, kw_only=True)
class DilatedEDTTarget(TargetSpec):
    """'8-dil-mode-padding-quant-zres-erosion': the label grey-dilated in-plane by a
    ``(1, 2*dil+1, 2*dil+1)`` window, then the instance EDT ``edt`` of '5' (for thin
    structures such as skeletons: the target peaks on the structure)."""

    dilation: int = 0
    edt: InstanceEDTTarget
    kind: ClassVar[str] = "dilated_edt"

    @property
    def channels(self) -> int:
        return self.edt.channels

    @property
    def is_class_target(self) -> bool:
        return self.edt.is_class_target


@dataclass(frozen=True, kw_only=True)
class SkeletonEDTTarget(TargetSpec):
    """'a-quant-zres-yres-xres': skeleton-aware distance transform (SDT, Lin et al., MICCAI
    2023): inside each instance ``(d_b / (d_s + d_b)) ** 0.8`` with ``d_b`` the distance to the
    instance boundary and ``d_s`` to its skeleton, background -1. ``quantize`` gives 11 int64
    classes as for '5'. See :mod:`connectomics_data.targets.skeleton`."""

    quantize: bool = False
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    kind: ClassVar[str] = "skeleton_edt"

    @property
    def channels(self) -> int:
        return QUANT_LEVELS + 1 if self.quantize else 1

    @property
    def is_class_target(self) -> bool:
        return self.quantize


@dataclass(frozen=True, kw_only=True)
class SemanticClassTarget(TargetSpec):
    """'9-C': the label values are class indices 0..C-1. The model outputs C channels; the
    target is ONE int64 channel (cross-entropy), not C one-hot channels."""

    num_classes: int = 2
    kind: ClassVar[str] = "semantic_classes"

    @property
    def channels(self) -> int:
        return self.num_classes

    @property
    def is_class_target(self) -> bool:
        return True

    @property
    def needs_original_ids(self) -> bool:
        return True


# --------------------------------------------------------------------------------------------
# Weight specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WeightSpec:
    """A parsed weight code (one entry of ``MODEL.WEIGHT_OPT[i]``)."""

    code: str
    kind: ClassVar[str] = "weight"

    def channels(self, target: TargetSpec) -> int:
        """Channels of the weight array produced for ``target`` (it broadcasts over them)."""
        return 1


@dataclass(frozen=True, kw_only=True)
class NoWeight(WeightSpec):
    """'0': the valid mask as float32 ``(1, z, y, x)`` if one is given, else ``None``."""

    kind: ClassVar[str] = "none"


@dataclass(frozen=True, kw_only=True)
class BinaryRatioWeight(WeightSpec):
    """'1' / '1-1': rebalance foreground and background; ``dilate`` is '1-1'."""

    dilate: bool = False
    kind: ClassVar[str] = "binary_ratio"

    def channels(self, target: TargetSpec) -> int:
        return target.target_channels


@dataclass(frozen=True, kw_only=True)
class UNetBorderWeight(WeightSpec):
    """'2-w0-w1': U-Net border weight per slice, sigma fixed to 5 as in PyTC."""

    w0: float = 10.0
    w1: float = 5.0
    sigma: float = 5.0
    kind: ClassVar[str] = "unet_border"


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: one field failed; carries the reason."""


def _int(field: str, name: str, lo: int = 0, hi: int = _MAX_ID) -> int:
    if not _INT_RE.fullmatch(field):
        raise _Bad(f"{name} {field!r} is not a non-negative integer")
    if len(field.lstrip("0")) > 19:  # also keeps int() clear of its 4300-digit limit
        raise _Bad(f"{name} {field[:24]}... must be in [{lo}, {hi}]")
    value = int(field)
    if not lo <= value <= hi:
        raise _Bad(f"{name} {value} must be in [{lo}, {hi}]")
    return value


def _flag(field: str, name: str) -> bool:
    if field not in ("0", "1"):
        raise _Bad(f"{name} {field!r} must be 0 or 1")
    return field == "1"


def _float(field: str, name: str, positive: bool = True) -> float:
    if not _FLOAT_RE.fullmatch(field):
        raise _Bad(f"{name} {field!r} is not a number")
    value = float(field)
    if not math.isfinite(value) or (positive and value <= 0.0):
        raise _Bad(f"{name} {field!r} must be a finite number{' > 0' if positive else ''}")
    return value


def _mode(field: str) -> str:
    if field not in ("2d", "3d"):
        raise _Bad(f"mode {field!r} must be '2d' or '3d'")
    return field


def _instance_edt(args: list[str], code: str, do_2d: bool) -> InstanceEDTTarget:
    """The options of '5' (also the tail of '8'): none, 4 (no erosion) or 5 fields."""
    if not args:
        args = ["2d", "0", "0", "5.0", "0"]  # PyTC's default, which its own split code lacks
    elif len(args) == 4:
        args = [*args, "0"]  # the older 5-field form has no erosion
    return InstanceEDTTarget(
        code=code,
        do_2d=do_2d,
        mode=_mode(args[0]),
        padding=_flag(args[1], "padding"),
        quantize=_flag(args[2], "quant"),
        zres=_float(args[3], "zres"),
        erosion=_int(args[4], "erosion", hi=10_000),
    )


def _parse_target_fields(head: str, args: list[str], code: str, do_2d: bool) -> TargetSpec:
    n = len(args)
    if head == "0":
        ids = tuple(_int(a, "id") for a in args)
        return BinaryTarget(code=code, do_2d=do_2d, ids=ids)
    if head == "1":
        if n == 0:
            return PolarityTarget(code=code, do_2d=do_2d, exclusive=False)
        if args == ["1"]:
            return PolarityTarget(code=code, do_2d=do_2d, exclusive=True)
        raise _Bad("only '1' and '1-1' exist")
    if head == "2":
        if n == 0:
            return AffinityTarget(code=code, do_2d=do_2d)
        if n != 4:
            raise _Bad(f"expected 5 fields, got {n + 1}")
        z, y, x = (_int(a, f"{ax} offset", lo=1) for a, ax in zip(args[:3], "zyx"))
        if args[3] not in ("v1", "v2", "pni"):
            raise _Bad(f"version {args[3]!r} must be v1, v2 or pni")
        return AffinityTarget(code=code, do_2d=do_2d, offsets=(z, y, x), version=args[3])
    if head == "3":
        if n != 3:
            raise _Bad(f"expected 4 fields, got {n + 1}")
        return SmallObjectTarget(
            code=code,
            do_2d=do_2d,
            size_thres=_int(args[0], "size_thres"),
            zratio=_int(args[1], "zratio", lo=1),
            unused=_int(args[2], "last field"),
        )
    if head == "4":
        if n != 2:
            raise _Bad(f"expected 3 fields, got {n + 1}")
        return ContourTarget(
            code=code,
            do_2d=do_2d,
            bd_sz=_int(args[0], "bd_sz", hi=10_000),
            do_bg=_flag(args[1], "do_bg"),
        )
    if head == "5":
        if n not in (0, 4, 5):
            raise _Bad(f"expected 1, 5 or 6 fields, got {n + 1}")
        return _instance_edt(args, code, do_2d)
    if head == "7":
        if n == 0:
            return FlowTarget(code=code, do_2d=do_2d)
        if args == ["0"]:
            return FlowTarget(code=code, do_2d=do_2d, with_mask=True)
        raise _Bad("only '7' and '7-0' exist")
    if head == "8":
        if n not in (1, 5, 6):
            raise _Bad(f"expected 2, 6 or 7 fields, got {n + 1}")
        return DilatedEDTTarget(
            code=code,
            do_2d=do_2d,
            dilation=_int(args[0], "dil", hi=10_000),
            edt=_instance_edt(args[1:], code, do_2d),
        )
    if head == "a":
        if n != 4:
            raise _Bad(f"expected 5 fields, got {n + 1}")
        z, y, x = (_float(a, f"{ax}res") for a, ax in zip(args[1:], "zyx"))
        return SkeletonEDTTarget(
            code=code, do_2d=do_2d, quantize=_flag(args[0], "quant"), resolution=(z, y, x)
        )
    if head == "6":
        if n == 0:
            args = ["2d", "8", "50"]
        elif n != 3:
            raise _Bad(f"expected 1 or 4 fields, got {n + 1}")
        return SemanticEDTTarget(
            code=code,
            do_2d=do_2d,
            mode=_mode(args[0]),
            alpha_fore=_float(args[1], "a"),
            alpha_back=_float(args[2], "b"),
        )
    if head == "9":
        if n != 1:
            raise _Bad("the number of classes is required")
        return SemanticClassTarget(
            code=code, do_2d=do_2d, num_classes=_int(args[0], "C", lo=2, hi=1_000_000)
        )
    raise AssertionError(head)  # pragma: no cover - heads are checked by the caller


# --------------------------------------------------------------------------------------------
# Public parsers
# --------------------------------------------------------------------------------------------


def parse_target(code: str, do_2d: bool = False) -> TargetSpec:
    """Parse one TARGET_OPT code into its spec.

    Args:
        code: e.g. '0', '4-1-1', '2-1-3-3-v1', '5', '7-0', '8-1', 'a-0-40-16-16', '9-3'.
        do_2d: DATASET.DO_2D; changes the affinity channel count from 3 to 2.

    Raises:
        ConfigError: naming the code and the expected syntax, for any code that does not parse
            (also non-strings and 'all').
    """
    if not isinstance(code, str):
        raise ConfigError(
            f"target code {code!r} is a {type(code).__name__}, expected a string; quote it in "
            f"YAML, e.g. TARGET_OPT: ['0']"
        )
    if code == "all":
        raise ConfigError(
            "target code 'all' is only allowed as the last entry of TARGET_OPT, where it is "
            "stripped before parsing"
        )
    fields = code.split("-")
    head, args = fields[0], fields[1:]
    if head not in TARGET_SYNTAX:
        expected = "; ".join(TARGET_SYNTAX.values())
        raise ConfigError(
            f"invalid target code {code!r}: unknown kind {head!r}. Expected {expected}"
        )
    if any(a == "" for a in args):
        raise ConfigError(
            f"invalid target code {code!r}: empty field. Expected {TARGET_SYNTAX[head]}"
        )
    try:
        return _parse_target_fields(head, args, code, bool(do_2d))
    except _Bad as err:
        raise ConfigError(
            f"invalid target code {code!r}: {err}. Expected {TARGET_SYNTAX[head]}"
        ) from None


def parse_targets(codes: Sequence[str], do_2d: bool = False) -> list[TargetSpec]:
    """Parse a whole TARGET_OPT list; a trailing 'all' (PyTC's user-defined marker) is dropped."""
    if isinstance(codes, str) or not isinstance(codes, Sequence):
        raise ConfigError(f"TARGET_OPT must be a list of code strings, got {codes!r}")
    items = list(codes)
    if items and items[-1] == "all":
        items = items[:-1]
    if not items:
        raise ConfigError(f"TARGET_OPT {list(codes)!r} holds no target code")
    return [parse_target(c, do_2d=do_2d) for c in items]


def parse_weight(code: str) -> WeightSpec:
    """Parse one WEIGHT_OPT code ('0', '1', '1-1', '2-w0-w1').

    Unlike PyTC, which silently treats any unknown code as "no weight", an unknown code is an
    error. A bare '2' takes PyTC's function defaults w0=10, w1=5.

    Raises:
        ConfigError: naming the code and the expected syntax.
    """
    if not isinstance(code, str):
        raise ConfigError(
            f"weight code {code!r} is a {type(code).__name__}, expected a string such as '1'"
        )
    if code == "0":
        return NoWeight(code=code)
    if code == "1":
        return BinaryRatioWeight(code=code, dilate=False)
    if code == "1-1":
        return BinaryRatioWeight(code=code, dilate=True)
    fields = code.split("-")
    if fields[0] == "2" and len(fields) in (1, 3):
        if len(fields) == 1:
            return UNetBorderWeight(code=code)
        try:
            w0 = _float(fields[1], "w0", positive=False)
            w1 = _float(fields[2], "w1", positive=False)
        except _Bad as err:
            raise ConfigError(
                f"invalid weight code {code!r}: {err}. Expected {WEIGHT_SYNTAX}"
            ) from None
        if max(w0, w1) < 1.0:
            raise ConfigError(
                f"invalid weight code {code!r}: max(w0, w1) must be >= 1 (the weight is clipped "
                f"to [1, max(w0, w1)]). Expected {WEIGHT_SYNTAX}"
            )
        return UNetBorderWeight(code=code, w0=w0, w1=w1)
    raise ConfigError(f"invalid weight code {code!r}. Expected {WEIGHT_SYNTAX}")


def parse_weights(
    codes: Sequence[Sequence[str]], num_targets: int | None = None
) -> list[list[WeightSpec]]:
    """Parse a whole WEIGHT_OPT (a list per target of weight codes).

    Args:
        codes: e.g. ``[['1', '0'], ['1']]``.
        num_targets: if given, ``len(codes)`` must equal it.
    """
    if isinstance(codes, str) or not isinstance(codes, Sequence):
        raise ConfigError(f"WEIGHT_OPT must be a list of lists of codes, got {codes!r}")
    if num_targets is not None and len(codes) != num_targets:
        raise ConfigError(
            f"WEIGHT_OPT {codes!r} has {len(codes)} entries, expected one per target "
            f"({num_targets})"
        )
    out = []
    for inner in codes:
        if isinstance(inner, str) or not isinstance(inner, Sequence):
            raise ConfigError(f"WEIGHT_OPT entry {inner!r} must be a list of codes, e.g. ['1']")
        out.append([parse_weight(c) for c in inner])
    return out


def resolve_rates(rates: Any, num_targets: int, key: str = "MODEL.LABEL_EROSION") -> list[int]:
    """Per-target radii from LABEL_EROSION / LABEL_DILATION: None, one int, or one per target.

    Returns ``num_targets`` non-negative ints (0 = leave the label as is).

    Raises:
        ConfigError: naming ``key`` for negative, non-integer or wrongly sized values.
    """

    def one(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(
                f"{key} must be None, an integer >= 0 or one per target, got {rates!r}"
            )
        return int(v)

    if rates is None:
        return [0] * num_targets
    if isinstance(rates, (list, tuple)):
        if len(rates) != num_targets:
            raise ConfigError(
                f"{key} {list(rates)!r} has {len(rates)} entries, expected one per target "
                f"({num_targets})"
            )
        return [one(v) for v in rates]
    return [one(rates)] * num_targets
