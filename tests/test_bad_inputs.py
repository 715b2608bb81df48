"""Bad-input battery: every typo or broken file fails fast, through the command line users run,
with one ``error: ...`` line that names the culprit (file, key, value) and what was expected.

Each case below writes a small project (a YAML config, HDF5 volumes, tiles, checkpoints) with
one thing wrong, runs ``scripts/train.py``'s ``main(argv)`` in-process, and checks:

* the exit status is 2 and stderr holds exactly one ``error:`` line and no traceback;
* the exception behind it (recorded on its way to the printer) has the expected project type,
  a subclass of :class:`ConnectomicsDataError`;
* the line contains every expected fragment (the file, the key, the value, what was expected).

Data errors raised inside DataLoader workers are covered in ``test_faults.py``.
"""

from __future__ import annotations

import gc
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from connectomics_data.engine import cli
from connectomics_data.errors import (
    CheckpointError,
    ConfigError,
    ConfigKeyError,
    ConnectomicsDataError,
    OutputError,
    SamplingError,
    TileJSONError,
    VolumeError,
    VolumeNotFoundError,
)

SHAPE = (8, 40, 40)

BASE_CFG: dict[str, Any] = {
    "SYSTEM": {"NUM_CPUS": 0, "SEED": 0},
    "MODEL": {
        "ARCHITECTURE": "unet_3d",
        "FILTERS": [4, 8],
        "ISOTROPY": [False, False],
        "INPUT_SIZE": [3, 17, 17],
        "OUTPUT_SIZE": [3, 17, 17],
        "TARGET_OPT": ["0"],
        "OUT_PLANES": 1,
        "LOSS_OPTION": [["WeightedBCEWithLogitsLoss"]],
        "LOSS_WEIGHT": [[1.0]],
        "WEIGHT_OPT": [["0"]],
        "OUTPUT_ACT": [["none"]],
    },
    "DATASET": {
        "IMAGE_NAME": "img.h5",
        "LABEL_NAME": "lab.h5",
        "PAD_SIZE": [0, 0, 0],
        "PRELOAD": False,
    },
    "AUGMENTOR": {"ENABLED": False},
    "SOLVER": {"ITERATION_TOTAL": 1, "ITERATION_SAVE": 1, "SAMPLES_PER_BATCH": 1},
    "INFERENCE": {
        "OUTPUT_ACT": ["sigmoid"],
        "IMAGE_NAME": "img.h5",
        "STRIDE": [2, 8, 8],
        "SAMPLES_PER_BATCH": 2,
        "OUTPUT_NAME": "result.h5",
    },
}


# --------------------------------------------------------------------------- data on disk
def _h5(path: Path, data: Any, name: str = "main", **kw: Any) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data, **kw)
    return path


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _tiles(root: Path, volume: np.ndarray, tile: int = 16, name: str = "tiles.json") -> Path:
    """``volume`` (z, y, x) uint8 as PNG tiles ``s{z}/{row}_{column}.png`` plus its tile JSON."""
    z, h, w = volume.shape
    for k in range(z):
        for r in range(-(-h // tile)):
            for c in range(-(-w // tile)):
                _png(root / f"s{k}" / f"{r}_{c}.png", volume[k, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile])
    spec = {"image": [f"s{k}/{{row}}_{{column}}.png" for k in range(z)], "height": h, "width": w,
            "depth": z, "tile_size": tile, "dtype": "uint8"}
    path = root / name
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Every (good and bad) input file the cases refer to, written once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    label = np.zeros(SHAPE, np.uint16)
    label[1:7, 5:30, 5:30] = 3
    label[2:8, 22:38, 20:38] = 9
    _h5(root / "img.h5", image)
    _h5(root / "lab.h5", label)
    _h5(root / "lab_small.h5", label[:, :, :39])
    _h5(root / "lab4.h5", np.stack([label, label]))
    _h5(root / "labf.h5", rng.random(SHAPE).astype(np.float32))
    _h5(root / "labneg.h5", (label.astype(np.int16) - 1))
    _h5(root / "lab0.h5", np.zeros(SHAPE, np.uint8))
    _h5(root / "mask0.h5", np.zeros(SHAPE, np.uint8))
    _h5(root / "flat.h5", image[0])
    _h5(root / "tiny.h5", image[:2, :10, :10])
    (root / "twin").mkdir()
    _h5(root / "twin" / "img.h5", image)
    _h5(root / "text.h5", np.array([[[b"a", b"b"]]], dtype="S1"))
    with h5py.File(root / "two.h5", "w") as f:
        f["raw"], f["seg"] = image, label
    (root / "trunc.h5").write_bytes((root / "img.h5").read_bytes()[:3000])
    (root / "img.nii").write_bytes(b"\x00" * 352)
    (root / "plain_dir").mkdir()
    (root / "bad.tif").write_bytes(b"II*\x00" + b"\x13" * 300)
    for k in range(4):
        _png(root / "pngs" / f"{k:04d}.png", image[k])
        _png(root / "mixed" / f"{k:04d}.png", image[k] if k != 1 else image[k, :, :30])
        _png(root / "garbage" / f"{k:04d}.png", image[k])
    (root / "garbage" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 30)
    (root / "empty_dir").mkdir()
    (root / "dataset.json").write_text('{"training": [{"image": "img.h5",}]}')

    # tiles: a good mosaic, then one broken thing per copy
    good = _tiles(root / "tiles", image[:3])
    spec = json.loads(good.read_text())
    for name, change in {
        "missing_field.json": lambda s: s.pop("height"),
        "depth.json": lambda s: s.update(depth=4),
        "pattern.json": lambda s: s["image"].__setitem__(0, "s0/{z}_{column}.png"),
        "dtype.json": lambda s: s.update(dtype="float32"),
        "tile_size.json": lambda s: s.update(tile_size=0),
    }.items():
        s = json.loads(json.dumps(spec))
        change(s)
        (root / "tiles" / name).write_text(json.dumps(s))
    (root / "tiles" / "malformed.json").write_text('{"image": ["a.png"], "height": 40,\n "width": }')
    for broken, damage in {
        "tiles_missing": lambda d: (d / "s1" / "1_2.png").unlink(),
        "tiles_size": lambda d: _png(d / "s0" / "0_0.png", image[0, :15, :16]),
        "tiles_dtype": lambda d: _png(d / "s0" / "0_0.png", image[0, :16, :16].astype(np.uint16) * 300),
        "tiles_corrupt": lambda d: (d / "s0" / "0_0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 60),
    }.items():
        _tiles(root / broken, image[:3])
        damage(root / broken)

    # checkpoints
    _save_good_checkpoint(root)
    good_ck = (root / "good.pth").read_bytes()
    (root / "truncated.pth").write_bytes(good_ck[: len(good_ck) // 2])
    (root / "garbage.pth").write_bytes(b"not a checkpoint at all" * 10)
    torch.save({"architecture": "mlp", "model": torch.nn.Linear(3, 2).state_dict()}, root / "other_arch.pth")
    torch.save({"model": {"w": torch.zeros(1)}, "why": _Unsafe()}, root / "unsafe.pth")
    (root / "a_file").write_text("this is a file, not a directory")
    _h5(root / "foreign.h5", np.zeros(3))
    return root


class _Unsafe:
    """An arbitrary Python object: a checkpoint holding it must not be unpickled."""


def _save_good_checkpoint(root: Path) -> None:
    from connectomics_data.config import load_cfg
    from connectomics_data.engine.checkpoint import save_checkpoint
    from connectomics_data.models import build_model

    path = root / "base.yaml"
    path.write_text(yaml.safe_dump(BASE_CFG))
    cfg = load_cfg(path)
    model = build_model(cfg, "cpu", generator=torch.Generator().manual_seed(0))
    save_checkpoint(root / "good.pth", model, None, None, 1, cfg)


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One bad input: config changes, extra command-line arguments and the expected error.

    ``needles`` may contain ``{data}`` (the data directory) and ``{cfg}`` (the config file).
    """

    exc: type[ConnectomicsDataError]
    needles: list[str]
    cfg: dict[str, Any] = field(default_factory=dict)
    opts: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    inference: bool = False
    text: str | bytes | None = None  # raw config file content instead of YAML from ``cfg``
    setup: Callable[[Path, Path], None] | None = None  # (data dir, run dir) -> None


def _merge(base: dict, change: dict) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in change.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


_DELETE = object()

CONFIG_CASES: dict[str, Case] = {
    "unknown key in file": Case(ConfigKeyError, ["MODEL.ARCHITECTUR", "{cfg}", "Did you mean MODEL.ARCHITECTURE"],
                                cfg={"MODEL.ARCHITECTUR": "unet_3d"}),
    "unknown key on command line": Case(ConfigKeyError, ["SOLVER.BASE_LRR", "command line", "SOLVER.BASE_LR"],
                                        opts=["SOLVER.BASE_LRR", "0.1"]),
    "unknown top-level node": Case(ConfigKeyError, ["MODLE", "{cfg}", "MODEL"], cfg={"MODLE.FILTERS": [4]}),
    "wrong type": Case(ConfigError, ["SOLVER.BASE_LR", "{cfg}", "expected a float", "'fast'"],
                       cfg={"SOLVER.BASE_LR": "fast"}),
    "wrong type on command line": Case(ConfigError, ["SOLVER.ITERATION_TOTAL", "command line", "expected a int", "'many'"],
                                       opts=["SOLVER.ITERATION_TOTAL", "many"]),
    "wrong list length": Case(ConfigError, ["MODEL.INPUT_SIZE", "{cfg}", "3 positive integers", "[17, 17]"],
                              cfg={"MODEL.INPUT_SIZE": [17, 17]}),
    "negative size": Case(ConfigError, ["MODEL.INPUT_SIZE", "3 positive integers", "-17"],
                          cfg={"MODEL.INPUT_SIZE": [3, -17, 17]}),
    "negative count": Case(ConfigError, ["SYSTEM.NUM_CPUS", "an integer >= 0", "-1"], cfg={"SYSTEM.NUM_CPUS": -1}),
    "zero iterations": Case(ConfigError, ["SOLVER.ITERATION_TOTAL", "an integer >= 1", "0"],
                            cfg={"SOLVER.ITERATION_TOTAL": 0}),
    "P above 1": Case(ConfigError, ["AUGMENTOR.FLIP.P", "{cfg}", "probability in [0, 1]", "1.5"],
                      cfg={"AUGMENTOR.FLIP.P": 1.5}),
    "P below 0": Case(ConfigError, ["DATASET.REJECT_SAMPLING.P", "probability in [0, 1]", "-0.1"],
                      cfg={"DATASET.REJECT_SAMPLING.P": -0.1}),
    "unparsable TARGET_OPT": Case(ConfigError, ["MODEL.TARGET_OPT", "{cfg}", "banana"],
                                  cfg={"MODEL.TARGET_OPT": ["banana"]}),
    "malformed TARGET_OPT code": Case(ConfigError, ["MODEL.TARGET_OPT", "4-x-1"], cfg={"MODEL.TARGET_OPT": ["4-x-1"]}),
    "unparsable WEIGHT_OPT": Case(ConfigError, ["MODEL.WEIGHT_OPT", "{cfg}", "'z'"], cfg={"MODEL.WEIGHT_OPT": [["z"]]}),
    "OUT_PLANES does not fit TARGET_OPT": Case(ConfigError, ["MODEL.OUT_PLANES", "{cfg}", "is 3", "needs 1"],
                                               cfg={"MODEL.OUT_PLANES": 3}),
    "one loss list too many": Case(ConfigError, ["MODEL.LOSS_OPTION", "has 2 entries", "MODEL.TARGET_OPT"],
                                   cfg={"MODEL.LOSS_OPTION": [["WeightedBCEWithLogitsLoss"], ["DiceLoss"]]}),
    "unknown pad mode": Case(ConfigError, ["DATASET.PAD_MODE", "'mirror'", "'reflect'"],
                             cfg={"DATASET.PAD_MODE": "mirror"}),
    "2D model with a thick window": Case(ConfigError, ["MODEL.INPUT_SIZE", "DATASET.DO_2D", "[1, y, x]"],
                                         cfg={"DATASET.DO_2D": True}),
    "group given a value": Case(ConfigError, ["SOLVER", "{cfg}", "group of keys", "expected a mapping"],
                                cfg={"SOLVER": 3}),
    "odd number of overrides": Case(ConfigError, ["KEY VALUE pairs", "SOLVER.BASE_LR"], opts=["SOLVER.BASE_LR"]),
    "empty file": Case(ConfigError, ["{cfg}", "is empty"], text=""),
    "YAML syntax error": Case(ConfigError, ["{cfg}", "not valid YAML at line 3", "expected ',' or ']'"],
                              text="MODEL:\n  FILTERS: [4, 8\n"),
    "YAML list instead of mapping": Case(ConfigError, ["{cfg}", "must hold a mapping", "list"], text="- a\n- b\n"),
    "binary config file": Case(ConfigError, ["{cfg}", "not a text (UTF-8) file"], text=b"\xff\xfe\x00\x81"),
    "config file missing": Case(ConfigError, ["no_such_config.yaml", "not found"],
                                args=["--config-file", "no_such_config.yaml"]),
    "base file missing": Case(ConfigError, ["no_such_base.yaml", "not found"],
                              args=["--config-base", "no_such_base.yaml"]),
    "base file broken": Case(ConfigError, ["broken_base.yaml", "not valid YAML"],
                             args=["--config-base", "{run}/broken_base.yaml"],
                             setup=lambda d, r: (r / "broken_base.yaml").write_text("SYSTEM: {NUM_CPUS: 2\n")),
}

DATA_CASES: dict[str, Case] = {
    "missing image file": Case(VolumeNotFoundError, ["DATASET.IMAGE_NAME", "{data}/nope.h5", "not found"],
                               cfg={"DATASET.IMAGE_NAME": "nope.h5"}),
    "missing HDF5 dataset": Case(VolumeNotFoundError, ["img.h5", "'raw'", "available datasets", "['main']"],
                                 cfg={"DATASET.IMAGE_NAME": "img.h5/raw"}),
    "ambiguous HDF5 datasets": Case(VolumeError, ["two.h5", "2 datasets", "['raw', 'seg']"],
                                    cfg={"DATASET.IMAGE_NAME": "two.h5"}),
    "truncated HDF5": Case(VolumeError, ["DATASET.IMAGE_NAME", "{data}/trunc.h5", "truncated"],
                           cfg={"DATASET.IMAGE_NAME": "trunc.h5"}),
    "corrupt PNG slice": Case(VolumeError, ["{data}/garbage/0002.png", "cannot open as an image"],
                              cfg={"DATASET.IMAGE_NAME": "garbage/*.png", "DATASET.LABEL_NAME": None}),
    "corrupt TIFF": Case(VolumeError, ["{data}/bad.tif"], cfg={"DATASET.IMAGE_NAME": "bad.tif"}),
    "empty glob": Case(VolumeNotFoundError, ["empty_dir/*.png", "no files match"],
                       cfg={"DATASET.IMAGE_NAME": "empty_dir/*.png", "DATASET.LABEL_NAME": None}),
    "slices of different shapes": Case(VolumeError, ["{data}/mixed/0001.png", "[40, 30]", "[40, 40]", "must match"],
                                       cfg={"DATASET.IMAGE_NAME": "mixed/*.png", "DATASET.LABEL_NAME": None}),
    "image and label shapes differ": Case(VolumeError, ["{data}/lab_small.h5", "[8, 40, 39]", "[8, 40, 40]"],
                                          cfg={"DATASET.LABEL_NAME": "lab_small.h5"}),
    "label with channels": Case(VolumeError, ["{data}/lab4.h5", "3D (z, y, x)", "[2, 8, 40, 40]"],
                                cfg={"DATASET.LABEL_NAME": "lab4.h5"}),
    "2D file for a 3D config": Case(VolumeError, ["{data}/flat.h5", "2D image", "[40, 40]", "DATASET.LOAD_2D"],
                                    cfg={"DATASET.IMAGE_NAME": "flat.h5"}),
    "sample larger than the volume": Case(VolumeError, ["{data}/tiny.h5", "[3, 17, 17]", "[2, 10, 10]", "MODEL.INPUT_SIZE"],
                                          cfg={"DATASET.IMAGE_NAME": "tiny.h5", "DATASET.LABEL_NAME": None}),
    "float label with non-integer ids": Case(VolumeError, ["{data}/labf.h5", "non-integral", "Box("],
                                             cfg={"DATASET.LABEL_NAME": "labf.h5"}),
    "negative label ids": Case(VolumeError, ["{data}/labneg.h5", "negative", "Box("],
                               cfg={"DATASET.LABEL_NAME": "labneg.h5"}),
    "valid mask all zero": Case(SamplingError, ["{data}/mask0.h5", "zero everywhere", "DATASET.VALID_RATIO"],
                                cfg={"DATASET.VALID_MASK_NAME": "mask0.h5"}),
    "valid mask all zero, no screen": Case(SamplingError, ["{data}/img.h5", "Box(", "valid fraction 0.000", "NUM_TRIAL"],
                                           cfg={"DATASET.VALID_MASK_NAME": "mask0.h5",
                                                "DATASET.REJECT_SAMPLING.SCREEN": False,
                                                "DATASET.REJECT_SAMPLING.NUM_TRIAL": 5}),
    "no foreground anywhere with rejection": Case(
        SamplingError, ["{data}/lab0.h5", "no foreground anywhere", "SIZE_THRES=10", "P=1.0"],
        cfg={"DATASET.LABEL_NAME": "lab0.h5", "DATASET.REJECT_SAMPLING.SIZE_THRES": 10,
             "DATASET.REJECT_SAMPLING.P": 1.0}),
    "label count differs from image count": Case(ConfigError, ["DATASET.LABEL_NAME", "2 volumes", "DATASET.IMAGE_NAME"],
                                                 cfg={"DATASET.LABEL_NAME": "lab.h5@lab.h5"}),
    "unsupported extension": Case(VolumeError, ["{data}/img.nii", "unsupported volume format", "'.nii'", ".h5"],
                                  cfg={"DATASET.IMAGE_NAME": "img.nii"}),
    "plain directory": Case(VolumeError, ["{data}/plain_dir", "not a zarr store", "glob"],
                            cfg={"DATASET.IMAGE_NAME": "plain_dir"}),
    "non-numeric dataset": Case(VolumeError, ["{data}/text.h5", "not a numeric type"],
                                cfg={"DATASET.IMAGE_NAME": "text.h5", "DATASET.LABEL_NAME": None}),
    "malformed DATASET_JSON": Case(ConfigError, ["DATASET.DATASET_JSON", "dataset.json", "not valid JSON"],
                                   cfg={"DATASET.DATASET_JSON": "{data}/dataset.json"}),
}

TILE_CASES: dict[str, Case] = {
    "malformed tile JSON": Case(TileJSONError, ["{data}/tiles/malformed.json", "malformed JSON", "line 2"],
                                cfg={"DATASET.IMAGE_NAME": "tiles/malformed.json"}),
    "tile JSON missing a field": Case(TileJSONError, ["missing_field.json", "missing required field", "'height'"],
                                      cfg={"DATASET.IMAGE_NAME": "tiles/missing_field.json"}),
    "depth differs from len(image)": Case(TileJSONError, ["depth.json", "'image' has 3 entries", "'depth' is 4"],
                                          cfg={"DATASET.IMAGE_NAME": "tiles/depth.json"}),
    "bad tile pattern": Case(TileJSONError, ["pattern.json", "image[0]", "{z}", "{row}"],
                             cfg={"DATASET.IMAGE_NAME": "tiles/pattern.json"}),
    "bad tile dtype name": Case(TileJSONError, ["dtype.json", "'float32'", "uint8"],
                                cfg={"DATASET.IMAGE_NAME": "tiles/dtype.json"}),
    "zero tile size": Case(TileJSONError, ["tile_size.json", "'tile_size' must be a positive integer", "0"],
                           cfg={"DATASET.IMAGE_NAME": "tiles/tile_size.json"}),
    "missing tile": Case(TileJSONError, ["tiles.json", "1 of 27 tile files are missing", "{data}/tiles_missing/s1/1_2.png",
                                          "set DATASET.TILE_FILL_VALUE"],
                         cfg={"DATASET.IMAGE_NAME": "tiles_missing/tiles.json", "DATASET.LABEL_NAME": None}),
    "tile of wrong size": Case(TileJSONError, ["{data}/tiles_size/s0/0_0.png", "(15, 16)", "expected (16, 16)"],
                               cfg={"DATASET.IMAGE_NAME": "tiles_size/tiles.json", "DATASET.LABEL_NAME": None,
                                    "DATASET.PRELOAD": True}),
    "tile of wrong dtype": Case(TileJSONError, ["{data}/tiles_dtype/s0/0_0.png", "uint16", "uint8"],
                                cfg={"DATASET.IMAGE_NAME": "tiles_dtype/tiles.json", "DATASET.LABEL_NAME": None,
                                     "DATASET.PRELOAD": True}),
    "corrupt tile": Case(VolumeError, ["{data}/tiles_corrupt/s0/0_0.png", "cannot decode tile file"],
                         cfg={"DATASET.IMAGE_NAME": "tiles_corrupt/tiles.json", "DATASET.LABEL_NAME": None,
                              "DATASET.PRELOAD": True}),
}

CHECKPOINT_CASES: dict[str, Case] = {
    "checkpoint missing": Case(CheckpointError, ["{data}/nope.pth", "not found"], inference=True,
                               args=["--checkpoint", "{data}/nope.pth"]),
    "checkpoint truncated": Case(CheckpointError, ["{data}/truncated.pth", "truncated or corrupt"], inference=True,
                                 args=["--checkpoint", "{data}/truncated.pth"]),
    "checkpoint is garbage": Case(CheckpointError, ["{data}/garbage.pth", "truncated or corrupt"], inference=True,
                                  args=["--checkpoint", "{data}/garbage.pth"]),
    "checkpoint of another architecture": Case(CheckpointError, ["{data}/other_arch.pth", "'mlp'", "'unet_3d'"],
                                               inference=True, args=["--checkpoint", "{data}/other_arch.pth"]),
    "checkpoint holding Python objects": Case(CheckpointError, ["{data}/unsafe.pth", "_Unsafe", "for safety"],
                                              inference=True, args=["--checkpoint", "{data}/unsafe.pth"]),
    "resume from checkpoint of other filters": Case(CheckpointError, ["{data}/good.pth", "shape mismatch"],
                                                    cfg={"MODEL.FILTERS": [4, 16]},
                                                    args=["--checkpoint", "{data}/good.pth"]),
    "inference without checkpoint": Case(ConnectomicsDataError, ["--inference needs --checkpoint"], inference=True),
}


def _write_foreign(run: Path, name: str = "result.h5") -> None:
    (run / "pred").mkdir()
    _h5(run / "pred" / name, np.zeros(3))


INFERENCE_CASES: dict[str, Case] = {
    "output path not writable": Case(OutputError, ["{data}/a_file/pred/result.h5", "{data}/a_file is a file"],
                                     inference=True,
                                     cfg={"INFERENCE.OUTPUT_PATH": "{data}/a_file/pred"},
                                     args=["--checkpoint", "{data}/good.pth"]),
    "output exists and is not ours": Case(OutputError, ["{run}/pred/result.h5", "not a prediction", "refusing"],
                                          inference=True, setup=lambda d, r: _write_foreign(r),
                                          args=["--checkpoint", "{data}/good.pth"]),
    "DO_SINGLY output exists and is not ours": Case(OutputError, ["{run}/pred/img_result.h5", "refusing"],
                                                    inference=True, cfg={"INFERENCE.DO_SINGLY": True},
                                                    setup=lambda d, r: _write_foreign(r, "img_result.h5"),
                                                    args=["--checkpoint", "{data}/good.pth"]),
    "DO_SINGLY outputs collide": Case(ConfigError, ["INFERENCE.OUTPUT_NAME", "'{stem}.h5'", "{data}/twin/img.h5",
                                                    "{index}"], inference=True,
                                      cfg={"INFERENCE.DO_SINGLY": True, "INFERENCE.OUTPUT_NAME": "{stem}.h5",
                                           "INFERENCE.IMAGE_NAME": "img.h5@twin/img.h5"},
                                      args=["--checkpoint", "{data}/good.pth"]),
    "unsafe output name template": Case(ConfigError, ["INFERENCE.OUTPUT_NAME", "{stem.upper}", "{stem}"],
                                        inference=True,
                                        cfg={"INFERENCE.DO_SINGLY": True, "INFERENCE.OUTPUT_NAME": "{stem.upper}.h5"},
                                        args=["--checkpoint", "{data}/good.pth"]),
    "inference input missing": Case(VolumeNotFoundError, ["{data}/nope.h5"], inference=True,
                                    cfg={"INFERENCE.IMAGE_NAME": "nope.h5"},
                                    args=["--checkpoint", "{data}/good.pth"]),
}

ALL_CASES = {**CONFIG_CASES, **DATA_CASES, **TILE_CASES, **CHECKPOINT_CASES, **INFERENCE_CASES}


# --------------------------------------------------------------------------- the runner
def run_cli(argv: list[str], capsys, monkeypatch) -> tuple[int, str, BaseException | None]:
    """``main(argv)`` in-process: exit status, stderr, and the exception that was printed."""
    seen: list[BaseException] = []
    original = cli.one_line_message

    def spy(err: BaseException) -> str:
        seen.append(err)
        return original(err)

    monkeypatch.setattr(cli, "one_line_message", spy)
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = cli.main(argv)
    finally:
        torch.set_num_threads(threads)
        gc.collect()  # a failed DataLoader iterator sits in a cycle: stop its workers now
    return rc, capsys.readouterr().err, (seen[-1] if seen else None)


def error_line(stderr: str) -> str:
    """The single ``error:`` line of ``stderr`` (progress bars may precede it); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    return errors[0]


def _fill(text: str, data: Path, run: Path, cfg: Path) -> str:
    return text.replace("{data}", str(data)).replace("{run}", str(run)).replace("{cfg}", str(cfg))


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_bad_input_fails_with_one_clear_line(name, data, tmp_path, capsys, monkeypatch):
    case = ALL_CASES[name]
    run = tmp_path
    monkeypatch.chdir(run)
    cfg_path = run / "cfg.yaml"
    if case.setup is not None:
        case.setup(data, run)
    if case.text is not None:
        cfg_path.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode())
    else:
        change = {k: (_fill(v, data, run, cfg_path) if isinstance(v, str) else v) for k, v in case.cfg.items()}
        merged = _merge(BASE_CFG, {"DATASET.INPUT_PATH": str(data), "DATASET.OUTPUT_PATH": str(run / "out"),
                                   "INFERENCE.OUTPUT_PATH": str(run / "pred"), **change})
        cfg_path.write_text(yaml.safe_dump(merged))
    args = [_fill(a, data, run, cfg_path) for a in case.args]
    argv = ([] if "--config-file" in args else ["--config-file", str(cfg_path)]) + args
    if case.inference:
        argv.append("--inference")
    argv += case.opts
    rc, stderr, err = run_cli(argv, capsys, monkeypatch)
    assert rc == 2, stderr
    line = error_line(stderr)
    assert isinstance(err, case.exc), (type(err), line)
    for needle in case.needles:
        assert _fill(needle, data, run, cfg_path) in line, (needle, line)


def test_battery_size():
    """The battery holds at least 40 distinct bad inputs, and every group is represented."""
    assert len(ALL_CASES) >= 40
    assert min(len(CONFIG_CASES), len(DATA_CASES), len(TILE_CASES), len(CHECKPOINT_CASES),
               len(INFERENCE_CASES)) >= 5


# --------------------------------------------------------------------------- library entry points
def test_library_entry_points_raise_the_project_types(data):
    """The same mistakes through the Python API (no CLI): open_volume, load_tile_json,
    load_cfg, load_checkpoint; every error is both ours and the matching builtin."""
    from connectomics_data.config import load_cfg
    from connectomics_data.engine.checkpoint import load_checkpoint
    from connectomics_data.io import load_tile_json, open_volume

    checks: list[tuple[Callable[[], Any], type, tuple[type, ...], str]] = [
        (lambda: open_volume(data / "nope.h5"), VolumeNotFoundError, (FileNotFoundError,), "nope.h5"),
        (lambda: open_volume(data / "img.h5", dataset="raw"), VolumeNotFoundError, (FileNotFoundError,), "'raw'"),
        (lambda: open_volume(data / "trunc.h5"), VolumeError, (ValueError,), "trunc.h5"),
        (lambda: open_volume(str(data / "mixed" / "*.png")), VolumeError, (ValueError,), "0001.png"),
        (lambda: open_volume(data / "flat.h5"), VolumeError, (ValueError,), "allow_2d=True"),
        (lambda: load_tile_json(data / "tiles" / "depth.json"), TileJSONError, (ValueError,), "'depth' is 4"),
        (lambda: load_tile_json(data / "tiles" / "none.json"), VolumeNotFoundError, (FileNotFoundError,), "none.json"),
        (lambda: load_cfg(None, opts=["MODEL.INPUT_SIZE", "[1, 2]"]), ConfigError, (ValueError,), "MODEL.INPUT_SIZE"),
        (lambda: load_cfg(None, opts=["MODEL.NOPE", "1"]), ConfigKeyError, (KeyError, ValueError), "MODEL.NOPE"),
        (lambda: load_checkpoint(data / "truncated.pth", torch.nn.Linear(1, 1)), CheckpointError, (ValueError,),
         "truncated.pth"),
    ]
    for call, exc, builtins, needle in checks:
        with pytest.raises(exc) as info:
            call()
        assert isinstance(info.value, ConnectomicsDataError) and isinstance(info.value, builtins)
        assert needle in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


def test_one_line_message_unwraps_a_worker_traceback():
    """The CLI prints the worker's own message, not torch's multi-line 'Caught X' wrapper."""
    text = (
        "Caught VolumeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise VolumeError(msg)\n'
        "connectomics_data.errors.VolumeError: /d/v.h5: cannot read box Box(start=[0, 0, 0], stop=[1, 2, 3])\n"
    )
    assert cli.one_line_message(VolumeError(text)) == (
        "/d/v.h5: cannot read box Box(start=[0, 0, 0], stop=[1, 2, 3])"
    )
    assert cli.one_line_message(TileJSONError("tile JSON t.json: 2 missing:\n  a.png\n  b.png")) == (
        "tile JSON t.json: 2 missing: a.png b.png"
    )


def test_cli_error_output_is_environment_independent(data, tmp_path, capsys, monkeypatch):
    """A relative config path is reported as given, and the message does not depend on cwd."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("sub")
    rc, stderr, _ = run_cli(["--config-file", "sub/missing.yaml"], capsys, monkeypatch)
    assert rc == 2 and "'sub/missing.yaml'" in error_line(stderr)
