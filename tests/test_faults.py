"""Fault injection: corrupt data met inside DataLoader workers, processes killed in the middle of
a checkpoint or an inference run, a full disk, and memory budgets under pressure.

What each fault guarantees:

* a worker that reads a corrupt region raises, in the main process, the project error naming
  the file and the box (and the command line prints it as one line);
* ``kill -9`` in the middle of writing a checkpoint leaves the previous checkpoint loadable and
  ``checkpoint_latest.txt`` pointing at it; training resumes from it to the end;
* ``kill -9`` in the middle of chunked or per-file (DO_SINGLY) inference, then a restart, gives
  output identical to an uninterrupted run;
* a full disk (a file size limit, or a mocked ENOSPC) fails with :class:`OutputError` naming the
  output, and earlier outputs at that path stay byte-identical, with no temporary file left;
* ``DATASET.TILE_CACHE_MB`` and ``INFERENCE.MEMORY_BUDGET_MB`` bound the peak resident memory of
  a separate process (measured with ``getrusage``), while a large budget really is used.

Processes are killed by injection (a patched ``torch.save`` / forward pass that sends itself
SIGKILL at a chosen point), so every run is deterministic.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_bad_inputs import BASE_CFG, _h5, _merge, error_line, run_cli

from connectomics_data.config import load_cfg
from connectomics_data.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from connectomics_data.errors import OutputError, VolumeError
from connectomics_data.loader import build_dataloader
from connectomics_data.models import build_model

REPO = Path(__file__).resolve().parents[1]
SHAPE = (8, 40, 40)


# --------------------------------------------------------------------------- helpers
def write_cfg(path: Path, **changes) -> Path:
    """``BASE_CFG`` (test_bad_inputs) with ``changes`` ('A.B': value), written as YAML."""
    path.write_text(yaml.safe_dump(_merge(BASE_CFG, changes)))
    return path


def run_child(code: str, *args: str, timeout: float = 120, uses_torch: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process (repository importable) with ``args`` as argv[1:].

    The child uses this process's torch thread count: CPU convolutions round differently with
    another number of threads, and outputs are compared bit for bit."""
    prelude = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
    if uses_torch:
        prelude += f"import torch\ntorch.set_num_threads({torch.get_num_threads()})\n"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))


def first_batch_error(loader) -> BaseException:
    """The exception raised by the loader's first batch; the workers are shut down before
    returning (a traceback kept alive would keep them running into the next test)."""
    iterator = iter(loader)
    try:
        next(iterator)
    except Exception as err:  # noqa: BLE001 - the test inspects it
        error = type(err)(*err.args)
    else:
        error = AssertionError("the first batch loaded without an error")
    del iterator
    gc.collect()  # the iterator sits in a reference cycle: shut its workers down now
    return error


def _box_of(message: str) -> tuple[list[int], list[int]]:
    found = re.search(r"Box\(start=\[([-\d, ]+)\], stop=\[([-\d, ]+)\]\)", message)
    assert found, message
    return [int(v) for v in found.group(1).split(",")], [int(v) for v in found.group(2).split(",")]


@pytest.fixture
def volumes(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    label = np.zeros(SHAPE, np.uint16)
    label[1:7, 5:30, 5:30] = 3
    _h5(tmp_path / "img.h5", image)
    _h5(tmp_path / "lab.h5", label)
    return tmp_path


# --------------------------------------------------------------------------- corrupt data in workers
CORRUPT_Z = (2, 3, 4, 5)  # every 3-slice crop of an 8-slice volume touches one of these


def _corrupt_hdf5(path: Path, image: np.ndarray) -> None:
    """One gzip chunk per z slice; the chunks of CORRUPT_Z overwritten with garbage."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("main", data=image, chunks=(1, *image.shape[1:]), compression="gzip")
        infos = [ds.id.get_chunk_info(z) for z in CORRUPT_Z]
    with open(path, "r+b") as f:
        for info in infos:
            f.seek(info.byte_offset)
            f.write(b"\xff" * info.size)


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_hdf5_chunk_in_a_worker_names_file_and_box(volumes, workers):
    image = np.random.default_rng(1).integers(0, 256, SHAPE, dtype=np.uint8)
    bad = volumes / "corrupt.h5"
    _corrupt_hdf5(bad, image)
    cfg = load_cfg(write_cfg(volumes / "c.yaml", **{"DATASET.INPUT_PATH": str(volumes),
                                                     "DATASET.IMAGE_NAME": "corrupt.h5",
                                                     "SYSTEM.LOADER_MODE": "process"}))
    loader = build_dataloader(cfg, "train", num_workers=workers)  # metadata only: opens fine
    error = first_batch_error(loader)
    assert isinstance(error, VolumeError), repr(error)
    message = str(error)
    assert "worker process" in message  # raised in the main process, re-raised from a worker
    assert f"{bad}: cannot read box" in message
    start, stop = _box_of(message.splitlines()[-1])
    assert stop[0] - start[0] == 3 and any(start[0] <= z < stop[0] for z in CORRUPT_Z)


def test_garbage_png_slice_in_a_worker_names_slice_and_box(volumes):
    image = np.random.default_rng(2).integers(0, 256, (4, 40, 40), dtype=np.uint8)
    (volumes / "stack").mkdir()
    for z in range(4):
        Image.fromarray(image[z]).save(volumes / "stack" / f"{z:04d}.png")
    slice_ = volumes / "stack" / "0002.png"
    raw = slice_.read_bytes()
    slice_.write_bytes(raw[: len(raw) // 2])  # the header survives, the pixels do not
    cfg = load_cfg(write_cfg(volumes / "c.yaml", **{"DATASET.INPUT_PATH": str(volumes),
                                                     "DATASET.IMAGE_NAME": "stack/*.png",
                                                     "DATASET.LABEL_NAME": None,
                                                     "MODEL.INPUT_SIZE": [3, 17, 17],
                                                     "DATASET.PAD_SIZE": [0, 0, 0]}))
    loader = build_dataloader(cfg, "train", num_workers=1)
    error = first_batch_error(loader)
    assert isinstance(error, VolumeError), repr(error)
    last = str(error).splitlines()[-1]
    assert str(slice_) in last and "truncated" in last and "stack/*.png" in last
    start, stop = _box_of(last)
    assert start[0] <= 2 < stop[0]  # every 3-slice crop of 4 slices holds slice 2


def test_worker_error_is_one_line_on_the_command_line(volumes, tmp_path, capsys, monkeypatch):
    image = np.random.default_rng(1).integers(0, 256, SHAPE, dtype=np.uint8)
    _corrupt_hdf5(volumes / "corrupt.h5", image)
    cfg = write_cfg(volumes / "c.yaml", **{"DATASET.INPUT_PATH": str(volumes), "DATASET.IMAGE_NAME": "corrupt.h5",
                                           "DATASET.OUTPUT_PATH": str(tmp_path / "out"), "SYSTEM.NUM_CPUS": 1})
    rc, stderr, err = run_cli(["--config-file", str(cfg)], capsys, monkeypatch)
    line = error_line(stderr)
    assert rc == 2 and isinstance(err, VolumeError)
    assert line.startswith(f"error: {volumes / 'corrupt.h5'}: cannot read box Box(start=[")
    assert "DataLoader worker" not in line and "Original Traceback" not in line


# --------------------------------------------------------------------------- kill -9 mid-checkpoint
DYING_SAVE = """
import io, os, signal
import torch
from connectomics_data.engine import cli

kill_at = int(sys.argv[1])
real_save, calls = torch.save, [0]

def dying_save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] < kill_at:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf)
    with open(f, "wb") as out:  # half of the checkpoint reaches the disk, then SIGKILL
        out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        out.flush()
        os.fsync(out.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
sys.exit(cli.main(sys.argv[2:]))
"""


def test_kill_during_checkpoint_keeps_the_previous_one_and_training_resumes(volumes, tmp_path, capsys,
                                                                             monkeypatch):
    out = tmp_path / "out"
    cfg = write_cfg(tmp_path / "train.yaml", **{"DATASET.INPUT_PATH": str(volumes), "DATASET.OUTPUT_PATH": str(out),
                                                "SOLVER.ITERATION_TOTAL": 3})
    child = run_child(DYING_SAVE, "2", "--config-file", str(cfg))  # dies writing checkpoint 2
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert sorted(p.name for p in out.glob("checkpoint_*.pth.tar")) == ["checkpoint_000001.pth.tar"]
    assert (out / "checkpoint_latest.txt").read_text().strip() == "checkpoint_000001.pth.tar"
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint_000002.pth.tar.")  # hidden, ignored
    previous = out / "checkpoint_000001.pth.tar"
    model = build_model(load_cfg(cfg), "cpu")
    assert load_checkpoint(previous, model) == 1
    assert read_checkpoint(previous)["iteration"] == 1

    rc, stderr, _ = run_cli(["--config-file", str(cfg), "--checkpoint", str(previous)], capsys, monkeypatch)
    assert rc == 0, stderr
    assert read_checkpoint(out / "checkpoint_000003.pth.tar")["iteration"] == 3
    assert (out / "checkpoint_latest.txt").read_text().strip() == "checkpoint_000003.pth.tar"


# --------------------------------------------------------------------------- kill -9 mid-inference
DYING_FORWARD = """
import os, signal
from connectomics_data.engine import cli
from connectomics_data.inference import SlidingWindowInference

kill_at = int(sys.argv[1])
real_forward, calls = SlidingWindowInference._forward, [0]

def dying_forward(self, batch):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_forward(self, batch)

SlidingWindowInference._forward = dying_forward
sys.exit(cli.main(sys.argv[2:]))
"""


def _inference_project(root: Path, mode: str) -> tuple[Path, Path]:
    """A checkpoint and an inference config: 'chunked' (DO_CHUNK_TITLE over one volume),
    'singly' (DO_SINGLY over 3 files) or 'volume' (one volume, one output file)."""
    rng = np.random.default_rng(3)
    names = []
    for k in range(3 if mode == "singly" else 1):
        shape = (4, 32, 32) if mode == "singly" else (8, 48, 48)
        _h5(root / f"in{k}.h5", rng.integers(0, 256, shape, dtype=np.uint8))
        names.append(f"in{k}.h5")
    changes = {"DATASET.INPUT_PATH": str(root), "INFERENCE.IMAGE_NAME": "@".join(names),
               "INFERENCE.OUTPUT_DTYPE": "float32", "INFERENCE.STRIDE": [4, 16, 16], "INFERENCE.SAMPLES_PER_BATCH": 4}
    if mode == "chunked":
        changes.update({"INFERENCE.DO_CHUNK_TITLE": 1, "DATASET.DATA_CHUNK_NUM": [1, 2, 2],
                        "INFERENCE.OUTPUT_NAME": "result"})
    elif mode == "singly":
        changes.update({"INFERENCE.DO_SINGLY": True, "INFERENCE.OUTPUT_NAME": "{stem}_pred.h5"})
    cfg = write_cfg(root / "infer.yaml", **changes)
    model = build_model(load_cfg(cfg), "cpu", generator=torch.Generator().manual_seed(0))
    save_checkpoint(root / "model.pth", model, None, None, 1, None)
    return cfg, root / "model.pth"


def _outputs(pred: Path) -> dict[str, np.ndarray]:
    """Every prediction array under ``pred`` by relative name (zarr stores and HDF5 files)."""
    import zarr

    arrays = {}
    for store in sorted(pred.glob("*.zarr")):
        arrays[store.name] = np.asarray(zarr.open_group(str(store), mode="r")["vol0"][...])
    for file in sorted(pred.glob("*.h5")):
        with h5py.File(file, "r") as f:
            arrays[file.name] = f["vol0"][...]
    return arrays


# Forward calls (batches of 4 windows of 3 x 17 x 17): chunked, 4 chunks of 8 x 24 x 24 with 12
# windows each (3 calls per chunk); singly, 3 files of 4 x 32 x 32 with 8 windows each (2 calls
# per file). The kill lands inside the second chunk / the second file, after the first is done.
@pytest.mark.parametrize("mode, kill_at", [("chunked", 5), ("singly", 4)])
def test_kill_during_inference_then_restart_gives_identical_output(tmp_path, capsys, monkeypatch, mode, kill_at):
    cfg, ckpt = _inference_project(tmp_path, mode)
    argv = ["--config-file", str(cfg), "--inference", "--checkpoint", str(ckpt)]
    clean, broken = tmp_path / "clean", tmp_path / "broken"

    rc, stderr, _ = run_cli(argv + ["INFERENCE.OUTPUT_PATH", str(clean)], capsys, monkeypatch)
    assert rc == 0, stderr
    expected = _outputs(clean)
    assert len(expected) == (1 if mode == "chunked" else 3)

    child = run_child(DYING_FORWARD, str(kill_at), *argv, "INFERENCE.OUTPUT_PATH", str(broken))
    assert child.returncode == -signal.SIGKILL, child.stderr
    if mode == "chunked":  # the first chunk is done (marked), the second is not
        done = sorted(p.name for p in (broken / "result.zarr.progress").iterdir())
        assert done == ["chunk_000000.json"]
    else:  # the first file is complete, the second never appeared under its name
        assert sorted(p.name for p in broken.glob("*.h5")) == ["in0_pred.h5"]
        np.testing.assert_array_equal(_outputs(broken)["in0_pred.h5"], expected["in0_pred.h5"])

    capsys.readouterr()
    rc, stderr, _ = run_cli(argv + ["INFERENCE.OUTPUT_PATH", str(broken)], capsys, monkeypatch)
    assert rc == 0, stderr
    got = _outputs(broken)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
        assert got[name].any()


# --------------------------------------------------------------------------- full disk
LIMITED = """
import resource, signal
from connectomics_data.engine import cli

limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(sys.argv[2:]))
"""


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_full_disk_during_inference_names_output_and_keeps_earlier_one(tmp_path, capsys, monkeypatch):
    cfg, ckpt = _inference_project(tmp_path, "volume")
    pred = tmp_path / "pred"
    argv = ["--config-file", str(cfg), "--inference", "--checkpoint", str(ckpt), "INFERENCE.OUTPUT_PATH", str(pred)]
    rc, stderr, _ = run_cli(argv + ["INFERENCE.OUTPUT_DTYPE", "uint8"], capsys, monkeypatch)
    assert rc == 0, stderr
    before = _snapshot(pred)
    assert list(before) == ["result.h5"]
    size = len(before["result.h5"])

    child = run_child(LIMITED, str(size // 2), *argv)  # float32 now: 4x larger than the limit allows
    assert child.returncode == 2, child.stderr
    line = error_line(child.stderr)
    assert f"cannot write {pred / 'result.h5'}: file too large" in line
    assert _snapshot(pred) == before  # the earlier output is intact, no temporary file left


def test_full_disk_during_checkpoint_names_it_and_keeps_earlier_one(volumes, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    cfg = write_cfg(tmp_path / "train.yaml", **{"DATASET.INPUT_PATH": str(volumes), "DATASET.OUTPUT_PATH": str(out)})
    rc, stderr, _ = run_cli(["--config-file", str(cfg)], capsys, monkeypatch)
    assert rc == 0, stderr
    before = _snapshot(out)
    checkpoint = out / "checkpoint_000001.pth.tar"
    limit = len(before[checkpoint.name]) // 2

    child = run_child(LIMITED, str(limit), "--config-file", str(cfg))  # the same run again, disk "full"
    assert child.returncode == 2, child.stderr
    assert f"cannot write {checkpoint}: the write failed, is the disk full?" in error_line(child.stderr)
    after = _snapshot(out)
    assert not [name for name in after if name.endswith(".tmp")]
    assert checkpoint.name not in after  # the failed write left nothing under the final name
    # the new run moved the earlier one aside first (runs never mix): it is intact there
    (previous,) = (out / "previous_runs").iterdir()
    assert _snapshot(previous)[checkpoint.name] == before[checkpoint.name]


WRITE_HDF5 = """
import resource, signal
import numpy as np
from connectomics_data.errors import OutputError
from connectomics_data.io import write_hdf5

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
data = np.random.default_rng(0).random((40, 50, 50))  # gzip chunks, far above the limit
for attempt in range(2):
    try:
        write_hdf5(sys.argv[1], data)
    except OutputError as err:
        print(err)
"""


def test_full_disk_during_write_hdf5_is_an_error_not_a_crash(tmp_path):
    """h5py crashes (segmentation fault) when cached gzip chunks fail to flush at close;
    ``write_hdf5`` writes without the chunk cache, so a full disk is an OutputError."""
    target = tmp_path / "v.h5"
    target.write_bytes(b"earlier output")
    child = run_child(WRITE_HDF5, str(target), uses_torch=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [f"cannot write {target}: file too large (file size limit reached)"] * 2
    assert target.read_bytes() == b"earlier output" and sorted(tmp_path.iterdir()) == [target]


def test_mocked_enospc_on_checkpoint_and_prediction(tmp_path, monkeypatch):
    """ENOSPC raised by the writer itself (as a real full disk does for plain writes)."""
    from connectomics_data.inference import (
        InferenceSettings,
        SlidingWindowInference,
        predict_volumes_to_file,
    )
    from connectomics_data.inference.sinks import Hdf5Sink
    from connectomics_data.io.base import ArrayVolume

    model = torch.nn.Conv3d(1, 1, 1)
    path = tmp_path / "ck.pth"
    save_checkpoint(path, model, None, None, 1, None)
    before = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full)
        with pytest.raises(OutputError, match=f"no space left on the device while writing {re.escape(str(path))}"):
            save_checkpoint(path, model, None, None, 2, None)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ck.pth"]

    engine = SlidingWindowInference(lambda x: x, InferenceSettings((2, 8, 8), (2, 8, 8)))
    volume = ArrayVolume(np.arange(4 * 16 * 16, dtype=np.uint8).reshape(4, 16, 16))
    target = tmp_path / "pred.h5"
    predict_volumes_to_file(engine, [volume], target)
    before = target.read_bytes()

    def no_space(self, box, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Hdf5Sink, "write", no_space)
    with pytest.raises(OutputError, match=f"no space left on the device while writing {re.escape(str(target))}"):
        predict_volumes_to_file(engine, [volume], target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pth", "pred.h5"]


# --------------------------------------------------------------------------- memory budgets
MEMORY = """
import ctypes, gc, json
from pathlib import Path
import numpy as np
import torch, zarr, numcodecs, h5py, tifffile  # imported before any measurement
from connectomics_data.config import load_cfg


def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024.0


def peak_growth(run):
    # MiB by which the resident set grew at its peak while run() ran (Linux: the high-water
    # mark is reset first through /proc/self/clear_refs)
    gc.collect()
    try:  # hand memory freed by earlier phases back to the system, so it is not reused unseen
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS")
    result = run()
    return _status("VmHWM") - before, result


kind, root = sys.argv[1], Path(sys.argv[2])
report = {"growth": [], "details": []}
if kind == "tiles":
    from connectomics_data.datasets import build_dataset

    def dataset(budget_mb):
        cfg = load_cfg(None, opts=["DATASET.INPUT_PATH", str(root), "DATASET.IMAGE_NAME", "tiles.json",
                                   "DATASET.PRELOAD", "False", "DATASET.TILE_CACHE_MB", str(budget_mb),
                                   "DATASET.TILE_THREADS", "1", "MODEL.INPUT_SIZE", "[4, 256, 256]",
                                   "INFERENCE.STRIDE", "[4, 256, 256]"])
        ds = build_dataset(cfg, "test")
        ds[0]  # first read: lazy imports and caches outside the tile cache
        ds.volumes[0].clear_cache()
        return ds

    def read_all(ds, fraction):
        for i in range(int(len(ds) * fraction)):
            ds[i]
        return ds.volumes[0].cache_info()

    for budget, fraction in ((1, 0.25), (1, 1.0), (256, 1.0)):
        ds = dataset(budget)
        growth, info = peak_growth(lambda: read_all(ds, fraction))
        report["growth"].append(growth)
        report["details"].append(info)
        del ds
else:
    from connectomics_data.inference import build_inference_from_cfg, predict_volumes_to_file
    from connectomics_data.io.base import Volume

    class Generated(Volume):
        path = "<generated>"

        def __init__(self, shape):
            self._shape = tuple(shape)

        @property
        def shape(self):
            return self._shape

        @property
        def dtype(self):
            return np.dtype(np.uint8)

        def _read_inside(self, box):
            z, y, x = np.ogrid[tuple(slice(a, b) for a, b in zip(box.start, box.stop))]
            return ((z * 7 + y * 3 + x * 5) % 256).astype(np.uint8)

    def run(budget_mb, shape, name):
        cfg = load_cfg(None, opts=["INFERENCE.MEMORY_BUDGET_MB", str(budget_mb), "MODEL.INPUT_SIZE", "[8, 64, 64]",
                                   "MODEL.OUTPUT_SIZE", "[8, 64, 64]", "INFERENCE.STRIDE", "[8, 64, 64]",
                                   "MODEL.OUT_PLANES", "1"])
        engine = build_inference_from_cfg(cfg, lambda x: torch.cat([x, 1 - x], 1))
        predict_volumes_to_file(engine, [Generated(shape)], root / name)
        return engine.last_stats.accumulator

    run(8, (8, 64, 64), "warmup.h5")  # first use of the model, threads and writers
    for budget, shape in ((8, (32, 256, 256)), (8, (128, 256, 256)), (2048, (128, 256, 256))):
        growth, accumulator = peak_growth(lambda: run(budget, shape, f"{budget}_{shape[0]}.h5"))
        report["growth"].append(growth)
        report["details"].append(accumulator)
print(json.dumps(report))
"""


def _memory_report(kind: str, root: Path) -> tuple[list[float], list]:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident set size")
    child = run_child(MEMORY, kind, str(root), timeout=300)
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    return report["growth"], report["details"]


def test_tile_cache_budget_bounds_peak_memory(tmp_path):
    import tifffile

    depth, size, tile = 32, 1024, 256  # 32 MiB of decoded tiles
    block = np.random.default_rng(4).integers(0, 256, (tile, tile), dtype=np.uint8)
    for z in range(depth):
        (tmp_path / f"s{z}").mkdir()
        for r in range(size // tile):
            for c in range(size // tile):
                tifffile.imwrite(tmp_path / f"s{z}" / f"{r}_{c}.tif", block)
    (tmp_path / "tiles.json").write_text(json.dumps({
        "image": [f"s{z}/{{row}}_{{column}}.tif" for z in range(depth)], "height": size, "width": size,
        "depth": depth, "tile_size": tile, "dtype": "uint8"}))
    (quarter, whole, large), caches = _memory_report("tiles", tmp_path)
    total_mib = depth * size * size / 2**20
    assert caches[1]["max_bytes"] == 1 << 20 and caches[2]["max_bytes"] == 256 << 20
    assert caches[1]["nbytes"] <= 1 << 20 and caches[1]["evictions"] > 0
    assert caches[2]["nbytes"] == depth * size * size and caches[2]["evictions"] == 0
    # 1 MiB budget: reading 4x more of the volume costs (almost) nothing more
    assert abs(whole - quarter) < 4 and whole < 8, (quarter, whole)
    # 256 MiB budget: the whole decoded volume stays resident (so the measurement can see it)
    assert large > whole + 0.75 * total_mib, (whole, large)


def test_inference_memory_budget_bounds_peak_memory(tmp_path):
    (small, big, unbounded), kinds = _memory_report("inference", tmp_path)
    assert kinds == ["zarr", "zarr", "memory"]
    accumulator_mib = 2 * 128 * 256 * 256 * 4 / 2**20  # 2 channels float32: 64 MiB
    # 8 MiB budget: 4x the voxels adds nothing (the accumulator lives on disk; what remains is
    # a fixed floor of output chunks, compression buffers and model scratch) ...
    assert big - small < 0.25 * accumulator_mib, (small, big)
    # ... while a 2 GiB budget holds the accumulator in memory (so the measurement can see it)
    assert unbounded > 0.9 * accumulator_mib and unbounded > big + 0.5 * accumulator_mib, (big, unbounded)
