"""scripts/train.py's command line: config lookup, overrides, seeds, what a run writes, and
inference with a checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from _trainer_common import read_log, tiny_project

from connectomics_data.config import load_cfg
from connectomics_data.engine import read_checkpoint
from connectomics_data.engine.cli import main


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tiny_project(tmp_path)


def test_shipped_config_by_name_from_another_directory(tmp_path: Path, monkeypatch, capsys):
    """'mito.yaml' is found under the repository's configs/ and its relative data paths under
    the repository, while outputs go to the working directory."""
    monkeypatch.chdir(tmp_path)
    rc = main(["--config-file", "mito.yaml", "SOLVER.ITERATION_TOTAL", "1", "SOLVER.ITERATION_SAVE",
               "1", "MODEL.FILTERS", "[4, 8, 8, 8]", "MODEL.INPUT_SIZE", "[2, 32, 32]",
               "DATASET.VAL_IMAGE_NAME", "None", "SYSTEM.NUM_CPUS", "0"])
    assert rc == 0
    out = tmp_path / "outputs" / "mito_demo"
    assert (out / "checkpoint_000001.pth.tar").is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        "validation skipped (no DATASET.VAL_IMAGE_NAME)")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["DATASET"]["INPUT_PATH"] == "datasets/drosophila_vnc_mito/"
    assert saved["MODEL"]["FILTERS"] == [4, 8, 8, 8]


def test_overrides_and_options_in_any_order_and_config_yaml_reloads(project: Path):
    # KEY VALUE pairs before an option, a list value, and pairs after '--'
    assert main(["--config-file", str(project), "SOLVER.BASE_LR", "0.005", "MODEL.FILTERS", "[4, 6]",
                 "--manual-seed", "3", "--", "DATASET.OUTPUT_PATH", "run/"]) == 0
    cfg = load_cfg("run/config.yaml")
    assert cfg.SOLVER.BASE_LR == 0.005 and list(cfg.MODEL.FILTERS) == [4, 6]
    assert cfg.SYSTEM.SEED == 3
    expected = load_cfg(str(project), opts=["SOLVER.BASE_LR", "0.005", "MODEL.FILTERS", "[4, 6]",
                                            "DATASET.OUTPUT_PATH", "run/", "SYSTEM.SEED", "3"])
    assert cfg.dump() == expected.dump()
    # the saved config trains again, giving the same run
    assert main(["--config-file", "run/config.yaml", "DATASET.OUTPUT_PATH", "again/"]) == 0
    a = read_checkpoint("run/checkpoint_000004.pth.tar")["model"]
    b = read_checkpoint("again/checkpoint_000004.pth.tar")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_manual_seed_decides_the_run(project: Path):
    for name, seed in (("s7", "7"), ("s7b", "7"), ("s8", "8")):
        assert main(["--config-file", str(project), "--manual-seed", seed, "SOLVER.ITERATION_TOTAL",
                     "2", "DATASET.OUTPUT_PATH", f"{name}/"]) == 0
    ck = {n: read_checkpoint(f"{n}/checkpoint_000002.pth.tar")["model"] for n in ("s7", "s7b", "s8")}
    assert all(torch.equal(ck["s7"][k], ck["s7b"][k]) for k in ck["s7"])
    assert not all(torch.equal(ck["s7"][k], ck["s8"][k]) for k in ck["s7"])
    assert load_cfg("s8/config.yaml").SYSTEM.SEED == 8


def test_log_jsonl_and_final_line(project: Path, capsys):
    rc = main(["--config-file", str(project), "DATASET.VAL_IMAGE_NAME", "val_im.h5",
               "DATASET.VAL_LABEL_NAME", "val_lb.h5", "SOLVER.ITERATION_VAL", "2"])
    assert rc == 0
    lines = Path("out/log.jsonl").read_text().splitlines()
    records = read_log(Path("out/log.jsonl"))
    assert len(lines) == len(records) == 6  # 4 training lines, validation at 2 and at the end
    train = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    for r in train:
        assert {"loss", "lr", "samples_per_s", "data_wait_share", "rejection_trials_per_sample",
                "t0.WeightedBCEWithLogitsLoss", "t0.DiceLoss"} <= set(r)
        assert np.isclose(r["loss"], r["t0.WeightedBCEWithLogitsLoss"] + r["t0.DiceLoss"], rtol=1e-5)
        assert r["samples_per_s"] > 0 and 0 <= r["data_wait_share"] <= 1
    assert train[-1]["lr"] == 0.0  # cosine schedule ends at 0
    val = [r for r in records if "val_dice" in r]
    assert [r["iteration"] for r in val] == [2, 4]
    final = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"validation dice=(\d\.\d{4}) iou=(\d\.\d{4})", final)
    assert m and (float(m[1]), float(m[2])) == (round(val[-1]["val_dice"], 4), round(val[-1]["val_iou"], 4))
    assert Path("out/validation.png").is_file()
    assert Path("out/checkpoint_latest.txt").read_text() == "checkpoint_000004.pth.tar\n"


def test_inference_with_checkpoint_writes_the_prediction(project: Path, capsys):
    assert main(["--config-file", str(project), "SOLVER.ITERATION_TOTAL", "2"]) == 0
    assert main(["--config-file", str(project), "--inference", "--checkpoint",
                 "out/checkpoint_000002.pth.tar"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "wrote out/test/result.h5"
    with h5py.File("out/test/result.h5", "r") as f:
        assert list(f) == ["vol0"]
        assert f["vol0"].shape == (1, 4, 40, 40) and f["vol0"].dtype == np.uint8
        assert f["vol0"].attrs["source"].endswith("val_im.h5")


def test_cremi_style_config_trains_with_rejection_and_predicts_singly(tmp_path: Path, monkeypatch,
                                                                      capsys):
    """configs/cremi_synapse.yaml on its stand-in data: two '@'-joined volumes, rejection
    sampling (trials are logged), then one output per input volume (DO_SINGLY)."""
    monkeypatch.chdir(tmp_path)
    small = ["SOLVER.ITERATION_TOTAL", "3", "SOLVER.ITERATION_SAVE", "3", "MODEL.FILTERS",
             "[4, 8, 8, 8]", "INFERENCE.AUG_NUM", "0", "MONITOR.ITERATION_NUM", "[1, 0]",
             "SYSTEM.NUM_CPUS", "0", "INFERENCE.STRIDE", "[8, 120, 120]"]
    assert main(["--config-file", "cremi_synapse.yaml", *small]) == 0
    records = read_log(Path("outputs/cremi_synapse/log.jsonl"))
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert all(r["rejection_trials_per_sample"] >= 1.0 for r in records)
    assert main(["--config-file", "cremi_synapse.yaml", "--inference", "--checkpoint",
                 "outputs/cremi_synapse/checkpoint_000003.pth.tar", *small]) == 0
    written = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert written == ["wrote outputs/cremi_synapse/test/train_image_syn.h5",
                       "wrote outputs/cremi_synapse/test/test_image_syn.h5"]
    for name, shape in (("train_image_syn.h5", (1, 16, 512, 512)), ("test_image_syn.h5", (1, 8, 256, 256))):
        with h5py.File(f"outputs/cremi_synapse/test/{name}", "r") as f:
            assert f["vol0"].shape == shape and f["vol0"].dtype == np.uint8
