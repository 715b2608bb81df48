"""connectomics_data.progress: plain lines off a terminal (rate, ETA, final line), a tqdm bar on
one, silence for short jobs and with CONNECTOMICS_DATA_PROGRESS=0; and the inference paths
(volumes, DO_SINGLY, chunks) report through it."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from connectomics_data import progress as progress_mod
from connectomics_data.geometry import ChunkGrid
from connectomics_data.inference import (
    InferenceSettings,
    SlidingWindowInference,
    predict_chunked,
    predict_singly,
)
from connectomics_data.io.base import ArrayVolume
from connectomics_data.progress import Progress, format_seconds


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_with_counts_rate_eta_and_a_final_line(monkeypatch):
    monkeypatch.delenv(progress_mod.ENV, raising=False)
    out = io.StringIO()
    with Progress(total=4, desc="predict a.h5", unit="window", interval=0, stream=out) as bar:
        bar.update(1)
        bar.update(2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"predict a\.h5: 1/4 windows \(25%\), [0-9.e+]+ windows/s, ETA [0-9.]+s", lines[0]), lines[0]
    assert lines[1].startswith("predict a.h5: 3/4 windows (75%), ")
    assert re.fullmatch(r"predict a\.h5: 3/4 windows \(75%\) in [0-9.]+s, [0-9.e+]+ windows/s", lines[2]), lines[2]


def test_short_jobs_and_disabled_reporters_print_nothing(monkeypatch):
    monkeypatch.delenv(progress_mod.ENV, raising=False)
    out = io.StringIO()
    with Progress(total=10, desc="x", interval=60, stream=out) as bar:
        bar.update(10)
    with Progress(total=10, desc="x", interval=0, stream=out, enabled=False) as bar:
        bar.update(10)
    monkeypatch.setenv(progress_mod.ENV, "0")
    with Progress(total=10, desc="x", interval=0, stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""
    assert bar.n == 10


def test_terminal_gets_a_tqdm_bar_unless_lines_are_forced(monkeypatch):
    monkeypatch.delenv(progress_mod.ENV, raising=False)
    tty = Tty()
    with Progress(total=4, desc="chunks", unit="chunk", stream=tty) as bar:
        bar.update(3)
    assert "chunks" in tty.getvalue() and "3/4" in tty.getvalue()
    monkeypatch.setenv(progress_mod.ENV, "lines")
    tty = Tty()
    with Progress(total=4, desc="chunks", unit="chunk", stream=tty, interval=0) as bar:
        bar.update(3)
    assert tty.getvalue().splitlines()[0].startswith("chunks: 3/4 chunks (75%)")


def test_format_seconds():
    assert [format_seconds(s) for s in (2.46, 59, 75.3, 4000)] == ["2.5s", "59s", "1m15s", "1h06m40s"]


@pytest.fixture
def lines(monkeypatch, capsys):
    """Plain progress lines on every update: returns a function giving the lines printed so far."""
    monkeypatch.delenv(progress_mod.ENV, raising=False)
    monkeypatch.setattr(progress_mod, "DEFAULT_INTERVAL", 0.0)
    capsys.readouterr()
    return lambda: capsys.readouterr().err.splitlines()


def _engine():
    s = InferenceSettings(input_size=(4, 16, 16), stride=(4, 16, 16), output_dtype="float32", batch_size=2)
    return SlidingWindowInference(lambda x: x, s)


def test_inference_paths_report_windows_and_items(lines, tmp_path):
    vol = ArrayVolume(np.zeros((8, 32, 32), np.float32), path="/d/img.h5")  # 2 x 2 x 2 = 8 windows
    engine = _engine()
    engine.predict(vol)
    got = lines()
    assert [g.split(",")[0] for g in got] == [f"predict img.h5: {k}/8 windows ({25 * k // 2}%)" for k in (2, 4, 6)] + [
        "predict img.h5: 8/8 windows (100%) in " + got[-1].split(" in ")[1].split(",")[0]]
    vols = {"/d/a.h5": vol, "/d/b.h5": vol}
    predict_singly(list(vols), vols.__getitem__, engine, tmp_path / "s")
    got = lines()
    assert got[0].startswith("file 1/2 a.h5: 2/8 windows") and got[-1].startswith("file 2/2 b.h5: 8/8 windows (100%) in")
    predict_chunked(vol, ChunkGrid((8, 32, 32), (1, 2, 1), overlap=False), engine, tmp_path / "c.zarr")
    got = lines()
    assert got[0].startswith("chunk 1/2 (id 0): 2/4 windows") and got[-1].startswith("chunk 2/2 (id 1): 4/4 windows")
    engine.show_progress = False
    engine.predict(vol)
    assert lines() == []
