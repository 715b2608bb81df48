"""Blockwise inference on daisy writes exactly what one process writes, and resumes.

* the window selection of a block (:class:`SubregionPlan`) against a brute-force definition;
* serial blocks (in this process) of a conv model with TTA equal the single-process output;
* 2 worker processes, identity model, uint8, padding outside the volume, 27 blocks over a volume
  that is no multiple of the block: the run is killed with SIGKILL (scheduler and workers)
  midway, rerun, and the output zarr equals the single-process one file for file;
* the command line (tiny UNet, TTA 4, float32) equals ``train.py --inference`` with
  ``OUTPUT_FORMAT zarr``; a corrupt input chunk makes its blocks fail, named by ROI, exit 1;
  a rerun retries only them.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("daisy")

sys.path.insert(0, str(Path(__file__).parent))
import _blockwise_models as models  # noqa: E402

from connectomics_data.errors import OutputError  # noqa: E402
from connectomics_data.geometry import Box  # noqa: E402
from connectomics_data.inference import InferenceSettings, predict_volumes_to_file  # noqa: E402
from connectomics_data.inference.blockwise import block_boxes, predict_blockwise, progress_dir  # noqa: E402
from connectomics_data.inference.plan import SubregionPlan, WindowPlan  # noqa: E402
from connectomics_data.io import open_volume  # noqa: E402
from connectomics_data.normalize import ImageNormalizer  # noqa: E402

SHAPE = (21, 40, 37)  # no multiple of the (8, 16, 16) blocks


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (--threads 1): BLAS results depend on the thread split
    yield
    torch.set_num_threads(before)


def _input(path: Path, shape=SHAPE, chunks=(8, 16, 16)) -> Path:
    data = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint8")[:] = data
    return path


# ---------------------------------------------------------------------- geometry
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_subregion_plan_takes_the_batches_of_the_full_plan_that_reach_the_box(data):
    shape = data.draw(st.tuples(*[st.integers(3, 24)] * 3))
    window = tuple(data.draw(st.integers(1, n)) for n in shape)
    stride = tuple(data.draw(st.integers(1, w)) for w in window)
    pad = data.draw(st.lists(st.integers(0, 3), min_size=6, max_size=6))
    base = WindowPlan(shape, window, stride, pad, unpad=data.draw(st.booleans()))
    out = data.draw(st.none() | st.just(tuple(max(1, w - 2 * (w // 3)) for w in window)))
    region = base.region_shape
    start = [data.draw(st.integers(0, n - 1)) for n in region]
    box = Box(start, [data.draw(st.integers(a + 1, n)) for a, n in zip(start, region)])
    batch = data.draw(st.integers(1, 5))
    sub = SubregionPlan(base, box, batch)
    full = list(base.windows(out))
    if out is None:
        reach = [k for k, i in enumerate(full) if not base.grid[i].relative_to(sub.region).clip(box.shape).is_empty]
    else:
        reach = [k for k, i in enumerate(full) if not sub.output_box(i, out).clip(box.shape).is_empty]
    batches = sorted({k // batch for k in reach})
    assert list(sub.windows(out)) == [full[k] for b in batches for k in range(b * batch, min(len(full), (b + 1) * batch))]


def test_blocks_tile_the_region_on_the_chunk_grid():
    boxes = block_boxes(SHAPE, (8, 16, 16))
    assert len(boxes) == 27 and sum(b.size for b in boxes) == np.prod(SHAPE)
    assert all(a % c == 0 for b in boxes for a, c in zip(b.start, (8, 16, 16)))


# ---------------------------------------------------------------------- serial blocks, conv model
def test_serial_blocks_of_a_conv_model_with_tta_equal_one_process(tmp_path, one_thread):
    volume = open_volume(_input(tmp_path / "in.zarr", shape=(13, 21, 37)))
    s = InferenceSettings((4, 16, 16), (3, 8, 8), pad=(1, 4, 4), batch_size=3, output_dtype="float32", aug_num=4,
                          prefetch=False)
    predict_volumes_to_file(models.conv_engine("cpu", s), [volume], tmp_path / "one.zarr", "zarr", [ImageNormalizer()],
                            chunks=(8, 8, 16))
    factory = functools.partial(models.conv_engine, settings=s)
    run = functools.partial(predict_blockwise, factory, s, [volume], tmp_path / "bw.zarr", channels=2,
                            normalizer_fn=lambda v: ImageNormalizer(), workers=0, block_shape=(8, 14, 16),
                            chunks=(8, 8, 16), threads=1, device="cpu", progress=False)
    result = run()
    assert result.ok and result.blocks == 2 * 2 * 3 and result.block_shape == (8, 16, 16)
    assert _tree(tmp_path / "bw.zarr") == _tree(tmp_path / "one.zarr")
    again = run()  # everything is done: nothing is predicted again
    assert (again.done, again.skipped) == (0, 12)
    other = InferenceSettings((4, 16, 16), (2, 8, 8), pad=(1, 4, 4), batch_size=3, output_dtype="float32", aug_num=4)
    with pytest.raises(OutputError, match="other settings.*stride"):
        predict_blockwise(factory, other, [volume], tmp_path / "bw.zarr", channels=2, workers=0, chunks=(8, 8, 16))
    with pytest.raises(OutputError, match="not written by a blockwise run"):
        predict_blockwise(factory, s, [volume], tmp_path / "one.zarr", channels=2, workers=0, chunks=(8, 8, 16))


# ---------------------------------------------------------------------- 2 workers, SIGKILL, resume
def _done_markers(output: Path) -> int:
    return sum(sum(p.read_bytes()) for p in (progress_dir(output) / "vol0" / "done").rglob("c/**/*") if p.is_file())


def test_two_workers_killed_midway_then_rerun_equal_one_process(tmp_path, one_thread):
    path = _input(tmp_path / "in.zarr")
    s = models.IDENTITY_SETTINGS
    predict_volumes_to_file(models.identity_engine("cpu", s), [open_volume(path)], tmp_path / "one.zarr", "zarr",
                            [ImageNormalizer()], chunks=models.BLOCK)
    out = tmp_path / "bw.zarr"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import _blockwise_models as m; "
            f"m.run_identity({str(path)!r}, {str(out)!r}, workers=2, delay=0.03)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = _done_markers(out) if (progress_dir(out) / "vol0" / "done").exists() else 0
            if done >= 2:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the scheduler and its workers, at once
        proc.wait()
    assert 2 <= done < 27, f"the run was not caught midway ({done} blocks done)"
    result = models.run_identity(str(path), str(out), workers=1)
    assert result.ok and result.blocks == 27 and result.skipped >= 2 and result.done == 27 - result.skipped
    assert _tree(out) == _tree(tmp_path / "one.zarr")


# ---------------------------------------------------------------------- the command line
def test_command_line_equals_train_inference_and_retries_only_failed_blocks(tmp_path, monkeypatch, capsys,
                                                                            one_thread):
    from _trainer_common import tiny_project

    from connectomics_data.config import load_cfg
    from connectomics_data.engine.blockwise_cli import main as blockwise_main
    from connectomics_data.engine.checkpoint import save_checkpoint
    from connectomics_data.engine.cli import main as train_main
    from connectomics_data.models import build_model

    monkeypatch.chdir(tmp_path)
    config = tiny_project(tmp_path, INFERENCE={"IMAGE_NAME": "big.zarr", "AUG_NUM": 4, "OUTPUT_DTYPE": "float32"})
    data = tmp_path / "data"
    _input(data / "big.zarr", shape=(21, 40, 40), chunks=(4, 20, 20))  # 3 blocks of 8 slices (z chunks)
    torch.manual_seed(0)
    cfg = load_cfg(str(config), inference=True)
    save_checkpoint("ck.pth.tar", build_model(cfg, "cpu"), None, None, 0, cfg)
    assert train_main(["--config-file", str(config), "--inference", "--checkpoint", "ck.pth.tar",
                       "INFERENCE.OUTPUT_FORMAT", "zarr", "INFERENCE.OUTPUT_PATH", "one/"]) == 0
    chunk = data / "big.zarr" / "c" / "5" / "1" / "1"  # z 20, y 20..40, x 20..40: read by the last block only
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a zstd frame")
    args = ["--config-file", str(config), "--checkpoint", "ck.pth.tar", "--threads", "1", "--max-retries", "1",
            "--block-size", "8", "40", "40",
            "INFERENCE.OUTPUT_PATH", "bw/"]
    assert blockwise_main([*args, "--workers", "2"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": VolumeError")[0] for line in err if line.startswith("failed:")] == [
        "failed: vol0 block 9 [16:21, 0:40, 0:40]"]
    assert err[-1].startswith("error: 1 of 3 blocks of bw/result.zarr failed") and "Zstd" in "\n".join(err)
    chunk.write_bytes(good)
    assert blockwise_main([*args, "--workers", "1"]) == 0
    assert "(3 blocks of [8, 40, 40]: 1 predicted, 2 done earlier, 0 failed" in capsys.readouterr().out
    assert _tree(tmp_path / "bw" / "result.zarr") == _tree(tmp_path / "one" / "result.zarr")


def test_train_inference_points_to_blockwise_for_huge_volumes(capsys):
    from connectomics_data.inference.from_cfg import blockwise_hint
    from connectomics_data.io.base import ArrayVolume

    small = [ArrayVolume(np.zeros((4, 5, 6), np.uint8))]
    assert not blockwise_hint(small, limit=120) and capsys.readouterr().err == ""
    assert blockwise_hint(small * 2, limit=120) and "scripts/predict_blockwise.py" in capsys.readouterr().err


def test_a_joined_worker_never_relaunches_the_worker_command(tmp_path, monkeypatch):
    """A --worker-command slot runs --join with the slot's context: it must predict there, not
    start the command again (that recursion would never end)."""
    import socket

    import daisy

    from connectomics_data.inference.blockwise import BlockwiseJob, _save_job, join_blockwise
    from connectomics_data.io.base import ArrayVolume

    out = tmp_path / "bw.zarr"
    s = models.IDENTITY_SETTINGS
    job = BlockwiseJob(functools.partial(models.identity_engine, settings=s), s, ArrayVolume(np.zeros((4, 16, 16))),
                       None, out, "vol0", 1, "vol0", progress_dir(out) / "vol0", worker_command="exit 7")
    _save_job(job)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nobody listens there
    context = daisy.Context(hostname="127.0.0.1", port=str(port), task_id="vol0", worker_id="0")
    monkeypatch.setenv("DAISY_CONTEXT", context.to_env())
    assert join_blockwise(out) is None  # went to connect (no scheduler), did not run 'exit 7'


def test_progress_line_counts_blocks_rate_and_eta(monkeypatch):
    import io
    from types import SimpleNamespace

    from connectomics_data.inference import blockwise_progress
    from connectomics_data.inference.blockwise_progress import BlockProgress

    clock = [100.0]
    monkeypatch.setattr(blockwise_progress.time, "monotonic", lambda: clock[0])

    def states(done, skipped, failed=0, running=2):
        return {"vol0": SimpleNamespace(total_block_count=100, completed_count=done, skipped_count=skipped,
                                        failed_count=failed, processing_count=running)}

    out = io.StringIO()
    progress = BlockProgress("r.zarr/vol0", stream=out, interval=10)
    progress.on_start(states(0, 0))
    clock[0] += 40
    progress.on_progress(states(30, 10))  # 20 blocks predicted in 40 s: 0.5/s, 70 left
    clock[0] += 5
    progress.on_progress(states(31, 10))  # within 10 s of the last line: not printed
    clock[0] += 155
    progress.on_finish(states(98, 10, failed=2, running=0))
    assert out.getvalue().splitlines() == [
        "r.zarr/vol0: 0/100 blocks, 2 running, 0.00 blocks/s, 0s elapsed, ETA ?",
        "r.zarr/vol0: 30/100 blocks, 10 done earlier, 2 running, 0.50 blocks/s, 40s elapsed, ETA 2m20s",
        "r.zarr/vol0: 98/100 blocks, 10 done earlier, 2 failed, 0 running, 0.44 blocks/s, 3m20s elapsed, stopped",
    ]


def test_cpu_workers_with_other_threads_than_one_process_are_told_so(capsys, monkeypatch):
    """The last float bits of a CPU convolution depend on the thread count: a user whose workers
    run with fewer threads than train.py --inference is told how to get the same bytes."""
    from connectomics_data.engine.blockwise_cli import _note_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    _note_threads(None, 2, "cpu")  # 4 threads per worker, one process would use 8
    note = capsys.readouterr().err
    assert note.startswith("note: 4 torch thread(s) per worker") and "--threads 8" in note
    for threads, workers, device in [(8, 2, "cpu"), (None, 1, "cpu"), (None, 2, "cuda"), (None, 0, "cpu")]:
        _note_threads(threads, workers, device)
        assert capsys.readouterr().err == "", (threads, workers, device)
