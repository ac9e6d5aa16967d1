"""Fixtures shared by the whole test suite."""

import pytest
import torch


@pytest.fixture
def single_thread():
    """Run a test on one torch thread: tiny matrices go faster, and a busy shared CPU cannot stall it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
