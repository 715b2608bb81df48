"""The augmentation picture: grid layout, outlines, and the script end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from connectomics_data.augment import Compose, Elastic, Flip, Grayscale
from connectomics_data.augment.visualize import (
    OUTLINE_RGB,
    augmentation_rows,
    outline,
    render_grid,
    tile,
)

ROOT = Path(__file__).resolve().parents[1]


def test_outline_marks_id_changes_only():
    lab = np.zeros((6, 6), np.uint64)
    lab[:, 3:] = 2**60
    edge = outline(lab)
    assert edge[:, 2].all() and edge.sum() == 6
    rgb = tile(np.full((6, 6), 0.5, np.float32), lab)
    assert tuple(rgb[0, 2]) == OUTLINE_RGB and tuple(rgb[0, 0]) == (128, 128, 128)


def test_grid_has_a_row_per_transform_plus_input_and_chain():
    size = (5, 24, 32)
    comp = Compose([Flip(p=0.5), Elastic(p=0.5), Grayscale(p=0.5)], size)
    rng = np.random.default_rng(0)
    sample = {
        "image": rng.integers(0, 256, comp.sample_size, dtype=np.uint8),
        "label": (rng.random(comp.sample_size) > 0.5).astype(np.uint8),
    }
    rows = augmentation_rows(sample, comp, seed=3)
    titles = [t for t, _ in rows]
    assert (
        titles[0].startswith("input")
        and titles[1].startswith("Flip")
        and titles[-1].startswith("full chain")
    )
    assert len(rows) == 1 + 3 + 2
    img = render_grid(sample, comp, seed=3, n_slices=3)
    assert img.size == (max(200, 3 * (32 + 4) - 4), len(rows) * (24 + 14 + 4))  # titles need 200 px
    px = np.asarray(img)
    assert (px == np.array(OUTLINE_RGB, np.uint8)).all(-1).any()


def test_script_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 256, (12, 200, 200), dtype=np.uint8)
    lab = (vol > 128).astype(np.uint8)
    for name, arr in (("im.h5", vol), ("lb.h5", lab)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("main", data=arr)
    out = tmp_path / "aug.png"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "visualize.py"),
            "--image",
            str(tmp_path / "im.h5"),
            "--label",
            str(tmp_path / "lb.h5"),
            "--out",
            str(out),
            "--input-size",
            "5",
            "64",
            "64",
            "--seed",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 3 * 64
    assert "sample [" in res.stdout
