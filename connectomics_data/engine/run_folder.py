"""One run per ``DATASET.OUTPUT_PATH``: a new training run never mixes with the previous one.

A training run writes ``config.yaml``, ``log.jsonl``, ``checkpoint_*.pth.tar``,
``checkpoint_latest.txt``, ``validation*.png`` and ``tensorboard/`` into the output folder. When
a *new* run (no ``--checkpoint``) starts in a folder that already holds such files, they are
moved, untouched, into ``<OUTPUT_PATH>/previous_runs/<start time of that run>/`` first; nothing is
deleted. So the output folder always holds the newest run alone (and the commands of the README
and the tutorials, which read ``<OUTPUT_PATH>/checkpoint_latest.txt``, work when run twice), and
every earlier run stays readable beside it.

A resume (``--checkpoint FILE`` without ``SOLVER.ITERATION_RESTART``) is explicit and continues
in place: ``log.jsonl`` is appended to and checkpoints are added. A restart from a checkpoint
(``ITERATION_RESTART``) is a new run; taking its checkpoint from the folder it would clear is
refused (one error naming ``DATASET.OUTPUT_PATH``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import ConfigError

#: file name patterns a training run writes into its output folder
RUN_FILES = ("config.yaml", "log.jsonl", "checkpoint_*.pth.tar", "checkpoint_latest.txt",
             "validation*.png", "tensorboard")
ARCHIVE = "previous_runs"


def previous_run_files(out_dir: Path) -> list[Path]:
    """The files of an earlier training run in ``out_dir`` (sorted; empty when none)."""
    if not out_dir.is_dir():
        return []
    found = {p for pattern in RUN_FILES for p in out_dir.glob(pattern)}
    return sorted(found)


def _start_stamp(files: list[Path]) -> str:
    first = min(p.stat().st_mtime for p in files)
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(first))


def archive_previous_run(out_dir: str | Path) -> Path | None:
    """Move an earlier run's files from ``out_dir`` into ``out_dir/previous_runs/<stamp>/``.

    Returns the archive folder, or None when ``out_dir`` held no run. The stamp is the time the
    earlier run's oldest file was written (``YYYYmmdd-HHMMSS``, suffixed ``-2``, ``-3`` ... when
    taken).
    """
    out = Path(out_dir)
    files = previous_run_files(out)
    if not files:
        return None
    stamp = _start_stamp(files)
    target = out / ARCHIVE / stamp
    n = 2
    while target.exists():
        target = out / ARCHIVE / f"{stamp}-{n}"
        n += 1
    target.mkdir(parents=True)
    for path in files:
        os.replace(path, target / path.name)
    return target


def prepare_run_folder(out_dir: str | Path, checkpoint: str | None, restart: bool) -> Path | None:
    """Before a training run: archive the previous run unless this is a resume.

    Args:
        out_dir: ``DATASET.OUTPUT_PATH``.
        checkpoint: ``--checkpoint`` (None for a new run).
        restart: ``SOLVER.ITERATION_RESTART`` (a checkpoint then only initialises a new run).

    Returns:
        The archive folder of the previous run, or None (nothing moved).
    """
    if checkpoint and not restart:
        return None  # an explicit resume continues in place
    check_run_folder(out_dir, checkpoint, restart)
    return archive_previous_run(out_dir)


def check_run_folder(out_dir: str | Path, checkpoint: str | None, restart: bool) -> None:
    """Refuse a restart whose ``--checkpoint`` lies among the files the new run would move
    (every distributed rank calls this, so all fail together; only rank 0 moves files)."""
    out = Path(out_dir)
    if not checkpoint or not restart:
        return
    files = previous_run_files(out)
    if Path(checkpoint).resolve() in {p.resolve() for p in files}:
        raise ConfigError(
            f"--checkpoint {checkpoint} lies in DATASET.OUTPUT_PATH {out_dir}, and "
            "SOLVER.ITERATION_RESTART starts a new run there (which moves the earlier run to "
            f"{ARCHIVE}/); set DATASET.OUTPUT_PATH to another folder, or resume without "
            "ITERATION_RESTART"
        )


__all__ = ["ARCHIVE", "RUN_FILES", "archive_previous_run", "check_run_folder", "prepare_run_folder", "previous_run_files"]
