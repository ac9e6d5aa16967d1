"""Tests for common.data: npz loading and validation, offline errors, binarization, validation split."""
import numpy as np
import pytest
import torch

from common import data as data_module
from common.data import (
    DataUnavailableError,
    binarize,
    binarize_fixed,
    load_cifar10,
    load_mnist,
    train_validation_split,
)


def _write_npz(path, n_train=12, n_test=5, shape=(28, 28), **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test).astype(np.int64),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_load_mnist_npz_shapes_dtypes_and_values(tmp_path):
    arrays = _write_npz(tmp_path / "m.npz")
    data = load_mnist(tmp_path / "m.npz")
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (5, 1, 28, 28)
    assert data.y_train.dtype == torch.int64 and data.y_train.shape == (12,)
    assert data.num_classes == 10 and data.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(data.x_train[:, 0].numpy(), arrays["x_train"])
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["y_test"])


def test_load_cifar_npz_converts_nhwc_to_channels_first(tmp_path):
    arrays = _write_npz(tmp_path / "c.npz", shape=(32, 32, 3))
    data = load_cifar10(tmp_path / "c.npz")
    assert data.x_train.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(data.x_train.permute(0, 2, 3, 1).numpy(), arrays["x_train"])


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError, match="does not exist.*--data PATH.npz"):
        load_mnist(tmp_path / "nope.npz")


def test_corrupt_file_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DataUnavailableError, match="corrupt"):
        load_mnist(path)
    path.write_bytes(b"hello")
    with pytest.raises(DataUnavailableError, match="corrupt"):
        load_mnist(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"y_test": None}, "lacks key"),
        ({"x_train": np.zeros((12, 28, 28), dtype=np.float32)}, "uint8"),
        ({"x_train": np.zeros((12, 27, 28), dtype=np.uint8)}, r"\(28, 28\)"),
        ({"y_train": np.zeros(11, dtype=np.int64)}, "y_train must have shape"),
        ({"y_train": np.full(12, 10, dtype=np.int64)}, "0..9"),
        ({"y_train": np.zeros(12, dtype=np.float32)}, "integers"),
    ],
)
def test_bad_file_contents_raise_value_error(tmp_path, overrides, message):
    _write_npz(tmp_path / "m.npz", **overrides)
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path / "m.npz")


def test_offline_download_raises_data_unavailable(monkeypatch, tmp_path):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataUnavailableError, match="--data PATH.npz"):
        load_mnist(None, root=str(tmp_path))


def test_download_path_converts_torchvision_dataset(monkeypatch, tmp_path):
    import torchvision.datasets

    class FakeMNIST:
        def __init__(self, root, train, download):
            n = 7 if train else 3
            self.data = torch.full((n, 28, 28), 9, dtype=torch.uint8)
            self.targets = torch.arange(n) % 10

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = load_mnist(None, root=str(tmp_path))
    assert data.x_train.shape == (7, 1, 28, 28) and data.x_test.shape == (3, 1, 28, 28)
    assert data.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_train_validation_split_takes_the_last_examples():
    images = torch.arange(20).view(20, 1)
    labels = torch.arange(20)
    x_tr, y_tr, x_va, y_va = train_validation_split(images, labels, num_validation=6)
    assert y_tr.tolist() == list(range(14)) and y_va.tolist() == list(range(14, 20))
    assert x_va.shape == (6, 1)
    with pytest.raises(ValueError, match="num_validation"):
        train_validation_split(images, labels, num_validation=20)
    with pytest.raises(ValueError, match="disagree"):
        train_validation_split(images, labels[:5])


def test_binarize_fixed_is_reproducible_and_documented_seed():
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(123)
    first = binarize_fixed(images)
    torch.manual_seed(456)  # the global RNG must not matter
    second = binarize_fixed(images)
    assert torch.equal(first, second)
    assert data_module.TEST_BINARIZATION_SEED == 0
    generator = torch.Generator().manual_seed(0)
    reference = (torch.rand(images.shape, generator=generator) < images.float() / 255).float()
    assert torch.equal(first, reference)
    assert not torch.equal(first, binarize_fixed(images, seed=1))


def test_binarization_extremes_and_mean():
    zeros = torch.zeros(4, 784, dtype=torch.uint8)
    full = torch.full((4, 784), 255, dtype=torch.uint8)
    assert binarize(zeros).sum() == 0 and binarize(full).min() == 1
    # Monte Carlo: mean of Bernoulli(0.3) over n draws, tolerance 5 standard errors.
    gray = torch.full((200_000,), 0.3)
    generator = torch.Generator().manual_seed(1)
    mean = binarize(gray, generator=generator).mean().item()
    standard_error = (0.3 * 0.7 / 200_000) ** 0.5
    assert abs(mean - 0.3) < 5 * standard_error
    assert set(binarize(gray[:100]).unique().tolist()) <= {0.0, 1.0}


def test_binarize_rejects_bad_inputs():
    with pytest.raises(ValueError, match="lie in"):
        binarize(torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="dtype"):
        binarize(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        binarize(np.zeros(3))


@pytest.mark.slow
def test_real_mnist_file_matches_its_readme():
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist.npz")
    if not os.path.isfile(path):
        pytest.skip("offline MNIST copy not present")
    data = load_mnist(path)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    counts = torch.bincount(data.y_train, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
