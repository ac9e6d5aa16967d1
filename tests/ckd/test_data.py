"""common.data.load_cifar100 (added for the CKD tables)."""

import numpy as np
import pytest
import torch

from common.data import load_cifar10, load_cifar100


def test_load_cifar100_reads_an_npz_with_100_classes(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8),
        "y_train": np.array([0, 5, 99, 42, 7, 63]),
        "x_test": rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8),
        "y_test": np.array([99, 1]),
    }
    path = tmp_path / "cifar100.npz"
    np.savez(path, **arrays)
    data = load_cifar100(path)
    assert data.num_classes == 100 and data.image_shape == (3, 32, 32)
    assert torch.equal(data.y_train, torch.tensor([0, 5, 99, 42, 7, 63]))
    # channels-last on disk, channels-first in memory
    assert torch.equal(data.x_train[2, 1], torch.from_numpy(arrays["x_train"][2, :, :, 1]))
    with pytest.raises(ValueError, match="0..9"):
        load_cifar10(path)  # CIFAR-10 still refuses labels above 9
    arrays["y_test"] = np.array([100, 1])
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="0..99"):
        load_cifar100(path)
