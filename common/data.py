"""MNIST, CIFAR-10 and CIFAR-100 loading: a torchvision download, or a local ``.npz`` archive for offline machines.

Both loaders return an :class:`ImageData` with uint8 images ``(N, C, H, W)`` (channels first) and int64
labels ``(N,)``. The ``.npz`` format has the keys ``x_train``, ``y_train``,
``x_test``, ``y_test``; images ``NHW`` or ``NHWC`` uint8.

MNIST helpers for the VAEs live here too, so every model sees the same bits:

* :func:`train_validation_split` -- the last 10,000 training images are the validation split.
* :func:`binarize` -- dynamic binarization: a fresh Bernoulli draw ``x ~ Bernoulli(pixel / 255)`` per call.
* :func:`binarize_fixed` -- the test set binarized once, with the documented seed
  :data:`TEST_BINARIZATION_SEED` (= 0) on a CPU ``torch.Generator``, so the bits do not depend on the
  device or on any global RNG state.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataUnavailableError",
    "ImageData",
    "load_mnist",
    "load_cifar10",
    "load_cifar100",
    "train_validation_split",
    "binarize",
    "binarize_fixed",
    "TEST_BINARIZATION_SEED",
    "NUM_VALIDATION",
    "QUICK_MNIST",
]

DEFAULT_ROOT = "~/.cache/vmfprior"
QUICK_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist-quick.npz"
"""The MNIST subset that ships in the repository (6,000 training and 1,000 test images; see data/README.md)."""
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
TEST_BINARIZATION_SEED = 0
"""Seed of the single Bernoulli draw that binarizes the MNIST test set (documented; do not change)."""
NUM_VALIDATION = 10_000
"""Size of the validation split: the last this-many training images."""


class DataUnavailableError(RuntimeError):
    """The dataset could not be obtained: download failed (offline) or the local file is missing/corrupt."""


@dataclass
class ImageData:
    """An image classification dataset held in memory.

    Attributes:
        x_train: uint8 images ``(N_train, C, H, W)``.
        y_train: int64 labels ``(N_train,)``.
        x_test: uint8 images ``(N_test, C, H, W)``.
        y_test: int64 labels ``(N_test,)``.
        num_classes: number of classes (10 for MNIST and CIFAR-10, 100 for CIFAR-100).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])


def load_mnist(data: str | os.PathLike | None = None, root: str = DEFAULT_ROOT) -> ImageData:
    """Load MNIST: from ``data`` (a ``.npz`` path) if given, else download with torchvision into ``root``.

    Args:
        data: path to an ``.npz`` archive (keys x_train, y_train, x_test, y_test) or None to download.
        root: torchvision download folder (``~`` expanded).

    Returns:
        ImageData with images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64.

    Raises:
        DataUnavailableError: the download failed (e.g. offline) or the file is missing or unreadable.
        ValueError: the file is readable but has the wrong keys, shapes, dtypes or labels.
    """
    if data is not None:
        return _load_npz(data, name="MNIST", channels=1, height_width=(28, 28))
    return _download("MNIST", root, channels=1)


def load_cifar10(data: str | os.PathLike | None = None, root: str = DEFAULT_ROOT) -> ImageData:
    """Load CIFAR-10: from ``data`` (a ``.npz`` path) if given, else download with torchvision into ``root``.

    Args:
        data: path to an ``.npz`` archive (keys x_train, y_train, x_test, y_test) or None to download.
        root: torchvision download folder (``~`` expanded).

    Returns:
        ImageData with images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64.

    Raises:
        DataUnavailableError: the download failed (e.g. offline) or the file is missing or unreadable.
        ValueError: the file is readable but has the wrong keys, shapes, dtypes or labels.
    """
    if data is not None:
        return _load_npz(data, name="CIFAR-10", channels=3, height_width=(32, 32))
    return _download("CIFAR10", root, channels=3)


def load_cifar100(data: str | os.PathLike | None = None, root: str = DEFAULT_ROOT) -> ImageData:
    """Load CIFAR-100 (fine labels): from ``data`` (a ``.npz`` path) if given, else download with torchvision.

    Args:
        data: path to an ``.npz`` archive (keys x_train, y_train, x_test, y_test; labels 0..99) or None.
        root: torchvision download folder (``~`` expanded).

    Returns:
        ImageData with images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64 and ``num_classes = 100``.

    Raises:
        DataUnavailableError: the download failed (e.g. offline) or the file is missing or unreadable.
        ValueError: the file is readable but has the wrong keys, shapes, dtypes or labels.
    """
    if data is not None:
        return _load_npz(data, name="CIFAR-100", channels=3, height_width=(32, 32), num_classes=100)
    return _download("CIFAR100", root, channels=3, num_classes=100)


def _download(name: str, root: str, channels: int, num_classes: int = 10) -> ImageData:
    """Download ``name`` ("MNIST", "CIFAR10" or "CIFAR100") with torchvision and convert it to an ImageData."""
    root = os.path.expanduser(root)
    try:
        import torchvision.datasets as tv_datasets

        dataset_cls = getattr(tv_datasets, name)
        train = dataset_cls(root, train=True, download=True)
        test = dataset_cls(root, train=False, download=True)
    except Exception as error:  # noqa: BLE001 -- any download failure becomes one clear message
        raise DataUnavailableError(
            f"could not download {name} with torchvision into {root!r} ({type(error).__name__}: {error}). "
            f"On an offline machine pass --data PATH.npz, a numpy archive with keys {', '.join(NPZ_KEYS)} "
            "."
        ) from error
    arrays = {
        "x_train": np.asarray(train.data),
        "y_train": np.asarray(train.targets),
        "x_test": np.asarray(test.data),
        "y_test": np.asarray(test.targets),
    }
    hw = (28, 28) if channels == 1 else (32, 32)
    return _to_image_data(arrays, source=f"torchvision {name}", channels=channels, height_width=hw,
                          num_classes=num_classes)


def _load_npz(path: str | os.PathLike, name: str, channels: int, height_width: tuple[int, int],
              num_classes: int = 10) -> ImageData:
    """Read and validate a local ``.npz`` archive."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise DataUnavailableError(
            f"{name} data file {path!r} does not exist. Pass --data PATH.npz pointing to a numpy archive with "
            f"keys {', '.join(NPZ_KEYS)}, or leave --data out to download with torchvision."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise ValueError(
                    f"data file {path!r} lacks key(s) {missing}; it has {sorted(archive.files)}, "
                    f"expected {list(NPZ_KEYS)}"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except ValueError as error:
        if "lacks key" in str(error):
            raise
        raise DataUnavailableError(f"{name} data file {path!r} is corrupt or not a numpy archive: {error}") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataUnavailableError(f"{name} data file {path!r} is corrupt or not a numpy archive: {error}") from error
    return _to_image_data(arrays, source=path, channels=channels, height_width=height_width, num_classes=num_classes)


def _to_image_data(arrays: dict, source: str, channels: int, height_width: tuple[int, int],
                   num_classes: int = 10) -> ImageData:
    """Validate raw arrays (images NHW or NHWC uint8, labels 1-D integers) and convert to channels-first tensors."""
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.dtype != np.uint8:
            raise ValueError(f"{source}: x_{split} must be uint8, got dtype {images.dtype}")
        if images.ndim == 3 and channels == 1:
            images = images[:, None]
        elif images.ndim == 4 and images.shape[-1] == channels:
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        else:
            raise ValueError(
                f"{source}: x_{split} must have shape (N, H, W) or (N, H, W, {channels}), got {images.shape}"
            )
        if tuple(images.shape[2:]) != tuple(height_width):
            raise ValueError(f"{source}: x_{split} images must be {height_width}, got {tuple(images.shape[2:])}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{source}: y_{split} must have shape ({images.shape[0]},) to match x_{split}, got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{source}: y_{split} must hold integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > num_classes - 1):
            raise ValueError(f"{source}: y_{split} labels must lie in 0..{num_classes - 1}, "
                             f"got {labels.min()}..{labels.max()}")
        out[f"x_{split}"] = torch.from_numpy(np.ascontiguousarray(images))
        out[f"y_{split}"] = torch.from_numpy(labels.astype(np.int64))
    return ImageData(**out, num_classes=num_classes)


def train_validation_split(
    images: torch.Tensor, labels: torch.Tensor, num_validation: int = NUM_VALIDATION
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split off the last ``num_validation`` examples as the validation set (no shuffling: reproducible).

    Args:
        images: ``(N, ...)`` tensor.
        labels: ``(N,)`` tensor.
        num_validation: size of the validation split, ``0 < num_validation < N``.

    Returns:
        ``(train_images, train_labels, validation_images, validation_labels)``.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels disagree in length: {images.shape[0]} vs {labels.shape[0]}")
    if not 0 < num_validation < images.shape[0]:
        raise ValueError(f"num_validation must lie in 1..{images.shape[0] - 1}, got {num_validation}")
    cut = images.shape[0] - num_validation
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def binarize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: draw ``x ~ Bernoulli(intensity)`` afresh on every call.

    Args:
        images: uint8 images (intensity = value / 255) or float images in [0, 1], any shape.
        generator: optional ``torch.Generator`` on the images' device (None: the global RNG).

    Returns:
        float32 tensor of 0s and 1s with the shape and device of ``images``.
    """
    probs = _intensity(images)
    uniform = torch.rand(probs.shape, generator=generator, device=probs.device)
    return (uniform < probs).float()


def binarize_fixed(images: torch.Tensor, seed: int = TEST_BINARIZATION_SEED) -> torch.Tensor:
    """Binarize once with a fixed seed, so every model is scored on the same bits.

    The uniforms come from a CPU ``torch.Generator`` seeded with ``seed`` (default
    :data:`TEST_BINARIZATION_SEED` = 0) drawn in one ``torch.rand(images.shape)`` call; pixel ``j`` is 1 when its
    uniform is below ``value / 255``. The result is therefore the same on any device and independent of the
    global RNG. The MNIST test set used by ``eval.loglik`` is ``binarize_fixed(data.x_test)``.

    Args:
        images: uint8 images or float images in [0, 1], any shape.
        seed: the generator seed.

    Returns:
        float32 tensor of 0s and 1s, same shape and device as ``images``.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    probs = _intensity(images)
    uniform = torch.rand(probs.shape, generator=generator)
    return (uniform < probs.cpu()).float().to(images.device)


def _intensity(images: torch.Tensor) -> torch.Tensor:
    """Pixel intensities in [0, 1] as float32."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("float images must lie in [0, 1]")
    return images.float()
