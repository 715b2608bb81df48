"""Issue 14's PyTC v1 cases: configs written from PyTC's documented keys (tests/data/
pytc_configs/issue14) load with their PyTC meaning and train 2 iterations on a small generated
volume, for every new target code ('7', '7-0', '8', 'a' plain and quantised, '9-5' with two
INFERENCE.OUTPUT_ACT entries) and every architecture name PyTC's configs use (MONAI ones are
skipped without the [monai] extra; fpn_3d and deeplabv3c go through MODEL.BUILDER)."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import cc3d
import h5py
import numpy as np
import pytest
from _trainer_common import read_log
from scipy.ndimage import gaussian_filter

from connectomics_data.config import load_cfg
from connectomics_data.config.validate import ExtraOutputActWarning
from connectomics_data.engine import read_checkpoint
from connectomics_data.engine.cli import main
from connectomics_data.errors import ConfigError
from connectomics_data.targets import parse_targets

PYTC = Path(__file__).parent / "data" / "pytc_configs"
CASES_DIR = PYTC / "issue14"
HAS_MONAI = importlib.util.find_spec("monai") is not None
needs_monai = pytest.mark.skipif(not HAS_MONAI, reason="MONAI (the [monai] extra) is not installed")



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``im.h5`` (32, 48, 48) uint8; ``inst.h5`` instance ids (blobs, 6-connected components);
    ``cls.h5`` classes 0..4 (the instance id modulo 5, background 0)."""
    folder = tmp_path_factory.mktemp("pytc_cases_data")
    rng = np.random.default_rng(0)
    shape = (32, 48, 48)
    field = gaussian_filter(rng.random(shape), (1, 3, 3))
    fg = field > np.quantile(field, 0.6)
    inst = cc3d.connected_components(fg, connectivity=6).astype(np.uint32)
    cls = np.where(inst > 0, inst % 4 + 1, 0).astype(np.uint8)
    image = np.clip(150 - 60 * fg + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)
    for name, arr in (("im", image), ("inst", inst), ("cls", cls), ("im_small", image[:3, :32, :32])):
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f["main"] = arr
    return folder


def small_run(data: Path, out: Path, label: str = "inst.h5", two_d: bool = False,
              name_lists: bool = False) -> list[str]:
    """Overrides that keep a case's targets, losses and architecture but shrink the run
    (``name_lists``: the config gives IMAGE_NAME / LABEL_NAME as YAML lists)."""
    image = "['im.h5']" if name_lists else "im.h5"
    label = f"['{label}']" if name_lists else label
    opts = [
        "DATASET.INPUT_PATH", f"{data}/", "DATASET.IMAGE_NAME", image,
        "DATASET.LABEL_NAME", label, "DATASET.OUTPUT_PATH", f"{out}/",
        "DATASET.LOAD_2D", "False", "DATASET.DO_CHUNK_TITLE", "0",
        "DATASET.REJECT_SAMPLING.SIZE_THRES", "-1", "DATASET.VAL_IMAGE_NAME", "None",
        "SYSTEM.NUM_CPUS", "0", "MODEL.NORM_MODE", "bn", "MODEL.FILTERS", "[4, 8]",
        "SOLVER.ITERATION_TOTAL", "2", "SOLVER.ITERATION_SAVE", "2", "SOLVER.SAMPLES_PER_BATCH", "2",
        "MONITOR.ITERATION_NUM", "[1, 0]",
    ]
    if two_d:
        return opts + ["MODEL.INPUT_SIZE", "[1, 16, 16]", "MODEL.OUTPUT_SIZE", "[1, 16, 16]",
                       "DATASET.PAD_SIZE", "[0, 4, 4]"]
    return opts + ["MODEL.INPUT_SIZE", "[5, 16, 16]", "MODEL.OUTPUT_SIZE", "[5, 16, 16]",
                   "MODEL.ISOTROPY", "[False, False]", "DATASET.PAD_SIZE", "[2, 4, 4]"]


def train(config: str, base: str | None, opts: list[str], out: Path) -> dict:
    """Run scripts/train.py's main; return the last training record of log.jsonl."""
    args = ["--config-file", str(CASES_DIR / config)]
    if base is not None:
        args += ["--config-base", str(base)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unused-PyTC-key and sync_bn-on-CPU notes
        assert main(args + opts) == 0
    assert (out / "checkpoint_000002.pth.tar").is_file()
    record = [r for r in read_log(out / "log.jsonl") if "loss" in r][-1]
    assert record["iteration"] == 2 and math.isfinite(record["loss"])
    return record


# --------------------------------------------------------------------------- target codes
TARGET_CASES = [
    # id, config, base, label file, 2D, expected (code, channels) per target, a loss term
    ("cellpose-0-7", "Cellpose-Base.yaml", None, "inst.h5", True,
     [("0", 1), ("7", 2)], "t1.WeightedMSE"),
    ("cellpose-7-0", "Cellpose-Flows-Mask.yaml", "Cellpose-Base.yaml", "inst.h5", True,
     [("7-0", 3)], "t0.WeightedMSE"),
    ("barcode-a", "barcode-R-BCS.yaml", "barcode-R-Base.yaml", "inst.h5", False,
     [("0", 1), ("4-0-1", 1), ("a-0-40-16-16", 1)], "t2.WeightedMSE"),
    ("barcode-a-quantised", "barcode-R-BCS-Quantized.yaml", "barcode-R-Base.yaml", "inst.h5",
     False, [("0", 1), ("a-1-40-16-16", 11)], "t1.WeightedCE"),
    ("skeleton-8", "Skeleton-Dilated-EDT.yaml", "barcode-R-Base.yaml", "inst.h5", False,
     [("8-1-2d-0-0-5.0", 1)], "t0.WeightedMSE"),
    ("singlecell-9-5", "SingleCell-UNet3D-Semantic.yaml", "SingleCell-UNet3D-Base.yaml", "cls.h5",
     False, [("9-5", 5)], "t0.WeightedCE"),
]


@pytest.mark.parametrize("case", TARGET_CASES, ids=[c[0] for c in TARGET_CASES])
def test_target_cases_load_and_train(case, data: Path, tmp_path: Path):
    _, config, base, label, two_d, expected, term = case
    base_path = CASES_DIR / base if base else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_cfg(CASES_DIR / config, config_base=base_path)
    specs = parse_targets(cfg.MODEL.TARGET_OPT, do_2d=cfg.DATASET.DO_2D)
    assert [(s.code, s.channels) for s in specs] == expected
    assert cfg.MODEL.OUT_PLANES == sum(c for _, c in expected)
    out = tmp_path / "out"
    record = train(config, base_path, small_run(data, out, label, two_d), out)
    assert math.isfinite(record[term])


def test_singlecell_two_output_acts_warn_once_naming_the_used_entry():
    with pytest.warns(ExtraOutputActWarning) as caught:
        cfg = load_cfg(CASES_DIR / "SingleCell-UNet3D-Semantic.yaml",
                       config_base=CASES_DIR / "SingleCell-UNet3D-Base.yaml")
    extra = [w for w in caught if issubclass(w.category, ExtraOutputActWarning)]
    assert len(extra) == 1
    msg = str(extra[0].message)
    assert "2 entries for 1 target(s) ['9-5']" in msg
    assert "first 1 are used (['sigmoid']) and ['softmax'] ignored" in msg
    assert list(cfg.INFERENCE.OUTPUT_ACT) == ["sigmoid", "softmax"]  # kept as written


def test_fewer_output_acts_than_targets_is_still_an_error():
    with pytest.raises(ConfigError, match="INFERENCE.OUTPUT_ACT"):
        load_cfg(CASES_DIR / "barcode-R-BCS.yaml", config_base=CASES_DIR / "barcode-R-Base.yaml",
                 opts=["INFERENCE.OUTPUT_ACT", "['sigmoid']"])


# --------------------------------------------------------------------------- architectures
ARCH_CASES = [
    # id, config, base, extra overrides, 2D
    pytest.param("unet_3d", "SingleCell-UNet3D-Base.yaml", None, [], False, id="unet_3d"),
    pytest.param("unet_2d", "Cellpose-Base.yaml", None, [], True, id="unet_2d"),
    pytest.param("unet_plus_3d", str(PYTC / "MitoEM-R-BC.yaml"), PYTC / "MitoEM-R-Base.yaml", [],
                 False, id="unet_plus_3d"),
    pytest.param("unet_residual_3d", "SNEMI-Affinity-UNet-Residual.yaml",
                 PYTC / "SNEMI-Base.yaml", [], False, id="unet_residual_3d"),
    pytest.param("fpn_3d", "CREMI-Foreground-FPN.yaml", PYTC / "CREMI-Base.yaml",
                 ["MODEL.BUILDER", "_user_models:tiny_net"], False, id="fpn_3d-hook"),
    pytest.param("deeplabv3c", "Plaque-Deeplab-Binary-2D.yaml", None,
                 ["MODEL.BUILDER", "_user_models:tiny_net"], True, id="deeplabv3c-hook"),
    pytest.param("unetr", "SNEMI-Affinity-UNETR.yaml", PYTC / "SNEMI-Base.yaml",
                 ["MODEL.HIDDEN_SIZE", "32", "MODEL.MLP_DIM", "64", "MODEL.UNETR_NUM_HEADS", "4",
                  "MODEL.UNETR_FEATURE_SIZE", "4", "MODEL.INPUT_SIZE", "[16, 16, 16]",
                  "MODEL.OUTPUT_SIZE", "[16, 16, 16]", "DATASET.PAD_SIZE", "[4, 4, 4]"],
                 False, id="unetr", marks=needs_monai),
    pytest.param("swinunetr", "SNEMI-Affinity-SwinUNETR.yaml", PYTC / "SNEMI-Base.yaml",
                 ["MODEL.SWIN_UNETR_FEATURE_SIZE", "12", "MODEL.DEPTHS", "[1, 1, 1, 1]",
                  "MODEL.SWIN_UNETR_NUM_HEADS", "[1, 1, 1, 1]", "MODEL.NORM_NAME", "batch",
                  "MODEL.INPUT_SIZE", "[32, 32, 32]", "MODEL.OUTPUT_SIZE", "[32, 32, 32]",
                  "DATASET.PAD_SIZE", "[4, 4, 4]", "AUGMENTOR.ENABLED", "False"],
                 False, id="swinunetr", marks=[needs_monai, pytest.mark.slow]),
]


@pytest.mark.parametrize("name,config,base,extra,two_d", ARCH_CASES)
def test_architecture_cases_train(name, config, base, extra, two_d, data: Path, tmp_path: Path):
    out = tmp_path / "out"
    opts = small_run(data, out, two_d=two_d, name_lists=config.endswith("MitoEM-R-BC.yaml"))
    train(config, base, opts + extra, out)
    assert read_checkpoint(out / "checkpoint_000002.pth.tar")["architecture"] == name


@pytest.mark.parametrize("config,base", [("CREMI-Foreground-FPN.yaml", PYTC / "CREMI-Base.yaml"),
                                         ("Plaque-Deeplab-Binary-2D.yaml", None)])
def test_pytc_networks_not_shipped_fail_at_load_naming_the_hook(config, base):
    with pytest.raises(ConfigError) as info:
        load_cfg(CASES_DIR / config, config_base=base)
    msg = str(info.value)
    assert "MODEL.ARCHITECTURE" in msg and "MODEL.BUILDER" in msg and "unet_plus_3d" in msg
    assert config in msg  # where it was set


def test_cellpose_flows_predict_signed_values_with_float32_output(data: Path, tmp_path: Path):
    """'7-0' trained then predicted slice by slice: 3 channels, flows keep their sign with
    INFERENCE.OUTPUT_DTYPE float32 (uint8, PyTC's format, would clip them: warned)."""
    from connectomics_data.config.validate import ClippedOutputWarning

    base = CASES_DIR / "Cellpose-Base.yaml"
    with pytest.warns(ClippedOutputWarning, match=r"\['7-0'\].*OUTPUT_DTYPE 'float32'"):
        load_cfg(CASES_DIR / "Cellpose-Flows-Mask.yaml", config_base=base, inference=True)
    out = tmp_path / "out"
    train("Cellpose-Flows-Mask.yaml", base, small_run(data, out, two_d=True), out)
    predict = ["--inference", "--checkpoint", str(out / "checkpoint_000002.pth.tar"),
               "INFERENCE.IMAGE_NAME", "im_small.h5", "INFERENCE.INPUT_PATH", f"{data}/",
               "INFERENCE.OUTPUT_PATH", f"{out}/test", "INFERENCE.OUTPUT_DTYPE", "float32",
               "INFERENCE.INPUT_SIZE", "[1, 16, 16]", "INFERENCE.OUTPUT_SIZE", "[1, 16, 16]",
               "INFERENCE.STRIDE", "[1, 16, 16]", "INFERENCE.PAD_SIZE", "[0, 0, 0]",
               "INFERENCE.AUG_NUM", "0"]
    args = ["--config-file", str(CASES_DIR / "Cellpose-Flows-Mask.yaml"), "--config-base", str(base)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClippedOutputWarning)  # float32: nothing clipped
        warnings.filterwarnings("ignore", category=UserWarning, module="connectomics_data.config")
        assert main(args + small_run(data, out, two_d=True) + predict) == 0
    with h5py.File(out / "test" / "result.h5", "r") as f:
        pred = f["vol0"][:]
    assert pred.shape == (3, 3, 32, 32) and pred.dtype == np.float32
    assert pred[:2].min() < 0  # signed flows survive
