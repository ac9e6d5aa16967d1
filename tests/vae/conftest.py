"""Tiny synthetic MNIST-like data for fast CPU tests: class c lights up a 6x6 block at a class-specific place."""

import numpy as np
import pytest
import torch

from common.data import ImageData


def synthetic_arrays(num_train=300, num_test=60, seed=0):
    """Arrays in the offline .npz layout: x (N, 28, 28) uint8, y (N,) int64."""
    rng = np.random.default_rng(seed)

    def make(count):
        labels = rng.integers(0, 10, size=count)
        images = rng.integers(0, 40, size=(count, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            row, col = 2 + 5 * (label // 4), 2 + 6 * (label % 4)
            images[index, row : row + 6, col : col + 6] = 230
        return images, labels.astype(np.int64)

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture
def tiny_npz(tmp_path):
    """Path of a tiny .npz dataset (300 train, 60 test)."""
    path = tmp_path / "tiny.npz"
    np.savez(path, **synthetic_arrays())
    return path


@pytest.fixture
def tiny_data():
    """The tiny dataset as ImageData."""
    arrays = synthetic_arrays()
    return ImageData(
        x_train=torch.from_numpy(arrays["x_train"]).unsqueeze(1),
        y_train=torch.from_numpy(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]).unsqueeze(1),
        y_test=torch.from_numpy(arrays["y_test"]),
    )


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""
