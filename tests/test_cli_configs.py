"""Every shipped config in configs/ loads (training and --inference), builds its model, and
names data that ship with the repository or that a tutorial creates."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from connectomics_data.config import load_cfg
from connectomics_data.config.loader import UnusedPyTCKeysWarning
from connectomics_data.inference import inference_settings_from_cfg
from connectomics_data.models import build_model, check_input_size

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TUTORIALS = {p.name: p.read_text() for p in (ROOT / "tutorials").glob("*.md")}


def test_the_expected_configs_ship():
    assert {"mito.yaml", "mitoem_tiles.yaml", "cremi_synapse.yaml", "mito_2d.yaml"} <= {
        p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("inference", [False, True], ids=["train", "inference"])
def test_config_loads_and_builds_its_model(path: Path, inference: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedPyTCKeysWarning)  # no key set in vain
        cfg = load_cfg(str(path), inference=inference)
    assert cfg.is_frozen()
    size = check_input_size(cfg)
    model = build_model(cfg)
    assert model.architecture == cfg.MODEL.ARCHITECTURE
    settings = inference_settings_from_cfg(cfg)
    if inference:
        assert list(cfg.MODEL.INPUT_SIZE) == list(cfg.INFERENCE.INPUT_SIZE)
        if cfg.INFERENCE.OUTPUT_PATH:
            assert cfg.DATASET.OUTPUT_PATH == cfg.INFERENCE.OUTPUT_PATH
        assert cfg.DATASET.IMAGE_NAME == cfg.INFERENCE.IMAGE_NAME
    assert len(size) == (2 if cfg.MODEL.ARCHITECTURE == "unet_2d" else 3)
    assert all(s >= 1 for s in settings.stride)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_data_ship_or_a_tutorial_creates_them(path: Path):
    cfg = load_cfg(str(path))
    input_path = cfg.DATASET.INPUT_PATH
    if (ROOT / input_path).is_dir():
        for part in str(cfg.DATASET.IMAGE_NAME).split("@") + str(cfg.DATASET.LABEL_NAME).split("@"):
            assert (ROOT / input_path / part).is_file(), part
        return
    makers = [name for name, text in TUTORIALS.items()
              if f"configs/{path.name}" in text and input_path.rstrip("/") in text]
    assert makers, f"{path.name}: no tutorial creates {input_path} and uses this config"


def test_mitoem_tiles_is_a_tile_dataset_setup():
    cfg = load_cfg(str(ROOT / "configs" / "mitoem_tiles.yaml"), inference=True)
    assert cfg.DATASET.DO_CHUNK_TITLE == 1 and cfg.INFERENCE.DO_CHUNK_TITLE == 1
    assert cfg.DATASET.IMAGE_NAME.endswith(".json")
    assert list(cfg.DATASET.DATA_CHUNK_NUM) == [1, 2, 2]


def test_cremi_synapse_uses_rejection_sampling_and_several_volumes():
    cfg = load_cfg(str(ROOT / "configs" / "cremi_synapse.yaml"))
    assert cfg.DATASET.REJECT_SAMPLING.SIZE_THRES > 0 and 0 < cfg.DATASET.REJECT_SAMPLING.P <= 1
    assert cfg.MODEL.LABEL_EROSION == 1
    assert len(cfg.DATASET.IMAGE_NAME.split("@")) == len(cfg.DATASET.LABEL_NAME.split("@")) == 2


def test_mito_2d_is_a_2d_singly_setup():
    cfg = load_cfg(str(ROOT / "configs" / "mito_2d.yaml"), inference=True)
    assert cfg.DATASET.DO_2D and cfg.DATASET.LOAD_2D and cfg.INFERENCE.DO_SINGLY
    assert cfg.MODEL.ARCHITECTURE == "unet_2d" and cfg.MODEL.INPUT_SIZE[0] == 1
