"""Sliding-window inference: blending, test-time augmentation, 2D, per-file and per-chunk runs.

Modules, in data-flow order: :mod:`.plan` (window geometry), :mod:`.reader` (lazy batched reads
with prefetch), :mod:`.tta` (variants, running reduction), :mod:`.blending` (weight maps),
:mod:`.accumulate` (in-memory or on-disk sums), :mod:`.sinks` / :mod:`.outputs` (atomic
HDF5/zarr outputs), :mod:`.engine` (the loop), :mod:`.singly` (``DO_SINGLY``), :mod:`.chunked`
(``DO_CHUNK_TITLE``), :mod:`.naming` (safe ``OUTPUT_NAME`` templates), :mod:`.from_cfg`
(PyTC config adapters), :mod:`.distributed` (``torch.distributed`` shards) and :mod:`.blockwise`
(daisy blocks: many workers and machines, resumable; imported on demand).
"""

from .blending import BLENDING_MODES, blending_weights
from .chunked import ChunkedResult, VolumeView, aligned_chunks, chunk_file_name, predict_chunked
from .engine import InferenceSettings, RunStats, SlidingWindowInference, predict_volumes_to_file
from .from_cfg import (
    InferenceReport,
    build_inference_from_cfg,
    build_normalizer_fn_from_cfg,
    inference_settings_from_cfg,
    output_dir_from_cfg,
    run_inference_from_cfg,
)
from .naming import format_output_name
from .outputs import check_output_path, is_our_output, prediction_file
from .plan import WindowPlan
from .singly import SinglyResult, predict_singly, singly_order
from .sinks import ArraySink, Hdf5Sink, Sink, ZarrSink, to_output_dtype
from .tta import TestTimeAugmentation, tta_variants

__all__ = [
    "BLENDING_MODES",
    "ArraySink",
    "ChunkedResult",
    "Hdf5Sink",
    "InferenceReport",
    "InferenceSettings",
    "RunStats",
    "SinglyResult",
    "Sink",
    "SlidingWindowInference",
    "TestTimeAugmentation",
    "VolumeView",
    "WindowPlan",
    "ZarrSink",
    "aligned_chunks",
    "blending_weights",
    "build_inference_from_cfg",
    "build_normalizer_fn_from_cfg",
    "check_output_path",
    "chunk_file_name",
    "format_output_name",
    "inference_settings_from_cfg",
    "is_our_output",
    "output_dir_from_cfg",
    "predict_chunked",
    "predict_singly",
    "predict_volumes_to_file",
    "prediction_file",
    "run_inference_from_cfg",
    "singly_order",
    "tta_variants",
    "to_output_dtype",
]
