"""Run every tutorial's ```bash blocks, in order, in a scratch directory, and check what they wrote.

The commands run as written, except that every ``scripts/train.py`` command gets
:data:`OVERRIDES` appended (2 iterations, a smaller network, no test-time augmentation), so a
tutorial runs in seconds instead of minutes. The scratch directory links ``scripts/``,
``configs/`` and the demo data of the repository; everything else (PNG slices, tile JSONs,
``outputs/``) is written inside it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from connectomics_data.config import load_cfg
from connectomics_data.engine import load_checkpoint
from connectomics_data.engine.validation_figure import CAPTION_HEIGHT, validation_file_name
from connectomics_data.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
DEMO = "datasets/drosophila_vnc_mito"

#: appended to every ``scripts/train.py`` command of a tutorial (quoted for bash)
OVERRIDES = (
    "SOLVER.ITERATION_TOTAL 2 SOLVER.ITERATION_SAVE 2 SOLVER.ITERATION_VAL 2 "
    "MONITOR.ITERATION_NUM '[1,0]' INFERENCE.AUG_NUM 0"
)
#: a smaller network per config (must match between training and inference)
SMALL_MODEL = {
    "3d": "MODEL.FILTERS '[4,8,8,8]'",
    "2d": "MODEL.FILTERS '[4,8,8,8]' SOLVER.SAMPLES_PER_BATCH 2",
}
FINAL_LINE = re.compile(r"^validation dice=(\d+\.\d{4}) iou=(\d+\.\d{4})$")
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def bash_blocks(markdown: str) -> list[str]:
    """The contents of the fenced ```bash blocks, in order."""
    return BLOCK.findall(markdown)


def with_overrides(block: str, overrides: str) -> str:
    """``block`` with backslash-continued lines joined and ``overrides`` appended to every
    line that runs ``scripts/train.py``."""
    lines = block.replace("\\\n", " ").splitlines()
    return "\n".join(f"{line} {overrides}" if "scripts/train.py" in line else line for line in lines)


def test_block_parsing_and_overrides():
    md = "text\n```bash\npython scripts/train.py --a \\\n    --b\nls x\n```\n```text\nno\n```\n"
    blocks = bash_blocks(md)
    assert blocks == ["python scripts/train.py --a \\\n    --b\nls x\n"]
    assert with_overrides(blocks[0], "K V") == "python scripts/train.py --a      --b K V\nls x"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "drosophila_vnc_mito").symlink_to(ROOT / DEMO)
    for name in ("scripts", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def run_tutorial(name: str, workdir: Path, overrides: str) -> list[str]:
    """Run the tutorial's blocks one by one (each with ``set -euo pipefail``); return each
    block's stdout."""
    blocks = bash_blocks((TUTORIALS / name).read_text())
    assert blocks, f"{name} has no ```bash blocks"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    outputs = []
    for i, block in enumerate(blocks):
        script = "set -euo pipefail\n" + with_overrides(block, overrides)
        proc = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, (
            f"{name} block {i} failed (exit {proc.returncode}):\n{script}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        outputs.append(proc.stdout)
    return outputs


FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n?", re.MULTILINE | re.DOTALL)


def python_blocks(markdown: str) -> list[tuple[str, str | None]]:
    """The ```python blocks in order, each with its expected stdout: the ```text block right
    after it (only blank lines or the word "prints" in between), else None."""
    fences = list(FENCE.finditer(markdown))
    out = []
    for k, m in enumerate(fences):
        if m.group(1) != "python":
            continue
        expected = None
        if k + 1 < len(fences) and fences[k + 1].group(1) == "text":
            between = markdown[m.end():fences[k + 1].start()].strip()
            if between in ("", "prints"):
                expected = fences[k + 1].group(2)
        out.append((m.group(2), expected))
    return out


def test_python_block_parsing():
    md = ("```python\nprint(1)\n```\n\nprints\n\n```text\n1\n```\nprose\n```python\nx = 2\n```\n"
          "more prose\n```text\nnot output\n```\n```bash\nls\n```\n")
    assert python_blocks(md) == [("print(1)\n", "1\n"), ("x = 2\n", None)]


def run_python_tutorial(name: str, workdir: Path) -> list[str]:
    """Run each ```python block of the tutorial as a script, in order, in ``workdir``, with the
    repository on PYTHONPATH; check the stdout of blocks followed by their output; return each
    block's stdout."""
    blocks = python_blocks((TUTORIALS / name).read_text())
    assert blocks, f"{name} has no ```python blocks"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    outputs = []
    for i, (code, expected) in enumerate(blocks):
        script = workdir / f"{Path(name).stem}_block{i}.py"
        script.write_text(code)
        proc = subprocess.run([sys.executable, script.name], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (
            f"{name} python block {i} failed (exit {proc.returncode}):\n{code}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
        if expected is not None:
            assert proc.stdout == expected, f"{name} block {i} printed:\n{proc.stdout}"
        outputs.append(proc.stdout)
    return outputs


@pytest.mark.slow
def test_own_training_loop_tutorial(workdir: Path):
    """The plain loop, the Batch printout, resuming, the Lightning loop and Compose, as written."""
    pytest.importorskip("lightning")
    loop, _, resume, lightning, compose = run_python_tutorial("own_training_loop.md", workdir)
    losses = re.findall(r"^step (\d): loss (\d+\.\d{4})$", loop, re.MULTILINE)
    assert [int(s) for s, _ in losses] == [1, 2, 3] and all(np.isfinite(float(v)) for _, v in losses)
    state = torch.load(workdir / "checkpoint.pt")
    assert state["step"] == 3 and set(state) == {"model", "optimizer", "step"}
    assert re.fullmatch(r"step 4 trains on crops at \[\[-?\d+, -?\d+, -?\d+\], \[-?\d+, -?\d+, -?\d+\]\]\n",
                        resume)
    assert lightning.splitlines()[-1] == "trained 3 steps"
    assert compose.splitlines()[-1] == "float32 (8, 64, 64) uint32 (8, 64, 64)"


def training_output(blocks_stdout: list[str]) -> str:
    finals = [out for out in blocks_stdout if out.strip().splitlines()[-1:]
              and FINAL_LINE.match(out.strip().splitlines()[-1])]
    assert len(finals) == 1, "exactly one block should end with the final validation line"
    return finals[0]


def check_training_outputs(out_dir: Path, spatial: tuple[int, int]) -> None:
    """Checkpoint of iteration 2 loads into the configured model; config.yaml reloads;
    log.jsonl lines are JSON with the iteration; validation.png is a caption over four (y, x)
    panels, uint8, and a copy named after the iteration and Dice exists."""
    assert (out_dir / "checkpoint_latest.txt").read_text().strip() == "checkpoint_000002.pth.tar"
    cfg = load_cfg(str(out_dir / "config.yaml"))
    assert cfg.SOLVER.ITERATION_TOTAL == 2
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_checkpoint(out_dir / "checkpoint_000002.pth.tar", model) == 2
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    records = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in train)
    assert [r["iteration"] for r in records if "val_dice" in r] == [2]
    png = np.asarray(Image.open(out_dir / "validation.png"))
    assert png.shape == (CAPTION_HEIGHT + spatial[0], 4 * spatial[1], 3) and png.dtype == np.uint8
    (val,) = [r for r in records if "val_dice" in r]
    assert (out_dir / validation_file_name(2, val["val_dice"])).is_file()


@pytest.mark.slow
def test_mito_demo_tutorial(workdir: Path):
    outs = run_tutorial("mito_demo.md", workdir, f"{OVERRIDES} {SMALL_MODEL['3d']}")
    final = training_output(outs).strip().splitlines()[-1]
    dice, iou = (float(v) for v in FINAL_LINE.match(final).groups())
    assert 0.0 <= iou <= dice <= 1.0
    out = workdir / "outputs" / "mito_demo"
    check_training_outputs(out, (512, 512))
    # run twice in a row: the second run starts afresh (the first moved to previous_runs/) and
    # every command still works
    first_log = (out / "log.jsonl").read_text()
    outs = run_tutorial("mito_demo.md", workdir, f"{OVERRIDES} {SMALL_MODEL['3d']}")
    training_output(outs)
    check_training_outputs(out, (512, 512))
    (previous,) = (out / "previous_runs").iterdir()
    assert (previous / "log.jsonl").read_text() == first_log
    assert Image.open(out / "augmentations.png").format == "PNG"
    with h5py.File(out / "test" / "result.h5", "r") as f:
        assert list(f) == ["vol0"]
        assert f["vol0"].shape == (2, 8, 256, 256) and f["vol0"].dtype == np.uint8
    assert np.asarray(Image.open(out / "test" / "slice4.png")).shape == (256, 512)


@pytest.mark.slow
def test_tiled_volume_tutorial(workdir: Path):
    import zarr

    from connectomics_data.io import load_tile_json, open_volume

    outs = run_tutorial("tiled_volume.md", workdir, f"{OVERRIDES} {SMALL_MODEL['3d']}")
    training_output(outs)
    tiles = workdir / "datasets" / "mito_tiles"
    for name, depth, size in [("im_train", 16, 512), ("mito_train", 16, 512), ("im_val", 4, 512),
                              ("mito_val", 4, 512), ("im_test", 8, 256)]:
        spec = load_tile_json(tiles / f"{name}.json")
        assert (spec.depth, spec.height, spec.width) == (depth, size, size)
    # the tiled test volume reads back exactly as the demo volume
    with h5py.File(workdir / DEMO / "test_image.h5", "r") as f:
        np.testing.assert_array_equal(open_volume(str(tiles / "im_test.json")).read(), f["main"][:])
    out = workdir / "outputs" / "mitoem_tiles"
    check_training_outputs(out, (512, 512))
    pred = zarr.open_group(str(out / "test" / "result.zarr"), mode="r")["vol0"]
    assert pred.shape == (2, 8, 256, 256) and pred.dtype == np.uint8
    progress = sorted(p.name for p in (out / "test" / "result.zarr.progress").iterdir())
    assert progress == [f"chunk_{i:06d}.json" for i in range(4)]


@pytest.mark.slow
def test_inference_2d_tutorial(workdir: Path):
    outs = run_tutorial("inference_2d.md", workdir, f"{OVERRIDES} {SMALL_MODEL['2d']}")
    training_output(outs)
    out = workdir / "outputs" / "mito_2d"
    check_training_outputs(out, (512, 512))
    names = [f"{i:04d}_pred.h5" for i in range(8)]
    # job 0 (start 0, step 2) wrote the even files; the full run skipped them and wrote the rest
    first, second = outs[2], outs[3]
    assert [line.rsplit("/", 1)[1] for line in first.splitlines() if line.startswith("wrote ")] == names[0::2]
    assert [line.rsplit("/", 1)[1] for line in second.splitlines() if line.startswith("wrote ")] == names[1::2]
    assert [line.rsplit("/", 1)[1] for line in second.splitlines() if line.startswith("skipped")] == names[0::2]
    for i, name in enumerate(names):
        with h5py.File(out / "test" / name, "r") as f:
            assert f["vol0"].shape == (1, 1, 256, 256) and f["vol0"].dtype == np.uint8
            assert f["vol0"].attrs["source"].endswith(f"test_im/{i:04d}.png")
    assert np.asarray(Image.open(out / "test" / "all_predictions.png")).shape == (256, 8 * 256)


@pytest.mark.slow
def test_formats_tutorial(workdir: Path):
    from connectomics_data.io import open_volume

    outs = run_tutorial("formats.md", workdir, f"{OVERRIDES} {SMALL_MODEL['3d']}")
    opened = outs[1].splitlines()
    assert "PrecomputedVolume" in opened[0] and "(16, 512, 512) uint8 (50.0, 4.6, 4.6)" in opened[0]
    assert "(16, 256, 256) uint8 (50.0, 9.2, 9.2)" in opened[1]
    assert "(16, 256, 256) uint32 (50.0, 9.2, 9.2)" in opened[2]
    assert "ZarrVolume" in opened[3] and "(4, 256, 256) uint8 (50.0, 9.2, 9.2)" in opened[3]
    assert "N5Volume" in opened[4] and "(8, 128, 128) uint8 (50.0, 9.2, 9.2)" in opened[4]
    assert opened[5].startswith("error: ") and "level 1: (50, 9.2, 9.2) nm" in opened[5]
    training_output(outs)
    out = workdir / "outputs" / "mito_formats"
    check_training_outputs(out, (256, 256))
    assert json.loads(outs[3].strip().splitlines()[-1]) == [
        {"path": "vol0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 50.0, 9.2, 9.2]}]}]
    pred = open_volume(str(out / "test" / "result.zarr"))
    assert pred.shape == (2, 8, 128, 128) and pred.voxel_size == (50.0, 9.2, 9.2)


def test_augmentations_tutorial(workdir: Path):
    """Its command reads the embedded demo data (no machine path) and writes the grid."""
    (out,) = run_tutorial("augmentations.md", workdir, OVERRIDES)
    assert out.startswith("wrote outputs/augmentations/aug.png")
    png = Image.open(workdir / "outputs" / "augmentations" / "aug.png")
    assert png.format == "PNG" and png.size[0] > 3 * 160
