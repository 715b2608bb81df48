"""Command line of ``scripts/train.py`` (compatible with PyTC's ``scripts/main.py``)."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
import warnings
from pathlib import Path

import torch

from ..errors import ConnectomicsDataError
from ..io.atomic import ensure_directory


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train (default) or predict (--inference) with a PyTC v1-style YAML config.",
        epilog="Trailing KEY VALUE pairs override config keys, e.g. SOLVER.ITERATION_TOTAL 100.",
    )
    p.add_argument("--config-file", required=True, help="YAML config (also looked up under configs/)")
    p.add_argument("--config-base", default=None, help="base YAML merged before --config-file")
    p.add_argument("--inference", action="store_true", help="predict INFERENCE.IMAGE_NAME with --checkpoint")
    p.add_argument("--checkpoint", default=None, help="checkpoint to resume from / predict with")
    p.add_argument("--manual-seed", type=int, default=None, help="overrides SYSTEM.SEED")
    p.add_argument("--distributed", action="store_true", help="DistributedDataParallel (launch with torchrun)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--local_world_size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides (before or after the options; "
                   "after '--' everything is a KEY VALUE pair)")
    return p


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _inference(cfg, args) -> int:
    from ..datasets import resolve_input_path
    from ..inference import run_inference_from_cfg
    from ..io import resolve_volume_specs
    from ..models import build_model
    from .checkpoint import load_checkpoint
    from .losses import prediction_activation
    from .trainer import target_channels

    if not args.checkpoint:
        raise ConnectomicsDataError("--inference needs --checkpoint FILE (a checkpoint written by training)")
    d = cfg.DATASET
    if d.IMAGE_NAME is None:
        raise ConnectomicsDataError("no input: set INFERENCE.IMAGE_NAME (or DATASET.IMAGE_NAME)")
    info = None
    if args.distributed:  # sharded inference: every rank predicts its share (inference/distributed.py)
        from .distributed import init_distributed

        info = init_distributed(cfg)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    try:
        device = info.device if info else _device()
        model = build_model(cfg, device)
        load_checkpoint(args.checkpoint, model)
        model.eval()
        files = resolve_volume_specs(d.IMAGE_NAME, resolve_input_path(d.INPUT_PATH), bool(d.IS_ABSOLUTE_PATH),
                                     bool(d.LOAD_2D), what="INFERENCE.IMAGE_NAME")
        activation = prediction_activation(cfg, target_channels(cfg))
        report = run_inference_from_cfg(cfg, model, files, activation=activation, device=device,
                                        rank=info.rank if info else 0, world_size=info.world_size if info else 1)
    finally:
        if info is not None:
            from .distributed import cleanup

            cleanup()
    if info is None or info.is_main:
        for out in report.outputs:
            print(f"wrote {out}")
        if report.mode == "chunked" and report.skipped:
            from ..inference.chunked import progress_dir

            out = report.outputs[0]
            print(f"skipped {len(report.skipped)} chunk(s) already predicted into {out} (chunk ids "
                  f"{', '.join(map(str, report.skipped))}; their markers are in {progress_dir(out)})")
        else:
            for skipped in report.skipped:
                print(f"skipped (output exists) {skipped}")
    return 0


def _train(cfg, args) -> int:
    from ..config import save_cfg
    from .trainer import Trainer, format_final_line, set_threads

    info = None
    if args.distributed:
        from .distributed import init_distributed

        info = init_distributed(cfg)
    rank = info.rank if info else 0
    out = Path(cfg.DATASET.OUTPUT_PATH)
    if rank == 0:
        ensure_directory(out, "output directory (DATASET.OUTPUT_PATH)")
    from .run_folder import check_run_folder, prepare_run_folder

    check_run_folder(out, args.checkpoint, bool(cfg.SOLVER.ITERATION_RESTART))
    set_threads(cfg, info.world_size if info else 1)
    try:
        trainer = Trainer(cfg, info.device if info else _device(), checkpoint=args.checkpoint,
                          rank=rank, world_size=info.world_size if info else 1, dist_info=info)
        if rank == 0:  # after the model and checkpoint loaded: a failing start moves nothing
            moved = prepare_run_folder(out, args.checkpoint, bool(cfg.SOLVER.ITERATION_RESTART))
            if moved is not None:
                print(f"the previous run in {out} was moved to {moved} (a new run starts; resume "
                      "with --checkpoint to continue one)", flush=True)
            ensure_directory(out, "output directory (DATASET.OUTPUT_PATH)")
            save_cfg(cfg, out / "config.yaml")
        result = trainer.train()
    finally:
        if info is not None:
            from .distributed import cleanup

            cleanup()
    if rank == 0:
        print(format_final_line(result))
    return 0


def one_line_message(err: BaseException) -> str:
    """The error's message on one line; for an error re-raised from a DataLoader worker (whose
    text is torch's "Caught X in DataLoader worker process N. Original Traceback ..."), the
    worker's original message, without the traceback."""
    text = str(err)
    if "Original Traceback" in text:
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        at = text.rfind(prefix)
        if at >= 0:
            text = text[at + len(prefix):]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from .startup import IgnoredSettingWarning

    stream = file or sys.stderr
    if issubclass(category, IgnoredSettingWarning):
        stream.write(f"warning: {message}\n")
    else:
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))


def interrupted_message(err: BaseException, cfg, inference: bool) -> str:
    """One line for an interrupted run: the signal, and what is kept on disk."""
    what = f"terminated by {err.name}" if hasattr(err, "signum") and hasattr(err, "name") else "interrupted"
    if cfg is None:
        return f"{what} while reading the config"
    if inference:
        return f"{what}: finished outputs are kept; run the same command again to resume"
    latest = Path(cfg.DATASET.OUTPUT_PATH) / "checkpoint_latest.txt"
    try:
        name = latest.read_text().strip()
    except OSError:
        name = ""
    if not name:
        return f"{what} before the first checkpoint was written (nothing to resume from)"
    path = latest.parent / name
    return f"{what}: the last checkpoint written, {path}, is intact (resume with --checkpoint {path})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tail = []
    if "--" in argv:  # everything after '--' is KEY VALUE pairs, even values starting with '-'
        split = argv.index("--")
        argv, tail = argv[:split], argv[split + 1:]
    # intermixed: options may follow the KEY VALUE pairs ('KEY VALUE --checkpoint F' works)
    args = build_parser().parse_intermixed_args(argv)
    opts = list(args.opts) + tail
    if args.manual_seed is not None:
        opts += ["SYSTEM.SEED", str(args.manual_seed)]
    from ..config import UnusedPyTCKeysWarning, load_cfg

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", UnusedPyTCKeysWarning)
            cfg = load_cfg(args.config_file, args.config_base, opts, inference=args.inference,
                           distributed=args.distributed)
        if args.distributed and "RANK" not in os.environ:
            raise ConnectomicsDataError("--distributed needs torchrun (RANK / WORLD_SIZE in the environment): "
                                        "torchrun --nproc_per_node=N scripts/train.py --distributed ...")
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # ours as one 'warning: ...' line
            return _inference(cfg, args) if args.inference else _train(cfg, args)
    except ConnectomicsDataError as err:
        print(f"error: {one_line_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM / SIGHUP (datasets.chunk_cleanup)
        message = interrupted_message(err, locals().get("cfg"), args.inference)
        status = 128 + int(getattr(err, "signum", 2))
        traceback.clear_frames(err.__traceback__)  # stop DataLoader workers before printing
    gc.collect()
    print(message, file=sys.stderr)
    return status
