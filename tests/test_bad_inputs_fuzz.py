"""Property-based fuzzing of the two parsers users feed by hand: the YAML config loader and
the tile JSON parser. Any input either loads or raises the project's own error type
(:class:`ConnectomicsDataError`, with a one-line message); nothing else ever escapes.
"""

from __future__ import annotations

import json
import math
import warnings

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectomics_data.config import KEYS, load_cfg
from connectomics_data.errors import ConnectomicsDataError, TileJSONError
from connectomics_data.io.tiles.spec import (
    INFORMATIONAL_KEYS,
    OPTIONAL_KEYS,
    REQUIRED_KEYS,
    TileSpec,
    load_tile_json,
    spec_from_dict,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_NODES = sorted({spec.key.split(".")[0] for spec in KEYS})
_PATHS = sorted({".".join(spec.key.split(".")[:i]) for spec in KEYS for i in range(1, spec.key.count(".") + 2)})
_LEAVES = sorted({spec.key.rsplit(".", 1)[-1] for spec in KEYS})


def _load_or_our_error(*args, **kwargs) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_cfg(*args, **kwargs)
    except ConnectomicsDataError as err:
        assert str(err).strip(), "an error without a message"


# --------------------------------------------------------------------------- config: values
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["None", "[1, 2, 3]", "{'a': 1}", "1e400", "(1, 2)", "[[[]]]", "True"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
)
_keys = st.one_of(st.sampled_from(_NODES), st.sampled_from(_LEAVES), st.text(max_size=8))


@st.composite
def _nested_configs(draw) -> dict:
    """Nested mappings mixing real node paths, real leaves, random keys and any values."""
    cfg: dict = {}
    for path in draw(st.lists(st.sampled_from(_PATHS), max_size=5)):
        node = cfg
        *parents, leaf = path.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = draw(_values)
    extra = draw(st.dictionaries(_keys, _values, max_size=2))
    target = cfg if not cfg or draw(st.booleans()) else next(iter(cfg.values()))
    if isinstance(target, dict):
        target.update(extra)
    return cfg


@FUZZ
@given(_nested_configs())
@example({"MODEL": {"INPUT_SIZE": [[1], [2], [3]]}})
@example({"DATASET": {"DATA_SCALE": [1, {"a": 1}, 1]}})
@example({"MODEL": {"TARGET_OPT": [None]}, "SOLVER": {"BASE_LR": float("nan")}})
@example({"AUGMENTOR": {"FLIP": {"P": "1e400"}}})
@example({"MODLE": {"FILTERS": [4]}})
def test_fuzz_nested_config_loads_or_raises_our_error(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    _load_or_our_error(path)


# --------------------------------------------------------------------------- config: raw YAML
_YAML_TOKENS = [
    "MODEL", "DATASET", "SOLVER", "AUGMENTOR", "INPUT_SIZE", "TARGET_OPT", "FILTERS", "P", "FLIP",
    ":", ": ", "\n", "\n  ", "  ", "- ", "[", "]", "{", "}", ", ", "'", '"', "&a ", "*a", "<<: *a",
    "!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14",
    "!!float .inf", ".nan", "~", "null", "yes", "0x1F", "1e400", "-3", "0.5", "---", "...", "%YAML 1.2\n", "? ",
    "|\n  ", ">-\n  ", "#", "\t", "\\x00", "\u00e9", "True",
]


@FUZZ
@given(st.lists(st.sampled_from(_YAML_TOKENS), max_size=25).map("".join))
@example("MODEL: &a {FILTERS: [4]}\nSOLVER: *a\n")
@example("MODEL:\n  INPUT_SIZE: !!python/object/apply:os.system ['true']\n")
@example("MODEL:\n  ARCHITECTURE: !!binary aGVsbG8=\n")
@example("? [MODEL]\n: 1\n")
@example("DATASET:\n  IMAGE_NAME: !!timestamp 2001-12-14\n")
@example("a: &a [*a]\n")
@example("MODEL: !!float .infmodel\n")
@example("!!timestamp 2001-12-14MODEL")
@example("[" * 3000 + "]" * 3000)
def test_fuzz_yaml_text_loads_or_raises_our_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "t.yaml"
    path.write_text(text)
    _load_or_our_error(path)


# --------------------------------------------------------------------------- config: command line
@FUZZ
@given(st.lists(st.one_of(st.sampled_from([spec.key for spec in KEYS]), st.sampled_from(_PATHS),
                          st.text(max_size=10), st.sampled_from(["[1, 2]", "[[[[[]]]]]" * 3, "1e999", "None", "'x'",
                                                                 "(" * 200, "{1: 2}", "-0.0", "0x10", "b'x'"])),
                max_size=6))
def test_fuzz_command_line_overrides_load_or_raise_our_error(opts):
    _load_or_our_error(None, opts=opts)


# --------------------------------------------------------------------------- tile JSON
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="{}rowcolumn:0d!x.[]_/ ", max_size=10),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=10,
)
_entries = st.one_of(
    st.text(alphabet="{}rowcolumn:0d2!x._/ ", max_size=10),
    st.sampled_from(["s0/{row}_{column}.png", "{row:02d}/{column:03d}.tif", "{{literal}}.png", "{row}.png",
                     "{column}{row}", "{row!r}_{column}", "{0}_{1}", "{row:{column}}", "{row.x}_{column}", "}{"]),
)
VALID = {"image": ["s0/{row}_{column}.png"], "height": 20, "width": 27, "depth": 1, "tile_size": 8}


@st.composite
def _tile_dicts(draw) -> object:
    """Mostly-valid tile JSON objects with some fields replaced, removed or added at random,
    so the fuzz reaches the deep checks (patterns, depth, tile size), plus arbitrary values."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_json_values)
    data = dict(VALID)
    fields = list(REQUIRED_KEYS + OPTIONAL_KEYS + INFORMATIONAL_KEYS) + ["unknown"]
    for key in draw(st.lists(st.sampled_from(fields), max_size=4)):
        action = draw(st.integers(0, 3))
        if action == 0:
            data.pop(key, None)
        elif key == "image":
            data[key] = draw(st.one_of(st.lists(_entries, max_size=4), _json_values))
        elif key == "tile_size":
            data[key] = draw(st.one_of(st.lists(_json_scalars, max_size=3), _json_scalars))
        else:
            data[key] = draw(_json_values)
    if "image" in data and isinstance(data["image"], list) and draw(st.booleans()):
        data["depth"] = len(data["image"])  # get past the depth check more often
    return data


def _check_spec(spec: TileSpec, data: dict) -> None:
    """Invariants of an accepted spec."""
    assert spec.shape == (data["depth"], data["height"], data["width"])
    assert len(spec.images) == len(spec.is_pattern) == spec.depth
    assert min(spec.tile_shape) > 0 and spec.tile_ratio > 0 and math.isfinite(spec.tile_ratio)
    rows, cols = spec.grid_shape
    assert rows * spec.tile_shape[0] >= spec.height and cols * spec.tile_shape[1] >= spec.width


@FUZZ
@given(_tile_dicts())
@example({**VALID, "tile_size": [True, 8]})
@example({**VALID, "tile_ratio": float("inf")})
@example({**VALID, "tile_st": [0.5, 1]})
@example({**VALID, "image": ["{row:{column}}"]})
@example({**VALID, "dtype": ["uint8"]})
@example({**VALID, "height": 2**70})
def test_fuzz_tile_json_dict_parses_or_raises_our_error(data):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = spec_from_dict(data, "fuzz.json")
    except TileJSONError as err:
        assert "fuzz.json" in str(err)
    else:
        _check_spec(spec, data)


@FUZZ
@given(st.one_of(_tile_dicts().map(lambda d: json.dumps(d, allow_nan=True)),
                 st.text(alphabet='{}[]":,0123456789.-eEtruefalsn\\ \n', max_size=40),
                 st.binary(max_size=30).map(lambda b: b.decode("latin-1"))))
@example('{"image": ["a.png"], "height": 1e999, "width": 1, "depth": 1, "tile_size": 1}')
@example('{"image": ["a.png"], "height": NaN, "width": 1, "depth": 1, "tile_size": 1}')
@example("[" * 5000 + "]" * 5000)
def test_fuzz_tile_json_file_loads_or_raises_our_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("tiles") / "t.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_tile_json(path)
    except ConnectomicsDataError as err:
        assert str(path) in str(err)
