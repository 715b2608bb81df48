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


def test_2d_grid_is_a_readable_grid_not_one_column():
    """In 2D each row holds one slice: the rows are laid out in ceil(sqrt(n)) columns."""
    size = (1, 40, 40)
    comp = Compose([Flip(p=0.5), Elastic(p=0.5), Grayscale(p=0.5)], size)
    rng = np.random.default_rng(0)
    sample = {"image": rng.integers(0, 256, comp.sample_size, dtype=np.uint8),
              "label": (rng.random(comp.sample_size) > 0.5).astype(np.uint8)}
    rows = augmentation_rows(sample, comp, seed=3)
    img = render_grid(sample, comp, seed=3)
    assert len(rows) == 6
    cols, grid_rows = 3, 2
    cell = (img.size[0] + 4) // cols - 4
    assert cell >= 40 and img.size == (cols * (cell + 4) - 4, grid_rows * (40 + 14 + 4))
    px = np.asarray(img)
    for r in range(len(rows)):  # every cell holds its 40 x 40 tile under its title
        left, top = (r % cols) * (cell + 4), (r // cols) * (40 + 14 + 4) + 14
        tile_px = px[top:top + 40, left:left + 40]
        assert not (tile_px == 255).all(-1).all(), r


def test_script_in_2d_on_the_demo_data(tmp_path):
    out = tmp_path / "aug2d.png"
    demo = ROOT / "datasets" / "drosophila_vnc_mito"
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "visualize.py"), "--image",
         str(demo / "train_image.h5"), "--label", str(demo / "train_label.h5"), "--out", str(out),
         "--input-size", "1", "160", "160", "--config-file", "configs/mito_2d.yaml"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    with Image.open(out) as im:
        width, height = im.size
    # a grid about as wide as tall (the column it replaced was 200 px wide and 11 cells tall)
    assert width >= 3 * 160 and 0.5 <= width / height <= 2.0, (width, height)
