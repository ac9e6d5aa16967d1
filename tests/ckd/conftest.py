"""Tiny MNIST-shaped data and a tiny trained teacher, shared by the ckd tests."""

import numpy as np
import pytest
import torch

from common.data import ImageData


def synthetic_arrays(num_train=256, num_test=64, seed=0, num_classes=10, shape=(28, 28)):
    """Arrays in the offline .npz layout: class c lights up a block at a class-specific place."""
    rng = np.random.default_rng(seed)

    def make(count):
        labels = rng.integers(0, num_classes, size=count)
        images = rng.integers(0, 40, size=(count, *shape)).astype(np.uint8)
        for index, label in enumerate(labels):
            row, col = 2 + 5 * ((label % 10) // 4), 2 + 6 * (label % 4)
            images[index, row : row + 6, col : col + 6] = 230
        return images, labels.astype(np.int64)

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def as_image_data(arrays):
    return ImageData(
        x_train=torch.from_numpy(arrays["x_train"]).unsqueeze(1),
        y_train=torch.from_numpy(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]).unsqueeze(1),
        y_test=torch.from_numpy(arrays["y_test"]),
    )


@pytest.fixture
def tiny_data():
    return as_image_data(synthetic_arrays())


@pytest.fixture
def tiny_npz(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, **synthetic_arrays())
    return path


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A teacher run folder: mnist-conv-4 trained for 2 epochs of 256 synthetic images."""
    from ckd.teacher import TeacherConfig, train_teacher

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("teacher")
    result = train_teacher(
        TeacherConfig(
            architecture="mnist-conv-4",
            out=str(out),
            epochs=2,
            batch_size=64,
            learning_rate=1e-2,
            stats_images=256,
            progress=False,
            cpu=True,
        ),
        data=as_image_data(synthetic_arrays()),
        log=lambda *_: None,
    )
    torch.set_num_threads(previous)
    return out, result
