"""Fixtures for the gan tests: one intra-op thread, and a small fake CIFAR-10 archive."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run each gan test on one intra-op thread (restored afterwards).

    The models here are tiny: with 2+ threads on a busy 2-core machine, per-op thread synchronization costs
    more than the arithmetic (measured: a 2-iteration run takes 0.6 s on 1 thread, 2.8 s on 2).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory):
    """A CIFAR-10-shaped .npz (NHWC uint8, 4 images per class) so the tests need no download."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "fake-cifar10.npz"
    labels = np.repeat(np.arange(10), 4).astype(np.int64)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
        y_train=labels,
        x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        y_test=labels[::2].copy(),
    )
    return path
