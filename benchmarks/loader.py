"""Training-loader benchmark: samples/s, peak memory of the process tree, and where time goes.

Drives the real path: ``load_cfg`` + command-line opts -> ``build_dataloader`` (DataLoader
workers, SharedArrayVolume preload, rejection sampling, augmentation, targets, weights,
collate) -> ``batch.to('cpu')``. A sample counts once its normalised float32 image, targets and
weights are ready in the training process (after ``batch.to``); the first batch (worker start
and warm-up) is excluded from the rate and reported as ``startup_s``.

Memory: a thread samples the process tree (this process and every descendant: DataLoader
workers, the resource tracker) every 0.1 s and sums ``Pss`` from ``/proc/<pid>/smaps_rollup``
(shared pages split between the processes mapping them, so the preloaded volume counts once)
and ``VmRSS`` from ``/proc/<pid>/status`` (shared pages counted in every process).

Stages: a short single-process profile (``num_workers=0``) of the same dataset with
``time.perf_counter`` hooks around ``VolumeDataset._read`` (read), the augmentor call
(augment), ``judge`` and the screen (reject), ``seg_to_targets`` + ``seg_to_weights``
(targets), ``collate_samples`` (collate) and ``Batch.to`` (normalize); reported in seconds per
sample, measured in-process, so they add up to the single-worker cost of a sample
(``other`` = the rest of ``__getitem__``: positions, label transforms, copies).

Floor (``--floor-seconds``): the same DataLoader over copies of one real sample, so only
collate, the worker -> trainer transfer and ``Batch.to`` remain: the rate no dataset producing
samples of these shapes and dtypes can exceed with this loader.

Usage::

    python benchmarks/loader.py --image A.h5 --label B.h5 --size 17 257 257 --batch 4 \\
        --workers 2 --seconds 30 --aug {none,full} [--config-file F] [--pad 2 64 64] \\
        [--size-thres N] [--floor-seconds S] [--cprofile] [--opts KEY VALUE ...]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import connectomics_data.datasets.volume_dataset as vd  # noqa: E402
from connectomics_data.config import load_cfg  # noqa: E402
from connectomics_data.datasets import build_dataset  # noqa: E402
from connectomics_data.loader import build_dataloader, collate_samples  # noqa: E402
from connectomics_data.loader.batch import Batch  # noqa: E402
from connectomics_data.loader.build import loader_mode  # noqa: E402
from connectomics_data.loader.finish import finish_batch  # noqa: E402


# ------------------------------------------------------------------ memory of the process tree
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += _children(pid)
    return seen


def _field_kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_mb(root: int) -> tuple[float, float]:
    """(summed Pss, summed VmRSS) in MiB over the process tree of ``root``."""
    pss = rss = 0
    for pid in process_tree(root):
        pss += _field_kb(f"/proc/{pid}/smaps_rollup", "Pss")
        rss += _field_kb(f"/proc/{pid}/status", "VmRSS")
    return pss / 1024, rss / 1024


def pss_breakdown_mb(root: int) -> dict[str, float]:
    """Where the tree's Pss lies, in MiB: ``shared_files`` (``/dev/shm`` and other shared
    mappings: the preloaded volumes, chunk slots, torch's per-batch shared tensors),
    ``private_anon`` (heap and anonymous memory: Python/torch runtime, batches being made or
    held), ``code`` (mapped libraries); and ``per_process`` (total Pss per pid, main first)."""
    out = {"shared_files": 0.0, "private_anon": 0.0, "code": 0.0}
    per: dict[str, float] = {}
    for pid in process_tree(root):
        name, total = "", 0
        try:
            with open(f"/proc/{pid}/smaps") as f:
                for line in f:
                    head = line.split(None, 1)[0]
                    if "-" in head and not head.endswith(":"):
                        parts = line.split()
                        name = parts[5] if len(parts) > 5 else ""
                    elif head == "Pss:":
                        kb = int(line.split()[1])
                        total += kb
                        if name.startswith(("/dev/shm", "/memfd:", "/SYSV")) or "(deleted)" in line:
                            out["shared_files"] += kb / 1024
                        elif name == "" or name.startswith("["):
                            out["private_anon"] += kb / 1024
                        elif name.startswith("/dev/shm") or "torch_" in name:
                            out["shared_files"] += kb / 1024
                        else:
                            out["code"] += kb / 1024
        except OSError:
            continue
        per[str(pid)] = total / 1024
    out = {k: round(v, 1) for k, v in out.items()}
    out["per_process"] = {k: round(v, 1) for k, v in per.items()}
    return out


def tree_cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each process of the tree of ``root``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


class MemorySampler(threading.Thread):
    """Records the peak summed Pss / VmRSS of the process tree every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_pss = self.peak_rss = 0.0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        pss, rss = tree_memory_mb(os.getpid())
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


# ------------------------------------------------------------------ config
def build_cfg(args: argparse.Namespace):
    opts = [
        "DATASET.IMAGE_NAME", str(Path(args.image).resolve()),
        "DATASET.LABEL_NAME", str(Path(args.label).resolve()),
        "DATASET.IS_ABSOLUTE_PATH", "True",
        "MODEL.INPUT_SIZE", str(list(args.size)), "MODEL.OUTPUT_SIZE", str(list(args.size)),
        "SOLVER.SAMPLES_PER_BATCH", str(args.batch),
        "SOLVER.ITERATION_TOTAL", "1000000",
        "SYSTEM.NUM_CPUS", str(args.workers),
        "AUGMENTOR.ENABLED", str(args.aug == "full"),
        "MODEL.TARGET_OPT", "['0']", "MODEL.WEIGHT_OPT", "[['1']]",
        "MODEL.LOSS_OPTION", "[['WeightedBCE']]", "MODEL.LOSS_WEIGHT", "[[1.0]]",
        "MODEL.OUTPUT_ACT", "[['none']]", "INFERENCE.OUTPUT_ACT", "['sigmoid']", "MODEL.OUT_PLANES", "1",
        "DATASET.REJECT_SAMPLING.SIZE_THRES", str(args.size_thres),
    ]
    if args.pad is not None:
        opts += ["DATASET.PAD_SIZE", str(list(args.pad))]
    return load_cfg(args.config_file, opts=opts + list(args.opts))


# ------------------------------------------------------------------ throughput
def throughput(cfg, seconds: float) -> dict:
    sampler = MemorySampler()
    sampler.start()
    t_start = time.perf_counter()
    loader = build_dataloader(cfg, "train")
    it = iter(loader)
    first = next(it).to("cpu")
    startup = time.perf_counter() - t_start
    samples = trials = screened = 0
    cpu0 = tree_cpu_seconds(os.getpid())
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    batch = first
    while time.perf_counter() - t0 < seconds:
        batch = next(it).to("cpu")  # normalised float32 image, targets, weights ready here
        samples += len(batch)
        trials += int(batch.trials.sum())
        screened += int(batch.screened.sum())
    elapsed = time.perf_counter() - t0
    cpu1 = tree_cpu_seconds(os.getpid())
    cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    cpu_main = cpu1.get(os.getpid(), 0.0) - cpu0.get(os.getpid(), 0.0)
    breakdown = pss_breakdown_mb(os.getpid())
    sampler.stop()
    shape = list(first.image.shape)
    if hasattr(loader, "close"):
        loader.close()
    del it, loader, batch, first
    return {
        "samples_per_s": samples / elapsed,
        "samples": samples,
        "elapsed_s": elapsed,
        "startup_s": startup,
        "peak_pss_mb": sampler.peak_pss,
        "peak_rss_mb": sampler.peak_rss,
        "rejection_rate": 0.0 if trials == 0 else 1.0 - samples / trials,
        "screened_per_sample": screened / max(samples, 1),
        "cpu_cores_used": cpu / elapsed,
        "samples_per_cpu_s": samples / max(cpu, 1e-9),
        "cpu_ms_per_sample": 1000 * cpu / max(samples, 1),
        "main_cpu_ms_per_sample": 1000 * cpu_main / max(samples, 1),
        "pss_at_end_mb": breakdown,
        "load_avg_1min": [load0, os.getloadavg()[0]],
        "batch_shape": shape,
    }


class FloorDataset(torch.utils.data.Dataset):
    """Returns copies of one real sample: what is left is collate, worker -> trainer transfer
    and ``Batch.to``, the cost no dataset of these sample shapes and dtypes can avoid."""

    def __init__(self, template: dict, length: int):
        self.template, self.length = template, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        t = self.template
        return {**t, "image": t["image"].copy(), "targets": [a.copy() for a in t["targets"]],
                "weights": [[w.copy() if hasattr(w, "copy") else w for w in ws] for ws in t["weights"]]}


def transfer_floor(cfg, seconds: float) -> dict:
    template = build_dataset(cfg, "train")[0]
    loader = build_dataloader(cfg, "train", dataset=FloorDataset(template, 10**7))
    it = iter(loader)
    next(it).to("cpu")
    cpu0 = tree_cpu_seconds(os.getpid())
    samples, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        samples += len(next(it).to("cpu"))
    elapsed = time.perf_counter() - t0
    cpu1 = tree_cpu_seconds(os.getpid())
    cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    del it, loader
    nbytes = template["image"].nbytes + sum(a.nbytes for a in template["targets"])
    nbytes += sum(w.nbytes for ws in template["weights"] for w in ws if hasattr(w, "nbytes"))
    return {"transfer_floor_samples_per_s": samples / elapsed,
            "transfer_floor_samples_per_cpu_s": samples / max(cpu, 1e-9), "sample_mb": nbytes / 2**20}


# ------------------------------------------------------------------ per-stage profile
class _Timer:
    def __init__(self):
        self.t = {k: 0.0 for k in ("read", "augment", "reject", "targets", "collate", "normalize")}

    def wrap(self, key: str, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[key] += time.perf_counter() - t0
        return timed


class _TimedAugmentor:
    def __init__(self, inner, timer: _Timer):
        self.inner, self.sample_size, self.input_size = inner, inner.sample_size, inner.input_size
        self._call = timer.wrap("augment", inner.__call__)

    def __call__(self, sample, rng):
        return self._call(sample, rng)


def stage_profile(cfg, batches: int, batch_size: int, use_cprofile: bool) -> dict:
    """Single-process profile of the same dataset: seconds per sample per stage."""
    timer = _Timer()
    ds = build_dataset(cfg, "train")
    ds._read = timer.wrap("read", ds._read)
    ds._screen = timer.wrap("reject", ds._screen)
    if ds.augmentor is not None:
        ds.augmentor = _TimedAugmentor(ds.augmentor, timer)
    saved = {name: getattr(vd, name) for name in ("judge", "seg_to_targets", "seg_to_weights")}
    vd.judge = timer.wrap("reject", saved["judge"])
    vd.seg_to_targets = timer.wrap("targets", saved["seg_to_targets"])
    vd.seg_to_weights = timer.wrap("targets", saved["seg_to_weights"])
    collate = timer.wrap("collate", collate_samples)
    to = timer.wrap("normalize", (lambda b, device: finish_batch(b)) if not torch.cuda.is_available() else Batch.to)
    profiler = cProfile.Profile() if use_cprofile else None
    n = 0
    try:
        Batch.to(collate_samples([ds[0]]), "cpu")  # warm-up (imports, first allocations)
        timer.t = dict.fromkeys(timer.t, 0.0)
        if profiler is not None:
            profiler.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        for b in range(batches):
            samples = [ds[1 + b * batch_size + i] for i in range(batch_size)]
            to(collate(samples), "cpu")
            n += batch_size
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if profiler is not None:
            profiler.disable()
    finally:
        for name, fn in saved.items():
            setattr(vd, name, fn)
    stages = {k: v / n for k, v in timer.t.items()}
    stages["other"] = max(0.0, total / n - sum(stages.values()))
    out = {"stages": stages, "profile_samples": n, "single_process_samples_per_s": n / total,
           "single_process_cpu_ms_per_sample": 1000 * cpu / n}
    if profiler is not None:
        s = io.StringIO()
        pstats.Stats(profiler, stream=s).sort_stats("cumulative").print_stats(25)
        print(s.getvalue())
    return out


def _without_mode(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--mode":
            skip = True
        elif not a.startswith("--mode="):
            out.append(a)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Training DataLoader benchmark (see module docstring).")
    p.add_argument("--image", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--size", type=int, nargs=3, default=[17, 257, 257], metavar=("Z", "Y", "X"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--aug", choices=["none", "full"], default="none")
    p.add_argument("--config-file", default=None)
    p.add_argument("--pad", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="DATASET.PAD_SIZE (default: the config's)")
    p.add_argument("--size-thres", type=int, default=-1, help="DATASET.REJECT_SAMPLING.SIZE_THRES")
    p.add_argument("--profile-batches", type=int, default=10, help="batches of the single-process profile")
    p.add_argument("--cprofile", action="store_true", help="print a cProfile of the single-process profile")
    p.add_argument("--floor-seconds", type=float, default=0.0,
                   help="also time the same loader over copies of one sample (collate + transfer + .to)")
    p.add_argument("--main-threads", type=int, default=1,
                   help="torch threads of the training process (default 1: the workers own the cores; "
                        "more threads wait for a time slice at every op when the cores are busy)")
    p.add_argument("--mode", choices=["process", "thread", "both"], default=None,
                   help="SYSTEM.LOADER_MODE to time (default: the config's); 'both' times each, prints "
                        "one JSON line per mode, then the default mode's line with both in 'modes'")
    p.add_argument("--opts", nargs="*", default=[], help="extra KEY VALUE config pairs (applied last)")
    args = p.parse_args(argv)
    if args.main_threads > 0:
        torch.set_num_threads(args.main_threads)
    cfg = build_cfg(args)
    default_mode = loader_mode(cfg)
    if args.mode == "both":  # each mode in a fresh process: one's memory must not count in the other's peak
        rows = {}
        for mode in ("process", "thread"):
            cmd = [sys.executable, str(Path(__file__).resolve()), *_without_mode(sys.argv[1:] if argv is None else argv),
                   "--mode", mode]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
            rows[mode] = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            print(json.dumps(rows[mode]), flush=True)
        final = dict(rows[default_mode])
        final["modes"] = {m: {k: r[k] for k in ("samples_per_s", "cpu_ms_per_sample", "peak_pss_mb", "floor_ratio",
                                                "cpu_efficiency")} for m, r in rows.items()}
        print(json.dumps(final))
        return
    modes = [default_mode] if args.mode is None else [args.mode]
    cpus = len(os.sched_getaffinity(0))
    cores = min(cpus, max(1, args.workers))
    profile: dict = {}
    # the machine's floor for this work: every usable core making samples at the single-process
    # CPU cost (no transfer, no waiting), i.e. what a perfect loader would reach
    rows = {}
    for mode in modes:
        mcfg = cfg.clone()
        mcfg.defrost()
        mcfg.SYSTEM.LOADER_MODE = mode
        mcfg.freeze()
        result = {"image": args.image, "size": list(args.size), "batch": args.batch, "workers": args.workers,
                  "aug": args.aug, "mode": mode, "main_threads": torch.get_num_threads(), "cpus": cpus}
        result.update(throughput(mcfg, args.seconds))
        if not profile:  # after the first timed run, so its memory does not count in the peak
            profile = stage_profile(cfg, args.profile_batches, args.batch, args.cprofile)
        floor_rate = cores * 1000.0 / profile["single_process_cpu_ms_per_sample"]
        result.update(profile)
        result["floor_samples_per_s"] = floor_rate
        result["floor_cores"] = cores
        result["floor_ratio"] = result["samples_per_s"] / floor_rate
        result["cpu_efficiency"] = profile["single_process_cpu_ms_per_sample"] / result["cpu_ms_per_sample"]
        if args.floor_seconds > 0:
            result.update(transfer_floor(mcfg, args.floor_seconds))
        rows[mode] = result
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
