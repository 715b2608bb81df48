"""What a new user tripped over (issue 18), each seen through ``scripts/train.py``: DO_SINGLY
over a glob, reruns into one output folder, keys that cannot act here, inference inputs that
are missing, the validation picture."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from _trainer_common import tiny_project

from connectomics_data.config import load_cfg
from connectomics_data.engine import save_checkpoint
from connectomics_data.engine.cli import main
from connectomics_data.io import open_volume, write_png_slices
from connectomics_data.models import build_model


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tiny_project(tmp_path)


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.fixture
def checkpoint(project: Path) -> str:
    cfg = load_cfg(str(project))
    save_checkpoint("net.pth.tar", build_model(cfg), None, None, 1, cfg)
    return "net.pth.tar"


# ---------------------------------------------------------------- 1. DO_SINGLY over a glob
@pytest.mark.parametrize("load_2d", [False, True])
def test_do_singly_over_a_glob_writes_one_output_per_file(project: Path, checkpoint: str, capsys,
                                                          load_2d: bool):
    """Without DATASET.LOAD_2D the glob used to be one volume written to '*_pred.h5'."""
    write_png_slices("data/val_png", open_volume("data/val_im.h5").read())
    rc = main(["--config-file", str(project), "--inference", "--checkpoint", checkpoint,
               "INFERENCE.DO_SINGLY", "True", "INFERENCE.IMAGE_NAME", "val_png/*.png",
               "INFERENCE.OUTPUT_NAME", "{stem}_pred.h5", "DATASET.LOAD_2D", str(load_2d),
               "INFERENCE.INPUT_SIZE", "[1, 16, 16]", "INFERENCE.OUTPUT_SIZE", "[1, 16, 16]",
               "INFERENCE.STRIDE", "[1, 8, 8]"])
    out = capsys.readouterr().out
    assert rc == 0, out
    names = sorted(p.name for p in Path("out/test").iterdir())
    assert names == [f"{i:04d}_pred.h5" for i in range(4)]
    assert [line.rsplit("/", 1)[1] for line in out.splitlines() if line.startswith("wrote ")] == names
    with h5py.File("out/test/0002_pred.h5", "r") as f:
        assert f["vol0"].shape == (1, 1, 40, 40)
        assert f["vol0"].attrs["source"].endswith("val_png/0002.png")


@pytest.mark.parametrize("name", ["*_pred.h5", "pred?.h5", "pred[0].h5"])
def test_no_output_name_holds_a_glob_character(project: Path, checkpoint: str, capsys, name: str):
    rc = main(["--config-file", str(project), "--inference", "--checkpoint", checkpoint,
               "INFERENCE.OUTPUT_NAME", name])
    assert rc == 2
    err = one_error(capsys)
    assert "INFERENCE.OUTPUT_NAME" in err and "glob character" in err, err
    assert not Path("out/test").exists() or not any(Path("out/test").iterdir())


# ---------------------------------------------------------------- 2. reruns into one folder
def test_a_rerun_starts_a_fresh_folder_and_keeps_the_previous_run(project: Path, capsys):
    from _trainer_common import read_log

    assert main(["--config-file", str(project)]) == 0
    first_log = Path("out/log.jsonl").read_text()
    assert main(["--config-file", str(project), "SOLVER.ITERATION_TOTAL", "2"]) == 0
    out = capsys.readouterr().out
    # the second run alone in out/: its own log and checkpoints, none of the first run's
    assert [r["iteration"] for r in read_log(Path("out/log.jsonl")) if "loss" in r] == [1, 2]
    assert sorted(p.name for p in Path("out").glob("checkpoint_*")) == [
        "checkpoint_000002.pth.tar", "checkpoint_latest.txt"]
    assert load_cfg("out/config.yaml").SOLVER.ITERATION_TOTAL == 2
    # the first run intact in out/previous_runs/<stamp>/, and the user told where
    (archived,) = Path("out/previous_runs").iterdir()
    assert (archived / "log.jsonl").read_text() == first_log
    assert sorted(p.name for p in archived.glob("checkpoint_*.pth.tar")) == [
        "checkpoint_000002.pth.tar", "checkpoint_000004.pth.tar"]
    assert load_cfg(str(archived / "config.yaml")).SOLVER.ITERATION_TOTAL == 4
    assert f"moved to {archived}" in out
    # a resume is explicit and continues in place: the log is appended to, nothing is moved
    assert main(["--config-file", str(project), "--checkpoint", "out/checkpoint_000002.pth.tar"]) == 0
    assert [r["iteration"] for r in read_log(Path("out/log.jsonl")) if "loss" in r] == [1, 2, 3, 4]
    assert len(list(Path("out/previous_runs").iterdir())) == 1


def test_a_restart_from_a_checkpoint_in_the_folder_it_would_clear_is_refused(project: Path, capsys):
    assert main(["--config-file", str(project)]) == 0
    rc = main(["--config-file", str(project), "--checkpoint", "out/checkpoint_000002.pth.tar",
               "SOLVER.ITERATION_RESTART", "True"])
    assert rc == 2
    err = one_error(capsys)
    assert "DATASET.OUTPUT_PATH" in err and "ITERATION_RESTART" in err, err
    assert Path("out/checkpoint_000004.pth.tar").exists() and not Path("out/previous_runs").exists()


# ---------------------------------------------------------------- 3. keys that cannot act here
def test_keys_that_cannot_act_here_warn_once_each_and_startup_says_where(project: Path, capsys,
                                                                         monkeypatch):
    import connectomics_data.engine.startup as startup

    monkeypatch.setattr(startup, "_tensorboard_installed", lambda: False)
    assert main(["--config-file", str(project), "MODEL.MIXED_PRECESION", "True",
                 "MODEL.NORM_MODE", "sync_bn", "MONITOR.ITERATION_NUM", "[1, 2]",
                 "SOLVER.WARMUP_ITERS", "10", "SOLVER.ITERATION_TOTAL", "2"]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 4, captured.err
    for key, instead in [("MODEL.MIXED_PRECESION", "float32"), ("MODEL.NORM_MODE", "plain batch norm"),
                         ("MONITOR.ITERATION_NUM", "log.jsonl only"),
                         ("SOLVER.WARMUP_ITERS 10", "never reaches SOLVER.BASE_LR")]:
        assert sum(key in line and instead in line for line in warned) == 1, (key, warned)
    start = [line for line in captured.out.splitlines() if line.startswith("device ")]
    assert len(start) == 1 and re.fullmatch(
        r"device cpu \(\d+ threads?\), 0 loader threads, batch 2 x \[5, 44, 44\] voxels read per "
        r"sample \(model input \[3, 16, 16\]\)", start[0]), captured.out
    # nothing to say for the defaults of the tiny config
    assert main(["--config-file", str(project), "MONITOR.ITERATION_NUM", "[1, 0]"]) == 0
    assert "warning:" not in capsys.readouterr().err


# ---------------------------------------------------------------- 5. a missing inference input
@pytest.mark.parametrize("singly", [False, True])
def test_a_missing_inference_input_names_the_key(project: Path, checkpoint: str, capsys, singly: bool):
    rc = main(["--config-file", str(project), "--inference", "--checkpoint", checkpoint,
               "INFERENCE.IMAGE_NAME", "test-input.tif", "INFERENCE.DO_SINGLY", str(singly)])
    assert rc == 2
    err = one_error(capsys)
    assert err.startswith("error: INFERENCE.IMAGE_NAME: ") and "test-input.tif" in err, err


# ---------------------------------------------------------------- 6. the validation picture
def test_one_validation_picture_per_validation_with_iteration_and_dice(project: Path):
    from _trainer_common import read_log
    from PIL import Image

    from connectomics_data.engine.validation_figure import CAPTION_HEIGHT

    assert main(["--config-file", str(project), "DATASET.VAL_IMAGE_NAME", "val_im.h5",
                 "DATASET.VAL_LABEL_NAME", "val_lb.h5", "SOLVER.ITERATION_VAL", "2"]) == 0
    dice = {r["iteration"]: r["val_dice"] for r in read_log(Path("out/log.jsonl")) if "val_dice" in r}
    assert sorted(dice) == [2, 4]
    names = sorted(p.name for p in Path("out").glob("validation_*.png"))
    assert names == [f"validation_it{i:06d}_dice{dice[i]:.4f}.png" for i in (2, 4)]
    last = np.asarray(Image.open(Path("out") / names[-1]))
    # caption strip over four (40, 40) panels: outlines, outlines, probability, errors
    assert last.shape == (CAPTION_HEIGHT + 40, 4 * 40, 3) and last.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open("out/validation.png")), last)


def test_validation_panels_show_probability_and_errors_in_colour():
    from connectomics_data.engine.validation_figure import FN, FP, TP, validation_panels

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 24, 24), dtype=np.uint8)
    label = np.zeros((3, 24, 24), np.uint8)
    label[:, :, 10:12] = 1  # a membrane two pixels wide
    prob = np.zeros((1, 3, 24, 24), np.float32)
    prob[0, :, :12, 10:12] = 0.9  # found in the upper half (TP), missed below (FN)
    prob[0, :, 5, 15:20] = 0.7  # a false positive
    prob[0, :, 20, 15:20] = 0.3  # below threshold: not an error, but visible in the probability panel
    panels = validation_panels(image, label, prob, 1)
    assert panels.shape == (24, 96, 3) and panels.dtype == np.uint8
    gt_view, pred_view, prob_view, errors = np.split(panels, 4, axis=1)
    np.testing.assert_array_equal(errors[3, 10], TP)
    np.testing.assert_array_equal(errors[20, 10], FN)
    np.testing.assert_array_equal(errors[5, 16], FP)
    assert not np.isin(errors[20, 16], [TP, FP, FN]).all(axis=-1).any()
    # the probability panel is brighter where the probability is higher
    brightness = prob_view.astype(int).sum(-1)
    assert brightness[5, 16] > brightness[20, 16] > brightness[0, 0] == 0
    # the outline views blend, so the image stays visible under a thin structure
    g = (image[1].astype(np.float32) - image[1].min()) / (image[1].max() - image[1].min()) * 255
    g = float(g.astype(np.uint8)[3, 10])
    expected = np.array([0.5 * g, 0.5 * g + 127.5, 0.5 * g]).astype(np.uint8)
    np.testing.assert_array_equal(gt_view[3, 10], expected)
    np.testing.assert_array_equal(
        pred_view[3, 10], np.array([0.5 * g + 127.5, 0.5 * g, 0.5 * g + 127.5]).astype(np.uint8))
