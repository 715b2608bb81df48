"""Load-time validation: every failure is one message naming the key and the file it came from."""

from __future__ import annotations

import warnings
from typing import Any

from yacs.config import CfgNode

from ..errors import ConfigError

PAD_MODES = ("reflect", "symmetric", "edge", "constant", "wrap")
ENUMS: dict[str, tuple[Any, ...]] = {
    "DATASET.PAD_MODE": PAD_MODES,
    "DATASET.MATCH_ACT": ("none", "sigmoid", "tanh"),
    "DATASET.VOLUME_SAMPLING": ("automatic", "element"),
    "DATASET.REJECT_SAMPLING.EXHAUSTED": ("raise", "warn"),
    "INFERENCE.BLENDING": ("gaussian", "bump"),
    "INFERENCE.AUG_MODE": ("mean", "min", "max"),
    "INFERENCE.AUG_NUM": (None, 0, 4, 8, 16),
    "INFERENCE.OUTPUT_DTYPE": ("uint8", "float16", "float32"),
    "INFERENCE.OUTPUT_FORMAT": ("h5", "zarr"),
    "AUGMENTOR.NOISE.MODE": ("gaussian", "poisson", "salt_pepper", "speckle"),
    "SOLVER.NAME": ("SGD", "Adam", "AdamW"),
    "SOLVER.LR_SCHEDULER_NAME": ("MultiStepLR", "WarmupMultiStepLR", "WarmupCosineLR"),
    "SOLVER.WARMUP_METHOD": ("linear", "constant"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("value", "norm"),
    "SYSTEM.DISTRIBUTED_BACKEND": ("nccl", "gloo"),
}
ACTIVATIONS = ("none", "sigmoid", "tanh", "softmax")


class _Checker:
    def __init__(self, cfg: CfgNode, provenance: dict[str, str]):
        self.cfg = cfg
        self.provenance = provenance

    def get(self, key: str) -> Any:
        node: Any = self.cfg
        for part in key.split("."):
            node = node[part]
        return node

    def where(self, key: str) -> str:
        return self.provenance.get(key, "the defaults")

    def fail(self, key: str, expected: str, value: Any = None, show_value: bool = True) -> None:
        shown = f", got {value!r}" if show_value else ""
        raise ConfigError(f"{key} (set in {self.where(key)}): expected {expected}{shown}")

    # ---------------------------------------------------------------- shapes of values
    def size3(self, key: str, allow_none: bool = False) -> None:
        v = self.get(key)
        if v is None and allow_none:
            return
        if not _is_int_list(v, 3) or any(x <= 0 for x in v):
            self.fail(key, "3 positive integers [z, y, x]", v)

    def pad(self, key: str, allow_none: bool = False) -> None:
        v = self.get(key)
        if v is None and allow_none:
            return
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if not (_is_int_list(v, 1) or _is_int_list(v, 3) or _is_int_list(v, 6)) or any(x < 0 for x in v):
            self.fail(key, "one, 3 ([z, y, x]) or 6 (before/after per axis) non-negative integers", self.get(key))

    def scale3(self, key: str, allow_none: bool = True) -> None:
        v = self.get(key)
        if v is None and allow_none:
            return
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) and x > 0 for x in v)):
            self.fail(key, "3 positive numbers [z, y, x]", v)

    def probability(self, key: str) -> None:
        v = self.get(key)
        if not _is_number(v) or not 0.0 <= float(v) <= 1.0:
            self.fail(key, "a probability in [0, 1]", v)

    def positive_int(self, key: str, minimum: int = 1) -> None:
        v = self.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            self.fail(key, f"an integer >= {minimum}", v)

    def enum(self, key: str, allowed: tuple[Any, ...]) -> None:
        v = self.get(key)
        if v not in allowed:
            self.fail(key, "one of " + ", ".join(repr(a) for a in allowed), v)

    def list_len(self, key: str, length: int, other: str) -> None:
        v = self.get(key)
        if not isinstance(v, (list, tuple)) or len(v) != length:
            n = len(v) if isinstance(v, (list, tuple)) else "not a list"
            raise ConfigError(
                f"{key} (set in {self.where(key)}) has {n} entries but {other} has {length}: "
                f"they must have one entry per target; got {v!r}"
            )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int_list(v: Any, n: int) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) == n
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    )


class ExtraOutputActWarning(UserWarning):
    """INFERENCE.OUTPUT_ACT has more entries than MODEL.TARGET_OPT; the extra ones are ignored."""


def _check_inference_act(c: _Checker, codes: list[str]) -> None:
    """One INFERENCE.OUTPUT_ACT entry per target. More entries are accepted as PyTC accepts
    them (its SplitActivation applies entry i to target i and never reads the rest), with a
    warning naming the entries used and ignored; fewer are an error."""
    acts = c.get("INFERENCE.OUTPUT_ACT")
    n = len(codes)
    if isinstance(acts, (list, tuple)) and len(acts) > n:
        warnings.warn(
            f"INFERENCE.OUTPUT_ACT (set in {c.where('INFERENCE.OUTPUT_ACT')}) has {len(acts)} "
            f"entries for {n} target(s) {list(codes)}; as in PyTC the first {n} are used "
            f"({list(acts[:n])}) and {list(acts[n:])} ignored",
            ExtraOutputActWarning,
            stacklevel=5,
        )
        return
    c.list_len("INFERENCE.OUTPUT_ACT", n, f"MODEL.TARGET_OPT {list(codes)}")


class ClippedOutputWarning(UserWarning):
    """A prediction with values below 0 or above 1 is written as uint8 and will be clipped."""


def _warn_clipped_uint8(c: _Checker) -> None:
    """INFERENCE.OUTPUT_ACT 'none' writes raw network values (e.g. '7' flows in [-1, 1]);
    uint8 output keeps only [0, 1]. Warn once, naming the targets and the fix."""
    if c.get("INFERENCE.OUTPUT_DTYPE") != "uint8":
        return
    codes = [t for t in c.get("MODEL.TARGET_OPT") if t != "all"]
    raw = [code for code, act in zip(codes, c.get("INFERENCE.OUTPUT_ACT")) if act == "none"]
    if raw:
        warnings.warn(
            f"INFERENCE.OUTPUT_ACT is 'none' for target(s) {raw}: their raw values are written "
            f"as uint8 (x255, clipped to [0, 1], as PyTC does), so negative values such as "
            f"flows are lost; set INFERENCE.OUTPUT_DTYPE 'float32' to keep them",
            ClippedOutputWarning,
            stacklevel=4,
        )


def _check_targets(c: _Checker) -> None:
    from ..targets import parse_target, parse_weight

    cfg = c.cfg
    targets = cfg.MODEL.TARGET_OPT
    if not isinstance(targets, (list, tuple)) or not targets or not all(isinstance(t, str) for t in targets):
        c.fail("MODEL.TARGET_OPT", "a non-empty list of target code strings such as ['0', '4-1-1']", targets)
    codes = [t for t in targets if t != "all"]
    do_2d = bool(cfg.DATASET.DO_2D)
    channels = 0
    for code in codes:
        try:
            channels += parse_target(code, do_2d=do_2d).channels
        except ConfigError as err:
            raise ConfigError(f"MODEL.TARGET_OPT (set in {c.where('MODEL.TARGET_OPT')}): {err}") from err
    n = len(codes)
    for key in ("MODEL.WEIGHT_OPT", "MODEL.LOSS_OPTION", "MODEL.LOSS_WEIGHT", "MODEL.OUTPUT_ACT"):
        c.list_len(key, n, f"MODEL.TARGET_OPT {list(codes)}")
    _check_inference_act(c, codes)
    for key in ("MODEL.WEIGHT_OPT", "MODEL.LOSS_OPTION", "MODEL.LOSS_WEIGHT", "MODEL.OUTPUT_ACT"):
        for i, inner in enumerate(c.get(key)):
            if not isinstance(inner, (list, tuple)):
                c.fail(key, f"a list per target (a list of lists), entry {i} is {inner!r}", c.get(key))
    for i in range(n):
        losses = cfg.MODEL.LOSS_OPTION[i]
        for key in ("MODEL.LOSS_WEIGHT", "MODEL.OUTPUT_ACT", "MODEL.WEIGHT_OPT"):
            inner = c.get(key)[i]
            if not isinstance(inner, (list, tuple)) or len(inner) != len(losses):
                raise ConfigError(
                    f"{key}[{i}] (set in {c.where(key)}) must have one entry per loss of target "
                    f"{codes[i]!r} (MODEL.LOSS_OPTION[{i}] = {list(losses)}), got {inner!r}"
                )
        for act in cfg.MODEL.OUTPUT_ACT[i]:
            if act not in ACTIVATIONS:
                c.fail("MODEL.OUTPUT_ACT", "activations from " + ", ".join(ACTIVATIONS), cfg.MODEL.OUTPUT_ACT)
        for code in cfg.MODEL.WEIGHT_OPT[i]:
            try:
                parse_weight(code)
            except ConfigError as err:
                raise ConfigError(f"MODEL.WEIGHT_OPT (set in {c.where('MODEL.WEIGHT_OPT')}): {err}") from err
    for act in cfg.INFERENCE.OUTPUT_ACT:
        if act not in ACTIVATIONS:
            c.fail("INFERENCE.OUTPUT_ACT", "activations from " + ", ".join(ACTIVATIONS), cfg.INFERENCE.OUTPUT_ACT)
    if channels != cfg.MODEL.OUT_PLANES:
        raise ConfigError(
            f"MODEL.OUT_PLANES (set in {c.where('MODEL.OUT_PLANES')}) is {cfg.MODEL.OUT_PLANES} but "
            f"MODEL.TARGET_OPT {list(codes)} needs {channels} output channels"
        )


def check_not_none(cfg: CfgNode, provenance: dict[str, str] | None = None) -> None:
    """Keys we act on whose default is not None must not be set to None (yacs allows it)."""
    from .schema import KEYS

    c = _Checker(cfg, provenance or {})
    for spec in KEYS:
        if spec.acted_on and spec.default is not None and c.get(spec.key) is None:
            c.fail(spec.key, f"a {type(spec.default).__name__} like {spec.default!r} (None is not allowed here)", None)
    for key in ("AUGMENTOR.ADDITIONAL_TARGETS_NAME", "AUGMENTOR.ADDITIONAL_TARGETS_TYPE", "DATASET.DATA_SCALE", "MODEL.TARGET_OPT"):
        if not isinstance(c.get(key), (list, tuple)):
            c.fail(key, "a list", c.get(key))


def validate_cfg(cfg: CfgNode, provenance: dict[str, str] | None = None, inference: bool = False) -> None:
    """Check every constraint the pipeline relies on; raise one ConfigError naming key and file."""
    c = _Checker(cfg, provenance or {})
    check_not_none(cfg, provenance)
    for key in ("MODEL.INPUT_SIZE", "MODEL.OUTPUT_SIZE", "INFERENCE.STRIDE", "DATASET.DATA_CHUNK_NUM"):
        c.size3(key)
    for key in ("INFERENCE.INPUT_SIZE", "INFERENCE.OUTPUT_SIZE"):
        c.size3(key, allow_none=True)
    for key in ("DATASET.PAD_SIZE", "DATASET.VAL_PAD_SIZE"):
        c.pad(key)
    c.pad("INFERENCE.PAD_SIZE", allow_none=True)
    c.scale3("DATASET.DATA_SCALE", allow_none=False)
    voxel = cfg.DATASET.VOXEL_SIZE
    is_level = isinstance(voxel, int) and not isinstance(voxel, bool) and voxel >= 0
    is_size = isinstance(voxel, (list, tuple)) and len(voxel) == 3 and all(_is_number(x) and x > 0 for x in voxel)
    if voxel is not None and not (is_level or is_size):
        c.fail("DATASET.VOXEL_SIZE", "a voxel size [z, y, x] of 3 positive numbers (nm) or a level index >= 0", voxel)
    for key in ("DATASET.IMAGE_SCALE", "DATASET.LABEL_SCALE", "DATASET.VALID_MASK_SCALE", "INFERENCE.DATA_SCALE"):
        c.scale3(key)
    c.scale3("INFERENCE.OUTPUT_SCALE")
    for key, allowed in ENUMS.items():
        c.enum(key, allowed)
    # probabilities
    c.probability("DATASET.VALID_RATIO")
    c.probability("DATASET.REJECT_SAMPLING.P")
    for name, node in cfg.AUGMENTOR.items():
        if isinstance(node, CfgNode) and "P" in node:
            c.probability(f"AUGMENTOR.{name}.P")
    for key in ("SOLVER.SAMPLES_PER_BATCH", "SOLVER.ITERATION_TOTAL", "SOLVER.ITERATION_SAVE",
                "SOLVER.ITERATION_VAL", "INFERENCE.SAMPLES_PER_BATCH", "DATASET.DATA_CHUNK_ITER",
                "DATASET.REJECT_SAMPLING.NUM_TRIAL", "MODEL.IN_PLANES", "MODEL.OUT_PLANES",
                "DATASET.TILE_THREADS"):
        c.positive_int(key)
    for key in ("SYSTEM.NUM_CPUS", "SYSTEM.NUM_GPUS", "DATASET.SAMPLES_PER_EPOCH", "SOLVER.WARMUP_ITERS",
                "DATASET.CHUNK_READ_THREADS", "DATASET.CHUNK_READ_NICE"):
        c.positive_int(key, minimum=0)
    if cfg.SYSTEM.PREFETCH_FACTOR is not None:
        c.positive_int("SYSTEM.PREFETCH_FACTOR")
    names, types = cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME, cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE
    if len(names) != len(types):
        raise ConfigError(
            f"AUGMENTOR.ADDITIONAL_TARGETS_NAME {list(names)} and AUGMENTOR.ADDITIONAL_TARGETS_TYPE "
            f"{list(types)} (set in {c.where('AUGMENTOR.ADDITIONAL_TARGETS_TYPE')}) must have the same length"
        )
    for t in types:
        if t not in ("img", "mask"):
            c.fail("AUGMENTOR.ADDITIONAL_TARGETS_TYPE", "entries 'img' or 'mask'", list(types))
    if cfg.DATASET.DO_2D and cfg.MODEL.INPUT_SIZE[0] != 1:
        c.fail("MODEL.INPUT_SIZE", f"[1, y, x] because DATASET.DO_2D is True (set in {c.where('DATASET.DO_2D')})", cfg.MODEL.INPUT_SIZE)
    if cfg.AUGMENTOR.ENABLED and cfg.AUGMENTOR.FLIP.ENABLED and cfg.AUGMENTOR.FLIP.DO_ZTRANS:
        z, _, x = cfg.MODEL.INPUT_SIZE
        if z != x:
            c.fail("AUGMENTOR.FLIP.DO_ZTRANS", f"0 unless MODEL.INPUT_SIZE has equal z and x (it is {list(cfg.MODEL.INPUT_SIZE)})", cfg.AUGMENTOR.FLIP.DO_ZTRANS)
    if cfg.DATASET.DATA_COORD_RANGE is not None:
        rng = cfg.DATASET.DATA_COORD_RANGE
        flat_ok = _is_int_list(rng, 6)
        nested_ok = isinstance(rng, (list, tuple)) and rng and all(_is_int_list(r, 6) for r in rng)
        if not (flat_ok or nested_ok):
            c.fail("DATASET.DATA_COORD_RANGE", "[z0, z1, y0, y1, x0, x1] or a list of such", rng)
    if cfg.DATASET.CHUNK_IND_SPLIT is not None:
        from ..geometry import parse_chunk_split

        if not isinstance(cfg.DATASET.CHUNK_IND_SPLIT, (str, list, tuple)):
            c.fail("DATASET.CHUNK_IND_SPLIT", "'rank-world' or [rank, world]", cfg.DATASET.CHUNK_IND_SPLIT)
        try:
            parse_chunk_split(cfg.DATASET.CHUNK_IND_SPLIT)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"DATASET.CHUNK_IND_SPLIT (set in {c.where('DATASET.CHUNK_IND_SPLIT')}): {err}") from err
    for key in ("MODEL.LABEL_EROSION", "MODEL.LABEL_DILATION"):
        v = c.get(key)
        if v is None:
            continue
        vals = v if isinstance(v, (list, tuple)) else [v]
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in vals):
            c.fail(key, "a non-negative integer or one per target", v)
        if isinstance(v, (list, tuple)) and len(v) != len([t for t in cfg.MODEL.TARGET_OPT if t != "all"]):
            c.fail(key, f"one entry per target ({len(cfg.MODEL.TARGET_OPT)})", v)
    _check_targets(c)
    if inference:
        _warn_clipped_uint8(c)
    from .architectures import check_architecture

    try:
        check_architecture(cfg.MODEL.ARCHITECTURE, cfg.MODEL.BUILDER)
    except ConfigError as err:
        key = "MODEL.BUILDER" if cfg.MODEL.BUILDER else "MODEL.ARCHITECTURE"
        raise ConfigError(f"{err} (set in {c.where(key)})") from None
