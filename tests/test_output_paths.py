"""Output directories that cannot be created (a path below an existing *file*, a file where the
directory should be) give one ``error:`` line naming the path and exit status 2, at every place
an output is written: training's DATASET.OUTPUT_PATH (checkpoints, config, log), inference's
OUTPUT_PATH in every mode, and the scripts (visualize, tiles_to_zarr, make_tile_json).

The CLI cases reuse the runner of ``test_bad_inputs.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_bad_inputs import (
    BASE_CFG,
    SHAPE,
    _h5,
    _merge,
    _save_good_checkpoint,
    _tiles,
    error_line,
    run_cli,
)

from connectomics_data.engine.trainer import JsonLinesLog
from connectomics_data.errors import OutputError
from connectomics_data.io import atomic_output, ensure_directory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("output_paths")
    image = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    label = np.zeros(SHAPE, np.uint16)
    label[1:7, 5:30, 5:30] = 3
    _h5(root / "img.h5", image)
    _h5(root / "lab.h5", label)
    _tiles(root / "tiles", image[:3])
    _save_good_checkpoint(root)
    (root / "a_file").write_text("this is a file, not a directory")
    return root


def _run(data: Path, tmp_path: Path, capsys, monkeypatch, change: dict, inference: bool = False):
    monkeypatch.chdir(tmp_path)
    cfg = _merge(BASE_CFG, {"DATASET.INPUT_PATH": str(data), "DATASET.OUTPUT_PATH": str(tmp_path / "out"),
                            "INFERENCE.OUTPUT_PATH": str(tmp_path / "pred"), **change})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["--config-file", str(path)]
    if inference:
        argv += ["--inference", "--checkpoint", str(data / "good.pth")]
    rc, stderr, err = run_cli(argv, capsys, monkeypatch)
    assert rc == 2, stderr
    assert isinstance(err, OutputError), (type(err), stderr)
    return error_line(stderr)


@pytest.mark.parametrize("below", [True, False], ids=["below a file", "is a file"])
def test_training_output_path(data, tmp_path, capsys, monkeypatch, below):
    target = data / "a_file" / "out" if below else data / "a_file"
    line = _run(data, tmp_path, capsys, monkeypatch, {"DATASET.OUTPUT_PATH": str(target)})
    assert f"output directory (DATASET.OUTPUT_PATH) {target}" in line
    assert (f"{data / 'a_file'} is a file, not a directory" if below else "it exists as a file") in line


@pytest.mark.parametrize("mode", ["volumes", "singly", "chunked"])
def test_inference_output_path_below_a_file(data, tmp_path, capsys, monkeypatch, mode):
    change: dict = {"INFERENCE.OUTPUT_PATH": str(data / "a_file" / "pred")}
    if mode == "singly":
        change["INFERENCE.DO_SINGLY"] = True
    if mode == "chunked":
        change.update({"INFERENCE.DO_CHUNK_TITLE": 1, "INFERENCE.IMAGE_NAME": "tiles/tiles.json",
                       "INFERENCE.PAD_SIZE": [0, 0, 0], "INFERENCE.STRIDE": [1, 8, 8]})
    line = _run(data, tmp_path, capsys, monkeypatch, change, inference=True)
    assert f"{data / 'a_file' / 'pred'}" in line and f"{data / 'a_file'} is a file" in line


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _script_error(capsys, rc: int) -> str:
    assert rc == 2
    return error_line(capsys.readouterr().err)


def test_scripts_output_below_a_file(data, capsys):
    blocker = data / "a_file"
    capsys.readouterr()
    rc = _script("visualize").main(["--image", str(data / "img.h5"), "--out", str(blocker / "aug.png"),
                                    "--input-size", "3", "17", "17"])
    assert f"{blocker / 'aug.png'}" in _script_error(capsys, rc)
    rc = _script("tiles_to_zarr").main([str(data / "tiles" / "tiles.json"), str(blocker / "v.zarr"), "--quiet"])
    assert f"{blocker / 'v.zarr'}" in _script_error(capsys, rc)
    rc = _script("make_tile_json").main(["--images", str(data / "tiles" / "s*" / "*.png"),
                                         "--out", str(blocker / "t.json"), "--quiet"])
    line = _script_error(capsys, rc)
    assert f"{blocker} for {blocker / 't.json'}: it exists as a file" in line


def test_library_helpers(data, tmp_path):
    """ensure_directory, atomic_output and the training log raise OutputError naming the path."""
    blocker = data / "a_file"
    assert ensure_directory(tmp_path / "x" / "y") == tmp_path / "x" / "y" and (tmp_path / "x" / "y").is_dir()
    assert ensure_directory(tmp_path / "x" / "y").is_dir()  # exists already: fine
    with pytest.raises(OutputError, match=f"cannot create the log directory {blocker}/logs: {blocker} is a file"):
        JsonLinesLog(blocker / "logs" / "log.jsonl")
    with pytest.raises(OutputError, match=f"directory {blocker}/d for {blocker}/d/f.txt: {blocker} is a file"):
        with atomic_output(blocker / "d" / "f.txt"):
            pass
    with pytest.raises(OutputError, match="it exists as a file"):
        ensure_directory(blocker)
