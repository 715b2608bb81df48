"""Load a config: defaults -> base file -> file -> command-line pairs -> inference overrides
-> derived values -> validation -> freeze.

Merging follows yacs' rules (so PyTC v1 YAML files load unmodified) with clearer errors: an
unknown key names the file and suggests the closest valid spelling; a type mismatch names the
key, the file, the expected type and the value. String values are decoded with
``ast.literal_eval`` exactly as yacs does ('None' -> None, '[1, 2]' -> a list); nothing is ever
passed to ``eval``.
"""

from __future__ import annotations

import ast
import difflib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode

from ..errors import ConfigError, ConfigKeyError
from .defaults import get_cfg_defaults
from .schema import KEY_INDEX

Provenance = dict[str, str]

REPO_ROOT = Path(__file__).resolve().parents[2]


class UnusedPyTCKeysWarning(UserWarning):
    """PyTC v1 keys that were set but that this project does not act on."""


# --------------------------------------------------------------------------- files
def resolve_config_path(path: str | os.PathLike) -> Path:
    """The config file ``path``; if it does not exist, ``configs/<path>`` in the working
    directory or the repository. Raises ConfigError listing where it looked."""
    candidates = [Path(path)]
    p = Path(path)
    if not p.is_absolute():
        candidates += [Path("configs") / p, REPO_ROOT / p, REPO_ROOT / "configs" / p]
    for cand in candidates:
        if cand.is_file():
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"config file {str(path)!r} not found (looked at: {tried})")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML config file into a mapping; every failure names the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as err:
        raise ConfigError(f"config file {str(path)!r} does not exist") from err
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not a text (UTF-8) file") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from err
    except (ValueError, TypeError, AttributeError, RecursionError) as err:  # e.g. '!!float x', deep nesting
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {type(err).__name__}: {err}") from err
    if data is None:
        raise ConfigError(f"config file {str(path)!r} is empty: expected a mapping of config nodes such as MODEL: ...")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of config nodes (SYSTEM, MODEL, DATASET, ...), "
            f"got a {type(data).__name__}"
        )
    return dict(data)


# --------------------------------------------------------------------------- values
def decode_value(value: Any) -> Any:
    """yacs' decoding of a raw value: strings go through ``ast.literal_eval`` when they parse
    as a Python literal, else stay strings; dicts and other values are returned as is."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return value


def _type_name(value: Any) -> str:
    return type(value).__name__


def coerce_value(new: Any, default: Any, key: str, source: str) -> Any:
    """yacs' type rules, plus int -> float: same type, None either way, list <-> tuple."""
    if new is None or default is None:
        return new
    if isinstance(default, bool):
        if isinstance(new, bool):
            return new
        if isinstance(new, int) and new in (0, 1):
            return bool(new)
    elif isinstance(default, int) and isinstance(new, bool):
        return int(new)
    elif isinstance(new, bool):
        pass  # a bool where a str/float/list is expected: error below
    elif type(new) is type(default):
        return new
    elif isinstance(default, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(default)(new)
    elif isinstance(default, float) and isinstance(new, int):
        return float(new)
    raise ConfigError(
        f"{key} (set in {source}): expected a {_type_name(default)} like {default!r}, "
        f"got {_type_name(new)} {new!r}"
    )


def suggest_key(full_key: str) -> str:
    """' Did you mean X?' for an unknown key, or '' when nothing is close."""
    all_keys = list(KEY_INDEX)
    if "." not in full_key:  # a top-level node: suggest a node (MODLE -> MODEL), not a leaf
        nodes = sorted({key.split(".")[0] for key in all_keys})
        close = difflib.get_close_matches(full_key, nodes, n=1, cutoff=0.6)
        if close:
            return f" Did you mean {close[0]}?"
    close = difflib.get_close_matches(full_key, all_keys, n=1, cutoff=0.6)
    if not close:
        leaf = full_key.rsplit(".", 1)[-1]
        same_leaf = [key for key in all_keys if key.rsplit(".", 1)[-1] == leaf]
        if not same_leaf:
            leaves = {key.rsplit(".", 1)[-1]: key for key in all_keys}
            near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
            same_leaf = [leaves[near[0]]] if near else []
        close = same_leaf[:1]
    if not close:
        nodes = sorted({key.rsplit(".", 1)[0] for key in all_keys} | {key.split(".")[0] for key in all_keys})
        close = difflib.get_close_matches(full_key, nodes, n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


def _unknown(full_key: str, source: str) -> ConfigKeyError:
    return ConfigKeyError(f"unknown config key {full_key} (in {source}).{suggest_key(full_key)}")


# --------------------------------------------------------------------------- merging
def merge_mapping(cfg: CfgNode, mapping: Mapping, source: str, provenance: Provenance, prefix: str = "") -> None:
    """Merge a nested mapping (a parsed YAML file) into ``cfg``, recording where keys came from."""
    for raw_key, raw_value in mapping.items():
        if not isinstance(raw_key, str):
            raise ConfigError(f"config key {raw_key!r} under {prefix or 'the top level'} in {source} is not a string")
        full_key = f"{prefix}{raw_key}"
        if raw_key not in cfg:
            raise _unknown(full_key, source)
        current = cfg[raw_key]
        if isinstance(current, CfgNode):
            if not isinstance(raw_value, Mapping):
                raise ConfigError(
                    f"{full_key} (in {source}) is a group of keys ({', '.join(list(current)[:4])}, ...); "
                    f"expected a mapping, got {_type_name(raw_value)} {raw_value!r}"
                )
            merge_mapping(current, raw_value, source, provenance, prefix=f"{full_key}.")
            continue
        value = decode_value(raw_value)
        if isinstance(value, Mapping):
            raise ConfigError(f"{full_key} (in {source}) is a single value, not a group; got a mapping {dict(value)!r}")
        cfg[raw_key] = coerce_value(value, current, full_key, source)
        provenance[full_key] = source


def merge_opts(cfg: CfgNode, opts: Sequence[str], provenance: Provenance) -> None:
    """Merge command-line ``KEY VALUE`` pairs (values decoded as yacs does)."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"command-line overrides must be KEY VALUE pairs; got an odd number of items: {opts}"
        )
    for full_key, raw in zip(opts[0::2], opts[1::2]):
        parts = full_key.split(".")
        node = cfg
        for i, name in enumerate(parts):
            if not isinstance(node, CfgNode) or name not in node:
                raise _unknown(full_key, "the command line")
            if i < len(parts) - 1:
                node = node[name]
        leaf = parts[-1]
        if isinstance(node[leaf], CfgNode):
            raise ConfigError(f"{full_key} (on the command line) is a group of keys, not a single value")
        node[leaf] = coerce_value(decode_value(raw), node[leaf], full_key, "the command line")
        provenance[full_key] = "the command line"


# --------------------------------------------------------------------------- overrides
def apply_inference_overrides(cfg: CfgNode) -> None:
    """PyTC's ``update_inference_cfg``, without its bugs (IMAGE_NAME is replaced only when
    INFERENCE.IMAGE_NAME is set; OUTPUT_PATH only when INFERENCE.OUTPUT_PATH is non-empty)."""
    inf = cfg.INFERENCE
    if inf.INPUT_PATH is not None:
        cfg.DATASET.INPUT_PATH = inf.INPUT_PATH
    if inf.IMAGE_NAME is not None:
        cfg.DATASET.IMAGE_NAME = inf.IMAGE_NAME
    if inf.OUTPUT_PATH:
        cfg.DATASET.OUTPUT_PATH = inf.OUTPUT_PATH
    for key in ("PAD_SIZE", "IS_ABSOLUTE_PATH", "DO_CHUNK_TITLE", "DATA_SCALE"):
        if inf[key] is not None:
            cfg.DATASET[key] = inf[key]
    for key in ("INPUT_SIZE", "OUTPUT_SIZE"):
        if inf[key] is not None:
            cfg.MODEL[key] = inf[key]
    name = inf.OUTPUT_NAME
    if not (inf.DO_SINGLY or cfg.DATASET.DO_CHUNK_TITLE) and name and "{" not in name and not os.path.splitext(name)[1]:
        ext = ".zarr" if inf.get("OUTPUT_FORMAT", "h5") == "zarr" else ".h5"
        inf.OUTPUT_NAME = name + ext


def apply_derived_values(cfg: CfgNode, distributed: bool = False) -> None:
    """PyTC's ``overwrite_cfg`` (derived values), minus its bug of disabling AMP without DDP."""
    if distributed:
        cfg.SYSTEM.DISTRIBUTED = True
        cfg.SYSTEM.PARALLEL = "DDP"
    if cfg.DATASET.VALID_MASK_NAME is not None:
        names = list(cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME)
        if "valid_mask" not in names:
            cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME = names + ["valid_mask"]
            cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE = list(cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE) + ["mask"]
    for key in ("IMAGE_SCALE", "LABEL_SCALE", "VALID_MASK_SCALE"):
        if cfg.DATASET[key] is None:
            cfg.DATASET[key] = list(cfg.DATASET.DATA_SCALE)
    if any(str(t).startswith("9") for t in cfg.MODEL.TARGET_OPT):
        cfg.DATASET.REDUCE_LABEL = False


def _user_set_unused(provenance: Provenance, cfg: CfgNode) -> list[str]:
    unused = []
    for key in sorted(provenance):
        spec = KEY_INDEX.get(key)
        if spec is None or spec.acted_on:
            continue
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        if node != spec.default and not (isinstance(node, (list, tuple)) and list(node) == list(spec.default or [])):
            unused.append(key)
    return unused


# --------------------------------------------------------------------------- entry point
def load_cfg(
    config_file: str | os.PathLike | None,
    config_base: str | os.PathLike | None = None,
    opts: Iterable[str] = (),
    inference: bool = False,
    distributed: bool = False,
    freeze: bool = True,
) -> CfgNode:
    """Build the config: defaults -> ``config_base`` -> ``config_file`` -> ``opts`` ->
    inference overrides (when ``inference``) -> derived values -> validation -> freeze.

    Args:
        config_file: the YAML file (found under ``configs/`` too when not in the working dir);
            ``None`` uses the defaults only.
        config_base: an optional base YAML merged first (PyTC's ``--config-base``).
        opts: command-line ``KEY VALUE`` pairs.
        inference: apply the ``INFERENCE.*`` overrides of DATASET / MODEL keys.
        distributed: ``--distributed`` was given.

    Raises:
        ConfigError / ConfigKeyError naming the key and the file.
    """
    cfg = get_cfg_defaults()
    provenance: Provenance = {}
    for path in (config_base, config_file):
        if path is None:
            continue
        resolved = resolve_config_path(path)
        merge_mapping(cfg, read_yaml(resolved), str(resolved), provenance)
    merge_opts(cfg, list(opts), provenance)
    from .validate import check_not_none, validate_cfg  # validate imports the targets parser

    check_not_none(cfg, provenance)
    if inference:
        apply_inference_overrides(cfg)
    apply_derived_values(cfg, distributed=distributed)

    validate_cfg(cfg, provenance, inference=inference)
    unused = _user_set_unused(provenance, cfg)
    if unused:
        warnings.warn(
            "these PyTC v1 keys are accepted but not acted on by connectomics_data: " + ", ".join(unused),
            UnusedPyTCKeysWarning,
            stacklevel=2,
        )
    if freeze:
        cfg.freeze()
    return cfg


def save_cfg(cfg: CfgNode, path: str | os.PathLike) -> None:
    """Write the merged config as YAML, atomically."""
    from ..io.atomic import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(cfg.dump())
