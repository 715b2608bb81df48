"""Config loading: PyTC v1 files load unmodified; bad input fails with one clear message."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.config import (
    KEYS,
    UnusedPyTCKeysWarning,
    get_cfg_defaults,
    load_cfg,
)
from connectomics_data.errors import ConfigError, ConfigKeyError, ConnectomicsDataError

PYTC = Path(__file__).parent / "data" / "pytc_configs"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- defaults
def test_defaults_match_pytc_v1_values_and_types():
    cfg = get_cfg_defaults()
    assert cfg.MODEL.INPUT_SIZE == [8, 256, 256]
    assert cfg.MODEL.TARGET_OPT == ["0"]
    assert cfg.MODEL.WEIGHT_OPT == [["1"]]
    assert cfg.DATASET.PAD_SIZE == [2, 64, 64]
    assert cfg.DATASET.REJECT_SAMPLING.NUM_TRIAL == 50
    assert cfg.AUGMENTOR.ELASTIC.ALPHA == 16.0 and isinstance(cfg.AUGMENTOR.ELASTIC.ALPHA, float)
    assert cfg.AUGMENTOR.COPYPASTE.ENABLED is False
    assert cfg.SOLVER.STEPS == (30000, 35000) and isinstance(cfg.SOLVER.STEPS, tuple)
    assert cfg.INFERENCE.STRIDE == [4, 128, 128]
    assert cfg.INFERENCE.AUG_NUM is None
    assert cfg.INFERENCE.OUTPUT_NAME == "result.h5"


def test_get_cfg_defaults_is_a_mutable_copy():
    a = get_cfg_defaults()
    a.MODEL.INPUT_SIZE = [1, 2, 3]
    assert get_cfg_defaults().MODEL.INPUT_SIZE == [8, 256, 256]


def test_every_key_has_a_meaning():
    assert all(spec.meaning.strip() for spec in KEYS)


def test_defaults_load_and_freeze():
    cfg = load_cfg(None)
    assert cfg.is_frozen()
    assert cfg.DATASET.IMAGE_SCALE == [1.0, 1.0, 1.0]  # derived from DATA_SCALE


# ----------------------------------------------------------------------------- PyTC files
def test_mitoem_base_plus_bc_variant_loads():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_cfg(PYTC / "MitoEM-R-BC.yaml", config_base=PYTC / "MitoEM-R-Base.yaml")
    assert cfg.MODEL.TARGET_OPT == ["0", "4-1-1"]
    assert cfg.MODEL.INPUT_SIZE == [17, 225, 225]
    assert cfg.DATASET.OUTPUT_PATH == "outputs/MitoEM_R_BC/"  # file overrides base
    assert cfg.INFERENCE.AUG_NUM == 4
    unused = [w for w in caught if issubclass(w.category, UnusedPyTCKeysWarning)]
    assert unused == []  # ITERATION_STEP is set, but to its default: nothing to report


def test_pytc_keys_we_do_not_act_on_are_reported_once(tmp_path):
    f = write(tmp_path, "MODEL:\n  BACKBONE: repvgg\n  AUX_OUT: True\nSOLVER:\n  SWA:\n    ENABLED: True\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_cfg(f)
    unused = [w for w in caught if issubclass(w.category, UnusedPyTCKeysWarning)]
    assert len(unused) == 1
    msg = str(unused[0].message)
    assert "MODEL.AUX_OUT" in msg and "MODEL.BACKBONE" in msg and "SOLVER.SWA.ENABLED" in msg
    assert cfg.MODEL.BACKBONE == "repvgg"  # accepted, kept


def test_mitoem_inference_overrides():
    cfg = load_cfg(PYTC / "MitoEM-R-BC.yaml", config_base=PYTC / "MitoEM-R-Base.yaml", inference=True)
    assert cfg.MODEL.INPUT_SIZE == [17, 257, 257]
    assert cfg.DATASET.IMAGE_NAME == "im_test.json"
    assert cfg.DATASET.OUTPUT_PATH == "outputs/MitoEM_R_BC/test/"
    assert cfg.DATASET.PAD_SIZE == [4, 64, 64]
    assert cfg.INFERENCE.OUTPUT_NAME == "result"  # chunked: a stem, no extension added


def test_inference_keeps_image_name_when_inference_image_name_unset():
    cfg = load_cfg(None, opts=["DATASET.IMAGE_NAME", "a.h5"], inference=True)
    assert cfg.DATASET.IMAGE_NAME == "a.h5"  # PyTC would have replaced it by None
    assert cfg.INFERENCE.OUTPUT_NAME == "result.h5"


def test_cremi_base_loads_with_string_none_and_at_names():
    cfg = load_cfg(PYTC / "CREMI-Base.yaml")
    assert cfg.INFERENCE.AUG_NUM is None  # 'None' string decoded as yacs does
    assert cfg.DATASET.IMAGE_NAME.count("@") == 2
    assert cfg.DATASET.REJECT_SAMPLING.SIZE_THRES == 1000
    assert cfg.MODEL.LABEL_EROSION == 1


def test_2d_config_loads():
    cfg = load_cfg(PYTC / "UNet-BC-2D.yaml")
    assert cfg.DATASET.DO_2D and cfg.DATASET.LOAD_2D
    assert cfg.MODEL.INPUT_SIZE == [1, 129, 129]
    assert cfg.DATASET.LABEL_SCALE == [1.0, 4.0, 4.0]


@pytest.mark.parametrize("name", ["Lucchi-Mitochondria.yaml", "SNEMI-Base.yaml"])
def test_standalone_pytc_configs_load(name):
    cfg = load_cfg(PYTC / name)
    assert cfg.is_frozen()


def test_tuple_default_accepts_yaml_list(tmp_path):
    cfg = load_cfg(write(tmp_path, "SOLVER:\n  STEPS: [10, 20]\n  BETAS: [0.8, 0.9]\n"))
    assert cfg.SOLVER.STEPS == (10, 20) and cfg.SOLVER.BETAS == (0.8, 0.9)


def test_command_line_pairs_override_file(tmp_path):
    f = write(tmp_path, "SOLVER:\n  BASE_LR: 0.5\n")
    cfg = load_cfg(f, opts=["SOLVER.BASE_LR", "0.25", "MODEL.INPUT_SIZE", "[9, 65, 65]", "INFERENCE.AUG_NUM", "None"])
    assert cfg.SOLVER.BASE_LR == 0.25
    assert cfg.MODEL.INPUT_SIZE == [9, 65, 65]
    assert cfg.INFERENCE.AUG_NUM is None


def test_int_is_accepted_for_float_key(tmp_path):
    cfg = load_cfg(write(tmp_path, "SOLVER:\n  BASE_LR: 1\n"))
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)


def test_valid_mask_adds_augmentor_target():
    cfg = load_cfg(None, opts=["DATASET.VALID_MASK_NAME", "m.h5", "DATASET.LABEL_NAME", "l.h5"])
    assert cfg.AUGMENTOR.ADDITIONAL_TARGETS_NAME == ["label", "valid_mask"]
    assert cfg.AUGMENTOR.ADDITIONAL_TARGETS_TYPE == ["mask", "mask"]


def test_config_file_found_under_configs(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", "SOLVER:\n  BASE_LR: 0.3\n", "x.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_cfg("x.yaml").SOLVER.BASE_LR == 0.3


def test_never_evals_strings(tmp_path):
    marker = tmp_path / "pwned"
    cfg = load_cfg(None, opts=["INFERENCE.OUTPUT_NAME", f"__import__('os').mkdir('{marker}')"])
    assert not marker.exists()
    assert cfg.INFERENCE.OUTPUT_NAME.startswith("__import__")


# ----------------------------------------------------------------------------- errors
def test_typo_key_suggests_spelling(tmp_path):
    f = write(tmp_path, "MODEL:\n  INPUT_SIZ: [8, 64, 64]\n")
    with pytest.raises(ConfigKeyError) as err:
        load_cfg(f)
    msg = str(err.value)
    assert "MODEL.INPUT_SIZ" in msg and "Did you mean MODEL.INPUT_SIZE?" in msg and str(f) in msg


def test_key_in_wrong_node_suggests_right_node(tmp_path):
    # Scutoid-Base.yaml in PyTC sets DATASET.LABEL_EROSION, which is MODEL.LABEL_EROSION
    f = write(tmp_path, "DATASET:\n  LABEL_EROSION: 1\n")
    with pytest.raises(ConfigKeyError, match="Did you mean MODEL.LABEL_EROSION"):
        load_cfg(f)


def test_unknown_top_level_node(tmp_path):
    with pytest.raises(ConfigKeyError, match="unknown config key DATSET.*Did you mean DATASET"):
        load_cfg(write(tmp_path, "DATSET:\n  PAD_SIZE: [1, 1, 1]\n"))


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigKeyError, match="SOLVER.BASE_LRR.*command line.*SOLVER.BASE_LR"):
        load_cfg(None, opts=["SOLVER.BASE_LRR", "0.1"])


def test_odd_number_of_opts():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_cfg(None, opts=["SOLVER.BASE_LR"])


def test_wrong_type_names_key_file_and_expected(tmp_path):
    # PyTC's Distance-Transform-Quantized.yaml sets OUTPUT_ACT to a string
    f = write(tmp_path, "MODEL:\n  OUTPUT_ACT: 'none'\n")
    with pytest.raises(ConfigError, match=r"MODEL.OUTPUT_ACT \(set in .*cfg.yaml\): expected a list"):
        load_cfg(f)


@pytest.mark.parametrize(
    "text, match",
    [
        ("MODEL:\n  INPUT_SIZE: [8, 64]\n", r"MODEL.INPUT_SIZE .*3 positive integers"),
        ("MODEL:\n  INPUT_SIZE: [8, -64, 64]\n", r"MODEL.INPUT_SIZE .*3 positive integers"),
        ("INFERENCE:\n  STRIDE: [0, 64, 64]\n", r"INFERENCE.STRIDE"),
        ("DATASET:\n  PAD_SIZE: [1, 2]\n", r"DATASET.PAD_SIZE .*non-negative"),
        ("AUGMENTOR:\n  ELASTIC:\n    P: 1.5\n", r"AUGMENTOR.ELASTIC.P .*probability in \[0, 1\]"),
        ("DATASET:\n  REJECT_SAMPLING:\n    P: -0.1\n", r"DATASET.REJECT_SAMPLING.P"),
        ("DATASET:\n  VALID_RATIO: 2.0\n", r"DATASET.VALID_RATIO"),
        ("MODEL:\n  TARGET_OPT: ['0', 'x-1']\n", r"MODEL.TARGET_OPT"),
        ("MODEL:\n  TARGET_OPT: ['0', '4-1-1']\n  OUT_PLANES: 2\n", r"MODEL.WEIGHT_OPT .*1 entries .*2"),
        ("MODEL:\n  LOSS_WEIGHT: [[1.0, 2.0]]\n", r"MODEL.LOSS_WEIGHT\[0\].*one entry per loss"),
        ("MODEL:\n  OUT_PLANES: 3\n", r"MODEL.OUT_PLANES .*needs 1 output channels"),
        ("INFERENCE:\n  BLENDING: cosine\n", r"INFERENCE.BLENDING .*'gaussian', 'bump'"),
        ("INFERENCE:\n  AUG_NUM: 3\n", r"INFERENCE.AUG_NUM"),
        ("DATASET:\n  PAD_MODE: mirror\n", r"DATASET.PAD_MODE"),
        ("DATASET:\n  DO_2D: True\n", r"MODEL.INPUT_SIZE .*\[1, y, x\]"),
        ("AUGMENTOR:\n  FLIP:\n    DO_ZTRANS: 1\n", r"AUGMENTOR.FLIP.DO_ZTRANS"),
        ("AUGMENTOR:\n  ADDITIONAL_TARGETS_TYPE: ['mask', 'img']\n", r"ADDITIONAL_TARGETS"),
        ("SOLVER:\n  SAMPLES_PER_BATCH: 0\n", r"SOLVER.SAMPLES_PER_BATCH .*>= 1"),
        ("DATASET:\n  CHUNK_IND_SPLIT: '3-2'\n", r"DATASET.CHUNK_IND_SPLIT"),
        ("MODEL:\n  LABEL_EROSION: -1\n", r"MODEL.LABEL_EROSION"),
        ("MODEL: 5\n", r"MODEL .*group of keys"),
        ("SOLVER:\n  BASE_LR: {a: 1}\n", r"SOLVER.BASE_LR .*single value"),
    ],
)
def test_invalid_values_fail_with_key_and_file(tmp_path, text, match):
    f = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        load_cfg(f)
    assert "cfg.yaml" in str(err.value) or "MODEL.TARGET_OPT" in str(err.value)


def test_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="is empty"):
        load_cfg(write(tmp_path, ""))


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_cfg(write(tmp_path, "MODEL:\n  INPUT_SIZE: [8, 64, 64\n"))


def test_yaml_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_cfg(write(tmp_path, "- a\n- b\n"))


def test_missing_base_file(tmp_path):
    f = write(tmp_path, "SOLVER:\n  BASE_LR: 0.1\n")
    with pytest.raises(ConfigError, match="nope-base.yaml.*not found"):
        load_cfg(f, config_base=tmp_path / "nope-base.yaml")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_cfg("definitely-not-here.yaml")


# ----------------------------------------------------------------------------- fuzzing
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(-2, 2), st.just(float("nan")),
    st.text(max_size=8), st.lists(st.integers(-3, 300), max_size=4),
)
_leaf_keys = st.sampled_from([spec.key for spec in KEYS])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_leaf_keys, _scalar, max_size=4))
def test_fuzz_any_mapping_loads_or_raises_our_error(tmp_path_factory, overrides):
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path_factory.mktemp("fuzz") / "f.yaml"
    path.write_text(yaml.safe_dump(nested) if nested else "SYSTEM: {}\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_cfg(path)
    except ConnectomicsDataError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_any_text_file_loads_or_raises_our_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "t.yaml"
    path.write_text(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_cfg(path)
    except ConnectomicsDataError:
        pass


def test_config_reference_is_up_to_date():
    from connectomics_data.config.reference import render_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "config_reference.md"
    assert doc.read_text() == render_reference(), "run: python scripts/gen_config_reference.py"
    assert all(f"`{spec.key}`" in doc.read_text() for spec in KEYS)
