"""scripts/train.py's failures: each one clear line on stderr naming the key or file, exit code
2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _trainer_common import tiny_project

from connectomics_data.config import load_cfg
from connectomics_data.engine import save_checkpoint
from connectomics_data.engine.cli import main
from connectomics_data.models import build_model

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tiny_project(tmp_path)


def fails_cleanly(argv: list[str], capsys, *expected: str) -> str:
    """Run the CLI in-process: exit code 2, one line 'error: ...' holding every ``expected``."""
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert rc == 2, err
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def test_inference_without_checkpoint(project: Path, capsys):
    fails_cleanly(["--config-file", str(project), "--inference"], capsys, "--inference needs --checkpoint")


def test_missing_data_path_names_the_key_and_the_file(project: Path, capsys):
    fails_cleanly(["--config-file", str(project), "DATASET.IMAGE_NAME", "nowhere.h5"], capsys,
                  "DATASET.IMAGE_NAME", "nowhere.h5")
    fails_cleanly(["--config-file", str(project), "DATASET.LABEL_NAME", "no_label.h5"], capsys,
                  "DATASET.LABEL_NAME", "no_label.h5")
    fails_cleanly(["--config-file", str(project), "DATASET.INPUT_PATH", "missing_dir/"], capsys,
                  "missing_dir")


def test_missing_config_file(project: Path, capsys):
    fails_cleanly(["--config-file", "no_such_config.yaml"], capsys, "no_such_config.yaml", "not found")


def test_unknown_key_suggests_the_spelling(project: Path, capsys):
    fails_cleanly(["--config-file", str(project), "SOLVER.ITERATION_TOTL", "3"], capsys,
                  "SOLVER.ITERATION_TOTL", "SOLVER.ITERATION_TOTAL")


@pytest.mark.parametrize("inference", [False, True])
def test_unreadable_checkpoint(project: Path, capsys, inference: bool):
    Path("broken.pth.tar").write_bytes(b"this is not a checkpoint" * 10)
    argv = ["--config-file", str(project), "--checkpoint", "broken.pth.tar"]
    fails_cleanly(argv + (["--inference"] if inference else []), capsys,
                  "broken.pth.tar", "truncated or corrupt")
    fails_cleanly(["--config-file", str(project), "--checkpoint", "absent.pth.tar"], capsys,
                  "checkpoint not found: absent.pth.tar")


@pytest.mark.parametrize("inference", [False, True])
def test_checkpoint_from_another_architecture(project: Path, capsys, inference: bool):
    cfg_2d = load_cfg(str(project), opts=["MODEL.ARCHITECTURE", "unet_2d", "DATASET.DO_2D", "True",
                                          "MODEL.INPUT_SIZE", "[1, 16, 16]",
                                          "MODEL.OUTPUT_SIZE", "[1, 16, 16]"])
    save_checkpoint("net2d.pth.tar", build_model(cfg_2d), None, None, 10, cfg_2d)
    argv = ["--config-file", str(project), "--checkpoint", "net2d.pth.tar"]
    fails_cleanly(argv + (["--inference"] if inference else []), capsys,
                  "net2d.pth.tar", "'unet_2d'", "'unet_3d'")


def test_checkpoint_with_other_filters(project: Path, capsys):
    cfg = load_cfg(str(project), opts=["MODEL.FILTERS", "[4, 6]"])
    save_checkpoint("narrow.pth.tar", build_model(cfg), None, None, 10, cfg)
    fails_cleanly(["--config-file", str(project), "--checkpoint", "narrow.pth.tar"], capsys,
                  "narrow.pth.tar", "does not fit the model", "shape mismatch")


def test_input_size_too_small_for_the_pooling(project: Path, capsys):
    opts = ["MODEL.FILTERS", "[4, 8, 16, 32]", "MODEL.ISOTROPY", "[False, False, False, False]"]
    fails_cleanly(["--config-file", str(project), *opts, "MODEL.INPUT_SIZE", "[3, 4, 16]",
                   "MODEL.OUTPUT_SIZE", "[3, 4, 16]"], capsys,
                  "MODEL.INPUT_SIZE", "axis y is 4", "at least 8")
    assert not Path("out/checkpoint_000002.pth.tar").exists()


def test_script_exit_code_and_stderr_in_a_subprocess(project: Path):
    """The real script: exit status 2, exactly one stderr line, nothing on stdout."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config-file",
                           str(project), "--inference"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: --inference needs --checkpoint FILE (a checkpoint written by training)"]
