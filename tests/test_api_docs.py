"""The pdoc API reference builds (scripts/build_api_docs.py) and carries the Batch contract."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pdoc")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_api_docs  # noqa: E402


def test_public_modules_cover_the_package_and_skip_private_ones():
    names = build_api_docs.public_modules()
    assert names[0] == "connectomics_data"
    for name in ("connectomics_data.loader.batch", "connectomics_data.io.tiles.volume",
                 "connectomics_data.augment.compose", "connectomics_data.config.schema"):
        assert name in names
    assert not any(part.startswith("_") for name in names for part in name.split("."))
    has_lightning = importlib.util.find_spec("lightning") is not None
    assert ("connectomics_data.lightning" in names) == has_lightning


def test_a_small_build_has_the_top_level_api_and_the_batch_contract(tmp_path: Path):
    out = tmp_path / "api"
    build_api_docs.build(out, ["connectomics_data", "connectomics_data.loader.batch"])
    top = (out / "connectomics_data.html").read_text()
    for name in ("load_cfg", "build_dataloader", "DevicePrefetcher", "Compose", "Box"):
        assert f'id="{name}"' in top, name
    batch = (out / "connectomics_data" / "loader" / "batch.html").read_text()
    assert "<table>" in batch and "after <code>.to(device)</code>" in batch
    assert (out / "index.html").exists() and (out / "search.js").exists()


@pytest.mark.slow
def test_the_full_reference_builds(tmp_path: Path):
    out = tmp_path / "api"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_api_docs.py"), "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Couldn't import" not in proc.stderr and "Error loading" not in proc.stderr, proc.stderr[-3000:]
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    assert len(pages) == len(build_api_docs.public_modules()) + 1  # + index.html
    assert "connectomics_data/lightning.html" in pages or importlib.util.find_spec("lightning") is None
