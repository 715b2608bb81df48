"""Fixtures every test gets."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _keep_threads():
    """Training sets ``torch.set_num_threads`` for its run; restore it for the next test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
