"""Helpers run in 'spawn' children by tests/test_io_shared.py (importable by module name, since
a spawned process re-imports what it unpickles; the test puts this directory on sys.path, and
spawn copies sys.path to the child)."""

from __future__ import annotations

import os

import numpy as np
import torch.utils.data

from connectomics_data.geometry import Box


def memory_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / RssAnon / RssShmem of a process from /proc/<pid>/status, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                out[key] = int(rest.split()[0])
    return out


def read_box(volume, box: tuple, queue) -> None:
    """Child process: read ``box`` and send back the crop, the checksum of the whole volume and
    whether the array is a read-only view."""
    crop = volume.read(Box(*box), "reflect")
    queue.put((crop, int(volume.array.sum(dtype=np.uint64)), bool(volume.array.flags.writeable)))


class TouchAllDataset(torch.utils.data.Dataset):
    """Each item touches every page of the shared volume and reports the worker's memory."""

    def __init__(self, volume, length: int = 2):
        self.volume = volume
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        before = memory_kb()
        total = int(self.volume.array.sum(dtype=np.uint64))  # reads all pages of the segment
        after = memory_kb()
        return (os.getpid(), total, before["RssAnon"], after["RssAnon"], before["RssShmem"], after["RssShmem"])
