"""MNIST, CIFAR-10 and CIFAR-100: load them, and build the local ``.npz`` archives the loaders take.

Build the archives once (from torchvision's download, or from a torchvision dataset folder you already have)::

    python -m common.data mnist cifar10 cifar100                 # download; writes data/mnist.npz, ...
    python -m common.data mnist --from-folder ~/datasets          # offline: a folder holding MNIST/raw/...
    python -m common.data cifar10 --from-folder ~/datasets        # ... or cifar-10-batches-py/

then pass ``--data data/mnist.npz`` (or ``data/cifar10.npz``, ``data/cifar100.npz``) to the experiments.

The loaders return an :class:`ImageData` with uint8 images ``(N, C, H, W)`` (channels first) and int64
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

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from common.data_config import data_parser

    answer_early(data_parser())

import gzip
import io
import os
import pickle
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import DataUnavailableError
from common.data_config import DATASETS, DEFAULT_ROOT, data_parser

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
    "DATASETS",
    "SMALL_SUBSET",
    "small_subset",
    "read_torchvision_folder",
    "build_npz",
    "main",
]

QUICK_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist-quick.npz"
"""The MNIST subset that ships in the repository (6,000 training and 1,000 test images; see data/README.md)."""
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
TEST_BINARIZATION_SEED = 0
"""Seed of the single Bernoulli draw that binarizes the MNIST test set (documented; do not change)."""
NUM_VALIDATION = 10_000
"""Size of the validation split: the last this-many training images."""


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
        channels, height, width = self.x_train.shape[1:]
        return int(channels), int(height), int(width)


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
            f"On an offline machine pass --data PATH.npz, a numpy archive with keys {', '.join(NPZ_KEYS)}; "
            f"build one with: python -m common.data {name.lower()} --from-folder PATH (a torchvision dataset folder)."
        ) from error
    arrays = {
        "x_train": np.asarray(train.data),
        "y_train": np.asarray(train.targets),
        "x_test": np.asarray(test.data),
        "y_test": np.asarray(test.targets),
    }
    hw = (28, 28) if channels == 1 else (32, 32)
    return _to_image_data(
        arrays, source=f"torchvision {name}", channels=channels, height_width=hw, num_classes=num_classes
    )


def _load_npz(
    path: str | os.PathLike, name: str, channels: int, height_width: tuple[int, int], num_classes: int = 10
) -> ImageData:
    """Read and validate a local ``.npz`` archive."""
    path = os.path.expanduser(os.fspath(path))
    build = f"python -m common.data {name.lower().replace('-', '')}"
    if os.path.isdir(path):
        raise DataUnavailableError(
            f"{name} data file {path!r} is a directory, not a file. Pass --data PATH.npz, the archive itself "
            f"(build it with: {build} --from-folder {path}, if it is a torchvision dataset folder)."
        )
    if not os.path.isfile(path):
        raise DataUnavailableError(
            f"{name} data file {path!r} does not exist. Pass --data PATH.npz pointing to a numpy archive with "
            f"keys {', '.join(NPZ_KEYS)} (build it with: {build}), or leave --data out to download with torchvision."
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataUnavailableError(
                f"{name} data file {path!r} holds a single array ({type(loaded).__name__}), not an .npz archive "
                f"with keys {', '.join(NPZ_KEYS)}. Build one with: {build}"
            )
        with loaded as archive:
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


def _to_image_data(
    arrays: dict, source: str, channels: int, height_width: tuple[int, int], num_classes: int = 10
) -> ImageData:
    """Validate raw arrays (images NHW or NHWC uint8, labels 1-D integers) and convert to channels-first tensors."""
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim == 0 or images.shape[0] == 0:
            raise ValueError(f"{source}: x_{split} holds no images; the {split} split must not be empty")
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
            raise ValueError(
                f"{source}: y_{split} labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
            )
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


# ----------------------------------------------------------------------------------------------------------------
# Building the .npz archives: python -m common.data
# ----------------------------------------------------------------------------------------------------------------


SMALL_SUBSET = {"train_per_class": 1000, "test_per_class": 200, "jpeg_quality": 75, "seed": 0}
"""``cifar10-small``, the CPU-scale GAN data: this many training and test images per class, drawn at random with
this seed from CIFAR-10, each compressed once as a JPEG of this quality (10,000 and 2,000 images)."""


def small_subset(
    arrays: dict[str, np.ndarray], train_per_class: int, test_per_class: int, jpeg_quality: int, seed: int
) -> dict[str, np.ndarray]:
    """A class-balanced random subset of a CIFAR archive's arrays, every image passed once through JPEG.

    Args:
        arrays: the four arrays of the ``.npz`` layout, images ``(N, 32, 32, 3)`` uint8.
        train_per_class, test_per_class: images kept per class in each split (without replacement).
        jpeg_quality: quality of the one JPEG compression (1-95, Pillow's scale).
        seed: the draw's seed; the kept images are shuffled, so classes interleave.

    Returns:
        the four arrays of the subset, labels int64.
    """
    rng = np.random.default_rng(seed)
    subset = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.asarray(arrays[f"y_{split}"])
        counts = np.bincount(labels)  # a class between 0 and the largest label with no image counts 0
        classes = np.arange(counts.shape[0])
        if counts.min() < per_class:
            raise ValueError(
                f"the {split} split has only {counts.min()} images of class {counts.argmin()}; "
                f"{per_class} per class were asked for"
            )
        chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes])
        rng.shuffle(chosen)
        subset[f"x_{split}"] = np.stack(
            [_jpeg_round_trip(image, jpeg_quality) for image in arrays[f"x_{split}"][chosen]]
        )
        subset[f"y_{split}"] = labels[chosen].astype(np.int64)
    return subset


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """An (H, W, 3) uint8 image compressed as a JPEG of ``quality`` and decoded again (Pillow)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_CIFAR_FILES = {
    "cifar10": ([f"data_batch_{index}" for index in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": (["train"], ["test"], "fine_labels"),
}
_IDX_UBYTE = 0x08  # the idx format's type code for unsigned bytes: MNIST's images and labels both use it


def _read_idx(path: str) -> np.ndarray:
    """Read an idx file (MNIST's format: big-endian header, then unsigned bytes), plain or gzipped."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        payload = handle.read()
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != _IDX_UBYTE:
        raise ValueError(f"{path!r} is not an idx file of unsigned bytes (MNIST's format)")
    ndim = payload[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(payload[4 + 4 * axis : 8 + 4 * axis], "big") for axis in range(ndim))
    if len(payload) != header + int(np.prod(shape)):
        raise ValueError(f"{path!r} holds {len(payload) - header} bytes of data, its header says shape {shape}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_folder(root: str, candidates: tuple[str, ...], marker: str) -> str | None:
    """The first ``root/candidate`` holding ``marker`` (or ``marker.gz``), or None."""
    for candidate in candidates:
        folder = os.path.join(root, candidate) if candidate else root
        if os.path.isfile(os.path.join(folder, marker)) or os.path.isfile(os.path.join(folder, marker + ".gz")):
            return folder
    return None


def read_torchvision_folder(name: str, root: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torchvision dataset folder into the ``.npz`` layout, without torchvision.

    Args:
        name: "mnist", "cifar10" or "cifar100".
        root: a folder holding ``MNIST/raw/`` (idx files, plain or ``.gz``), ``cifar-10-batches-py/`` or
            ``cifar-100-python/`` (pickled batches), or that inner folder itself.

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test"}``: uint8 images ``(N, 28, 28)`` (MNIST) or
        ``(N, 32, 32, 3)`` (CIFAR, channels last) and int64 labels ``(N,)``, in the files' order.

    Raises:
        FileNotFoundError: no such folder, or it lacks the dataset's files (the message lists what it looked for).
        ValueError: a file is there but unreadable or inconsistent.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--from-folder {root!r} is not a folder")
    _, _, candidates = DATASETS[name]
    if name == "mnist":
        folder = _find_folder(root, candidates, _MNIST_FILES["x_train"])
        if folder is None:
            raise FileNotFoundError(
                f"--from-folder {root!r} holds no MNIST: looked for {_MNIST_FILES['x_train']}[.gz] in "
                f"{', '.join(os.path.join(root, c) if c else root for c in candidates)}"
            )
        mnist: dict[str, np.ndarray] = {}
        for key, stem in _MNIST_FILES.items():
            path = os.path.join(folder, stem)
            path = path if os.path.isfile(path) else path + ".gz"
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--from-folder: MNIST folder {folder!r} lacks {stem}[.gz]")
            mnist[key] = _read_idx(path)
        for split in ("train", "test"):
            split_images, split_labels = mnist[f"x_{split}"], mnist[f"y_{split}"]
            if split_images.ndim != 3 or split_labels.ndim != 1 or split_images.shape[0] != split_labels.shape[0]:
                raise ValueError(
                    f"MNIST folder {folder!r}: {split} images {split_images.shape} and labels "
                    f"{split_labels.shape} do not match"
                )
            mnist[f"y_{split}"] = split_labels.astype(np.int64)
        return mnist
    train_files, test_files, label_key = _CIFAR_FILES[name]
    folder = _find_folder(root, candidates, test_files[0])
    if folder is None:
        raise FileNotFoundError(
            f"--from-folder {root!r} holds no {DATASETS[name][0]}: looked for {test_files[0]} in "
            f"{', '.join(os.path.join(root, c) if c else root for c in candidates)}"
        )
    arrays: dict[str, np.ndarray] = {}
    for split, files in (("train", train_files), ("test", test_files)):
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for file_name in files:
            path = os.path.join(folder, file_name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--from-folder: {DATASETS[name][0]} folder {folder!r} lacks {file_name}")
            try:
                with open(path, "rb") as handle:
                    # The batches are Python-2 pickles of numpy arrays; latin1 is the encoding that reads them.
                    entry = pickle.load(handle, encoding="latin1")
                rows, batch_labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(
                    f"{path!r} is not a {DATASETS[name][0]} batch ({type(error).__name__}: {error})"
                ) from error
            if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32:
                raise ValueError(f"{path!r}: data must be uint8 rows of 3072 values, got {rows.dtype} {rows.shape}")
            if batch_labels.shape != (rows.shape[0],):
                raise ValueError(f"{path!r}: {rows.shape[0]} images but labels of shape {batch_labels.shape}")
            # Each row is the red, green and blue 32x32 planes in turn: (N, C, H, W) -> channels last.
            images.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(batch_labels.astype(np.int64))
        arrays[f"x_{split}"] = np.ascontiguousarray(np.concatenate(images))
        arrays[f"y_{split}"] = np.concatenate(labels)
    return arrays


def _download_folder(name: str, root: str) -> str:
    """Let torchvision download ``name`` into ``root`` (it verifies checksums); return ``root``."""
    tv_name = DATASETS[name][0]
    try:
        import torchvision.datasets as tv_datasets

        for train in (True, False):
            getattr(tv_datasets, tv_name)(root, train=train, download=True)
    except Exception as error:  # noqa: BLE001 -- any download failure becomes one clear message
        raise DataUnavailableError(
            f"could not download {tv_name} with torchvision into {root!r} (offline? {type(error).__name__}: "
            f"{str(error).split('Tried')[0].strip().rstrip(':')[:200]}). Offline, pass --from-folder PATH: a folder "
            f"holding a torchvision {tv_name} "
            f"download ({DATASETS[name][2][0]}/...), e.g. copied from a machine that is online."
        ) from error
    return root


def build_npz(arrays: dict[str, np.ndarray], out: str | os.PathLike) -> None:
    """Write ``arrays`` to ``out`` as an ``.npz`` atomically: a reader sees the old file or the whole new one.

    Args:
        arrays: the four arrays of the ``.npz`` layout.
        out: output path (its folder is created).
    """
    out = os.path.expanduser(os.fspath(out))
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".npz")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            payload: dict[str, Any] = {key: arrays[key] for key in NPZ_KEYS}
            np.savez(handle, **payload)
        os.replace(partial, out)  # atomic on one filesystem: readers see the old file or the whole new one
    except BaseException:
        os.unlink(partial)
        raise


_LOADERS = {
    "mnist": "load_mnist",
    "cifar10": "load_cifar10",
    "cifar100": "load_cifar100",
    "cifar10-small": "load_cifar10",
}


def main(argv=None) -> int:
    """The data command: build data/mnist.npz, data/cifar10.npz, data/cifar100.npz and/or data/cifar10-small.npz."""
    from common.cli import UserError

    args = data_parser().parse_args(argv)
    requested = [name for name in args.datasets if name != "all"]
    if "all" in args.datasets:  # the full datasets; cifar10-small only when named
        requested = ["mnist", "cifar10", "cifar100", *requested]
    names = list(dict.fromkeys(requested))
    if args.out is not None and len(names) != 1:
        raise UserError(f"--out names one file but {len(names)} datasets were asked for; use --out-dir DIR instead")
    if args.from_folder is not None and not os.path.isdir(os.path.expanduser(args.from_folder)):
        raise UserError(f"--from-folder {args.from_folder!r} is not a folder")
    loaders = sys.modules[__name__]
    for name in names:
        out = args.out or os.path.join(args.out_dir, os.path.basename(DATASETS[name][1]))
        if os.path.isdir(out):
            raise UserError(f"--out {out!r} is a directory; name the .npz file to write")
        if os.path.exists(out) and not args.force:
            print(f"{out} exists; kept it (pass --force to rebuild)")
            continue
        source = name.removesuffix("-small")  # cifar10-small is drawn from cifar10
        if args.from_folder is not None:
            arrays = read_torchvision_folder(source, args.from_folder)
        else:
            root = os.path.expanduser(args.root)
            arrays = read_torchvision_folder(source, _download_folder(source, root))
        if name == "cifar10-small":
            arrays = small_subset(arrays, **SMALL_SUBSET)
        # Check with the loader the experiments use before anything is written.
        _to_image_data(
            dict(arrays),
            source=f"{name} from {args.from_folder or args.root}",
            channels=1 if name == "mnist" else 3,
            height_width=(28, 28) if name == "mnist" else (32, 32),
            num_classes=100 if name == "cifar100" else 10,
        )
        build_npz(arrays, out)
        getattr(loaders, _LOADERS[name])(out)
        print(
            f"wrote {out}: {arrays['x_train'].shape[0]} training and {arrays['x_test'].shape[0]} test images "
            f"(pass --data {out})"
        )
    return 0


if __name__ == "__main__":
    # Run through the imported module, so the exceptions are the ones common.cli knows.
    from common.cli import run_cli
    from common.data import main as _main

    sys.exit(run_cli(_main))
