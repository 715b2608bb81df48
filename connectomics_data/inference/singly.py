"""``INFERENCE.DO_SINGLY``: load, predict and write one input file at a time (resumable, shardable).

Files are visited in ``range(start_index, len(files), |step|)`` order, reversed when ``step < 0``
(PyTC v1). A file whose output already exists and is ours (complete by construction: outputs
are renamed into place only when finished) is skipped, so an interrupted job can simply be
restarted, and several jobs with different ``start_index`` / ``step`` share one file list.
An existing output that is not ours raises :class:`OutputError` unless ``overwrite``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, OutputError
from .engine import SlidingWindowInference, predict_volumes_to_file
from .naming import format_output_name, validate_template
from .outputs import check_output_format, is_our_output

log = logging.getLogger(__name__)


def singly_order(n: int, start_index: int = 0, step: int = 1) -> list[int]:
    """Indices visited by one job: ``range(start, n, |step|)``, reversed for a negative step."""
    if step == 0:
        raise ConfigError("INFERENCE.DO_SINGLY_STEP must not be 0")
    if start_index < 0:
        raise ConfigError(f"INFERENCE.DO_SINGLY_START_INDEX must be >= 0, got {start_index}")
    order = list(range(start_index, n, abs(step)))
    return order[::-1] if step < 0 else order


@dataclass
class SinglyResult:
    """Per visited file: the output path and whether it was ``written`` or ``skipped``."""

    written: list[Path]
    skipped: list[Path]


def predict_singly(
    files: Sequence[str],
    open_fn: Callable[[str], object],
    inference: SlidingWindowInference,
    output_dir: str | Path,
    output_name_template: str = "result.h5",
    start_index: int = 0,
    step: int = 1,
    normalizer_fn: Callable[[object], Callable] | None = None,
    output_format: str = "h5",
    overwrite: bool = False,
    compression: str | None = "gzip",
) -> SinglyResult:
    """Predict each file of this job's share into its own output file.

    Args:
        files: all input files (the same list in every job).
        open_fn: path -> ``Volume`` (e.g. ``open_volume``; for LOAD_2D images one-slice volumes).
        inference: the configured sliding-window engine.
        output_dir: directory of the outputs (created if needed).
        output_name_template: ``INFERENCE.OUTPUT_NAME`` (see :mod:`.naming`).
        start_index, step: ``INFERENCE.DO_SINGLY_START_INDEX`` / ``DO_SINGLY_STEP``.
        normalizer_fn: volume -> normaliser (e.g. ``normalizer_for`` with MEAN/STD/MATCH_ACT);
            None feeds raw values cast to float32.
        output_format: 'h5' | 'zarr'; each output holds one dataset ``vol0``.
        overwrite: replace existing outputs (ours or not) instead of skipping/refusing.

    Returns:
        The outputs written and skipped, in visiting order.
    """
    check_output_format(output_format)
    validate_template(output_name_template)
    order = singly_order(len(files), start_index, step)
    out_dir = Path(output_dir)
    names = {i: format_output_name(output_name_template, files[i], i, output_format) for i in order}
    seen: dict[str, int] = {}
    for i in order:
        if names[i] in seen:
            raise ConfigError(
                f"INFERENCE.OUTPUT_NAME {output_name_template!r} gives the same output {names[i]!r} "
                f"for {files[seen[names[i]]]} and {files[i]}; use {{stem}} or {{index}}"
            )
        seen[names[i]] = i
    result = SinglyResult([], [])
    for k, i in enumerate(order):
        target = out_dir / names[i]
        if target.exists() and not overwrite:
            if not is_our_output(target):
                raise OutputError(
                    f"{target} exists and is not a prediction written by connectomics_data; "
                    "refusing to overwrite it (pass overwrite=True or change INFERENCE.OUTPUT_NAME)"
                )
            log.info("skip %s: %s exists", files[i], target)
            result.skipped.append(target)
            continue
        volume = open_fn(files[i])
        normalizer = normalizer_fn(volume) if normalizer_fn is not None else None
        predict_volumes_to_file(
            inference,
            [volume],
            target,
            output_format,
            [normalizer],
            overwrite=overwrite,
            compression=compression,
            progress_desc=f"file {k + 1}/{len(order)} {Path(files[i]).name}",
        )
        result.written.append(target)
    return result
