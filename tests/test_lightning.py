"""ConnectomicsDataModule: same streams as build_dataloader, rank from the Trainer, resume from
the Trainer's global step, ready batches in training_step (CPU, tiny synthetic project)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from itertools import chain, islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from _trainer_common import tiny_project

from connectomics_data.config import load_cfg
from connectomics_data.errors import ConfigError
from connectomics_data.loader import Batch, build_dataloader

pl = pytest.importorskip("lightning.pytorch")
from connectomics_data.lightning import ConnectomicsDataModule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture
def cfg(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_cfg(str(tiny_project(tmp_path)))


def snapshot(batch: Batch) -> dict:
    return {"image": batch.image.detach().cpu().clone(), "pos": batch.pos.clone(),
            "targets": [t.cpu().clone() for t in batch.targets],
            "weights": [[None if w is None else w.cpu().clone() for w in ws] for ws in batch.weights]}


def assert_same(a: dict, b: dict) -> None:
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["pos"], b["pos"])
    assert all(torch.equal(x, y) for x, y in zip(a["targets"], b["targets"], strict=True))
    for wa, wb in zip(a["weights"], b["weights"], strict=True):
        for x, y in zip(wa, wb, strict=True):
            assert (x is None and y is None) or torch.equal(x, y)


class Recorder(pl.LightningModule):
    """A one-layer model that records what training_step and predict_step receive."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv3d(1, 1, 1)
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, Batch) and not batch.in_transit
        assert batch.image.dtype == torch.float32 and batch.targets[0].dtype == torch.float32
        assert isinstance(batch.weights[0][0], torch.Tensor)  # WEIGHT_OPT '1': a tensor, not a recipe
        self.seen.append(snapshot(batch))
        logits = self.net(batch.image)
        return F.binary_cross_entropy_with_logits(logits, batch.targets[0], weight=batch.weights[0][0])

    def predict_step(self, batch, batch_idx):
        assert not batch.in_transit and batch.targets == []
        return batch.pos.clone(), batch.image.sum(dim=(1, 2, 3, 4))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(max_steps: int = -1, **kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def reference(cfg, n: int, **kwargs) -> list[dict]:
    """The first ``n`` batches of ``build_dataloader``'s stream, over as many passes as needed."""
    loader = build_dataloader(cfg, "train", **kwargs)
    stream = chain.from_iterable(loader for _ in range(n))
    return [snapshot(b.to("cpu")) for b in islice(stream, n)]


def test_first_batches_equal_build_dataloader(cfg):
    model, dm = Recorder(), ConnectomicsDataModule(cfg)
    trainer(max_steps=3).fit(model, datamodule=dm)
    assert (dm.rank, dm.world_size, dm.start_index) == (0, 1, 0)
    ref = reference(cfg, 3)
    assert len(model.seen) == 3
    for got, want in zip(model.seen, ref):
        assert_same(got, want)


def test_resume_mid_epoch_continues_the_stream(tmp_path: Path, monkeypatch):
    """Epochs of 2 batches; stop after step 3 (mid-epoch), resume to step 6: steps 4-6 train on
    what the uninterrupted run trains on, across the epoch boundaries."""
    monkeypatch.chdir(tmp_path)
    cfg = load_cfg(str(tiny_project(tmp_path)), opts=["DATASET.SAMPLES_PER_EPOCH", "4"])
    first = Recorder()
    t1 = trainer(max_steps=3)
    t1.fit(first, datamodule=ConnectomicsDataModule(cfg))
    ckpt = tmp_path / "step3.ckpt"
    t1.save_checkpoint(ckpt)
    resumed, dm = Recorder(), ConnectomicsDataModule(cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*dataloader is not resumable.*")
        trainer(max_steps=6).fit(resumed, datamodule=dm, ckpt_path=str(ckpt))
    assert dm.start_index == 3 * int(cfg.SOLVER.SAMPLES_PER_BATCH)
    ref = reference(cfg, 6)
    assert len(first.seen) == 3 and len(resumed.seen) == 3
    for got, want in zip(first.seen + resumed.seen, ref, strict=True):
        assert_same(got, want)


def test_predict_dataloader_is_the_test_grid(cfg):
    dm = ConnectomicsDataModule(cfg)
    out = trainer().predict(Recorder(), datamodule=dm)
    ref = [b.to("cpu") for b in build_dataloader(cfg, "test")]
    assert len(out) == len(ref) > 1
    for (pos, sums), want in zip(out, ref):
        assert torch.equal(pos, want.pos)
        assert torch.equal(sums, want.image.sum(dim=(1, 2, 3, 4)))


def test_transfer_batch_to_device_is_batch_to(cfg):
    dm = ConnectomicsDataModule(cfg)
    raw = next(iter(build_dataloader(cfg, "train", finish=False)))  # the compact form, as with CUDA
    assert raw.in_transit
    moved = dm.transfer_batch_to_device(raw, torch.device("cpu"), 0)
    assert_same(snapshot(moved), snapshot(raw.to("cpu")))
    assert raw.in_transit  # the loader's batch is not modified
    assert dm.transfer_batch_to_device([torch.ones(2)], torch.device("cpu"), 0)[0].tolist() == [1, 1]
    assert dm.val_dataloader() == []  # the tiny project has no validation volume


def test_setup_reads_the_rank_and_refuses_the_distributed_sampler(cfg):
    dm = ConnectomicsDataModule(cfg)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2, num_devices=2,
                                 _accelerator_connector=SimpleNamespace(use_distributed_sampler=False))
    dm.setup("fit")
    assert (dm.rank, dm.world_size) == (1, 2)
    dm.trainer._accelerator_connector.use_distributed_sampler = True
    with pytest.raises(ConfigError, match="use_distributed_sampler=False"):
        dm.setup("fit")


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    import lightning.pytorch as pl
    from connectomics_data.config import load_cfg
    from connectomics_data.lightning import ConnectomicsDataModule

    class M(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Conv3d(1, 1, 1)
        def training_step(self, batch, i):
            if i == 0:
                torch.save({"pos": batch.pos, "image": batch.image}, f"rank{self.global_rank}.pt")
            return F.binary_cross_entropy_with_logits(self.net(batch.image), batch.targets[0])
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cfg = load_cfg(sys.argv[1])
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(M(), datamodule=ConnectomicsDataModule(cfg))
""")


@pytest.mark.slow
def test_ddp_two_processes_on_gloo_match_the_rank_streams(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_project(tmp_path)
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "ddp.py", str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_cfg(str(config))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        want = next(iter(build_dataloader(cfg, "train", rank=rank, world_size=2))).to("cpu")
        assert torch.equal(got["pos"], want.pos) and torch.equal(got["image"], want.image)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not torch.equal(a["image"], b["image"])  # the ranks draw different samples


def test_val_dataloader_is_the_validation_grid(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_cfg(str(tiny_project(tmp_path)), opts=["DATASET.VAL_IMAGE_NAME", "val_im.h5",
                                                      "DATASET.VAL_LABEL_NAME", "val_lb.h5"])
    got = [snapshot(b.to("cpu")) for b in ConnectomicsDataModule(cfg).val_dataloader()]
    want = [snapshot(b.to("cpu")) for b in build_dataloader(cfg, "val")]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert_same(a, b)
