"""Command line of ``scripts/predict_blockwise.py``: blockwise inference on daisy.

    python scripts/predict_blockwise.py --config-file F --checkpoint C --workers N [KEY VALUE ...]
    python scripts/predict_blockwise.py --join OUTPUT.zarr        # one more worker, any host

The config keys are those of ``scripts/train.py --inference``; the output is
``INFERENCE.OUTPUT_PATH / INFERENCE.OUTPUT_NAME`` as one zarr (the file
``train.py --inference ... INFERENCE.OUTPUT_FORMAT zarr`` writes, byte for byte). See
:mod:`connectomics_data.inference.blockwise` and ``tutorials/scaling.md``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, ConfigError, ConnectomicsDataError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Predict INFERENCE.IMAGE_NAME block by block on daisy workers into one zarr; "
        "rerun the same command to resume.",
        epilog="Trailing KEY VALUE pairs override config keys, as for scripts/train.py.",
    )
    p.add_argument("--config-file", help="YAML config (also looked up under configs/)")
    p.add_argument("--config-base", default=None, help="base YAML merged before --config-file")
    p.add_argument("--checkpoint", default=None, help="checkpoint written by training")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (each loads the model once; one GPU each); "
                        "0 predicts in this process")
    p.add_argument("--block-size", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                   help="block write size, rounded up to whole output chunks (default: 8 strides in z, "
                        "16 in y and x, at least 2 windows); larger blocks recompute fewer border windows")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores // workers)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available (worker k takes GPU k %% visible GPUs)")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a failing block (default 2)")
    p.add_argument("--block-timeout", type=float, default=None,
                   help="seconds after which a block's worker is killed and the block retried (default: none)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output and its progress first")
    p.add_argument("--host", default=None, help="address workers connect to (default: detected; "
                   "127.0.0.1 keeps the scheduler private to this machine)")
    p.add_argument("--worker-command", default=None,
                   help="run each worker slot as this shell command (e.g. \"srun -n1 --gpus=1 python "
                        "scripts/predict_blockwise.py --join {output}\"); DAISY_CONTEXT is exported")
    p.add_argument("--join", metavar="OUTPUT", default=None,
                   help="run one worker for the running blockwise run writing OUTPUT (another shell or host)")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides")
    return p


def cfg_engine(device, cfg, checkpoint: str):
    """The engine of ``train.py --inference``: model from ``cfg`` + ``checkpoint`` on ``device``."""
    from ..inference import build_inference_from_cfg
    from ..models import build_model
    from .checkpoint import load_checkpoint
    from .losses import prediction_activation
    from .trainer import target_channels

    model = build_model(cfg, device)
    load_checkpoint(checkpoint, model)
    model.eval()
    activation = prediction_activation(cfg, target_channels(cfg))
    return build_inference_from_cfg(cfg, model, activation, device)


def _model_id(checkpoint: Path, cfg) -> str:
    """The checkpoint and the keys that change the prediction outside InferenceSettings: a
    resume with any of them changed is refused."""
    st = checkpoint.stat()
    keys = ("DATASET.MEAN", "DATASET.STD", "DATASET.MATCH_ACT", "DATASET.NORMALIZE_RANGE", "INFERENCE.OUTPUT_ACT",
            "INFERENCE.DO_EVAL", "MODEL.ARCHITECTURE", "MODEL.TARGET_OPT")
    values = ", ".join(f"{k}={cfg[k.split('.')[0]].get(k.split('.')[1])}" for k in keys)
    return f"{checkpoint.resolve()} ({st.st_size} bytes, mtime {st.st_mtime_ns}); {values}"


def run(args, opts: list[str]) -> int:
    from ..config import UnusedPyTCKeysWarning, load_cfg
    from ..datasets import resolve_input_path
    from ..inference.blockwise import predict_blockwise, progress_dir
    from ..inference.from_cfg import (
        _all_ones,
        _default_open_fn,
        _get,
        build_normalizer_fn_from_cfg,
        inference_settings_from_cfg,
        output_dir_from_cfg,
    )
    from ..inference.outputs import with_extension
    from ..io import resolve_volume_specs
    from .trainer import target_channels

    if not args.config_file:
        raise ConfigError("--config-file is required (or --join OUTPUT to add a worker to a running run)")
    with warnings.catch_warnings():
        warnings.simplefilter("always", UnusedPyTCKeysWarning)
        cfg = load_cfg(args.config_file, args.config_base, opts, inference=True)
    if not args.checkpoint:
        raise CheckpointError("predict_blockwise.py needs --checkpoint FILE (a checkpoint written by training)")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    for key in ("INFERENCE.DO_SINGLY", "INFERENCE.DO_CHUNK_TITLE", "DATASET.DO_CHUNK_TITLE"):
        if _get(cfg, key, False):
            raise ConfigError(f"{key} is not used by blockwise inference (it predicts one volume in blocks "
                              "itself); unset it, or use scripts/train.py --inference")
    if not _all_ones(_get(cfg, "INFERENCE.OUTPUT_SCALE")):
        raise ConfigError(f"INFERENCE.OUTPUT_SCALE {list(_get(cfg, 'INFERENCE.OUTPUT_SCALE'))} is not supported by "
                          "blockwise inference (blocks are written at the input's scale); use [1.0, 1.0, 1.0]")
    d = cfg.DATASET
    if d.IMAGE_NAME is None:
        raise ConfigError("no input: set INFERENCE.IMAGE_NAME (or DATASET.IMAGE_NAME)")
    name = str(_get(cfg, "INFERENCE.OUTPUT_NAME", "result.h5"))
    if "{" in name:
        raise ConfigError(f"INFERENCE.OUTPUT_NAME {name!r}: templates apply to DO_SINGLY only")
    files = resolve_volume_specs(d.IMAGE_NAME, resolve_input_path(d.INPUT_PATH), bool(d.IS_ABSOLUTE_PATH),
                                 bool(d.LOAD_2D), what="INFERENCE.IMAGE_NAME")
    open_fn = _default_open_fn(cfg)
    volumes = [open_fn(f) for f in files]
    settings = inference_settings_from_cfg(cfg)
    # fail here, once, on a checkpoint that does not fit, rather than in every worker
    cfg_engine("cpu", cfg, str(checkpoint))
    output = output_dir_from_cfg(cfg) / with_extension(name, "zarr")
    _note_threads(args.threads, args.workers, args.device)
    result = predict_blockwise(
        functools.partial(cfg_engine, cfg=cfg, checkpoint=str(checkpoint.resolve())),
        settings, volumes, output, channels=sum(target_channels(cfg)),
        normalizer_fn=build_normalizer_fn_from_cfg(cfg), workers=args.workers, block_shape=args.block_size,
        threads=args.threads, device=args.device, overwrite=args.overwrite, max_retries=args.max_retries,
        block_timeout=args.block_timeout, model_id=_model_id(checkpoint, cfg), host=args.host,
        worker_command=args.worker_command, scheduler_log=True,
    )
    if args.block_size is not None and tuple(args.block_size) != tuple(result.block_shape):
        print(f"note: --block-size {list(args.block_size)} was rounded up to whole output chunks: "
              f"{list(result.block_shape)}", file=sys.stderr)
    summary = (f"{result.blocks} blocks of {list(result.block_shape)}: {result.done} predicted, "
               f"{result.skipped} done earlier, {len(result.failed)} failed, {result.seconds:.1f} s")
    if result.failed:
        for f in result.failed:
            print(f"failed: {f.describe()}", file=sys.stderr)
        print(f"error: {len(result.failed)} of {result.blocks} blocks of {output} failed ({summary}); fix the cause "
              f"and rerun the same command to retry only them (worker logs: {progress_dir(output) / 'logs'})",
              file=sys.stderr)
        return 1
    print(f"wrote {output} ({summary})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cli import one_line_message

    argv = list(sys.argv[1:] if argv is None else argv)
    tail = []
    if "--" in argv:
        split = argv.index("--")
        argv, tail = argv[:split], argv[split + 1:]
    args = build_parser().parse_intermixed_args(argv)
    try:
        if args.join:
            from ..inference.blockwise import join_blockwise

            done = join_blockwise(args.join)
            if done is None:
                print(f"no scheduler is running for {args.join} (the run has ended, or start it first); "
                      "nothing to do")
            else:
                print(f"worker finished {done} blocks of {args.join}")
            return 0
        return run(args, list(args.opts) + tail)
    except ConnectomicsDataError as err:
        print(f"error: {one_line_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished blocks are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())


def _note_threads(threads: int | None, workers: int, device: str) -> None:
    """Say when CPU workers run with another torch thread count than ``train.py --inference``
    uses on this machine: a CPU convolution's last float bits depend on it, so the output is
    then equal to the single-process one only up to rounding (measured: 3.6e-7 max on the demo
    model over 20x1024x1024), not byte for byte."""
    import torch

    if workers <= 0 or device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return
    single = max(1, os.cpu_count() or 1)
    per_worker = threads if threads is not None else max(1, single // max(1, workers))
    if per_worker != single:
        print(f"note: {per_worker} torch thread(s) per worker, while train.py --inference uses {single} "
              f"here; float values may differ from its output in the last bits (pass --threads {single} "
              "for a byte-identical output, at the cost of oversubscribing the cores)", file=sys.stderr)
