"""Tests for common.data: npz loading and validation, offline errors, binarization, validation split."""

import io

import numpy as np
import pytest
import torch

from common import data as data_module
from common.data import DataUnavailableError, binarize, binarize_fixed, load_cifar10, load_mnist, train_validation_split


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


def _full_data_file(name):
    """The full archive the data command builds: $VMFPRIOR_DATA_DIR/name, else data/name in the repository."""
    import os
    from pathlib import Path

    folder = os.environ.get("VMFPRIOR_DATA_DIR") or Path(__file__).resolve().parents[2] / "data"
    path = Path(folder) / name
    if not path.is_file():
        pytest.skip(f"{path} not present: build it with `python -m common.data {name[:-4]}` or set VMFPRIOR_DATA_DIR")
    return path


@pytest.mark.slow
def test_real_mnist_file_matches_its_readme():
    path = _full_data_file("mnist.npz")
    data = load_mnist(path)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    counts = torch.bincount(data.y_train, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ------------------------------------------------------------------------------------------------------------
# The data command: python -m common.data, on fake torchvision folders
# ------------------------------------------------------------------------------------------------------------


def _write_idx(path, array):
    """An idx file as MNIST ships it: zero bytes, type 0x08 (ubyte), ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if str(path).endswith(".gz"):
        import gzip

        payload = gzip.compress(payload)
    path.write_bytes(payload)


def _fake_mnist_folder(root, n_train=9, n_test=4, gz=False, inner="MNIST/raw"):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    folder = root / inner if inner else root
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    for key, name in names.items():
        _write_idx(folder / (name + (".gz" if gz else "")), arrays[key])
    return arrays


def _fake_cifar_folder(root, hundred=False, per_batch=3):
    """Pickled batches as the CIFAR tarballs hold them: rows of 3072 bytes (R, G, B planes), labels as lists."""
    import pickle

    rng = np.random.default_rng(2)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    train_files, test_files = (
        (["train"], ["test"]) if hundred else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    )
    label_key, classes = ("fine_labels", 100) if hundred else ("labels", 10)
    images = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    for split, files in (("train", train_files), ("test", test_files)):
        for name in files:
            hwc = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
            batch_labels = rng.integers(0, classes, size=per_batch).tolist()
            rows = hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # (N, C, H, W) flattened
            entry = {"data": rows, label_key: batch_labels, "batch_label": name}
            if hundred:
                entry["coarse_labels"] = [label // 5 for label in batch_labels]
            with open(folder / name, "wb") as handle:
                pickle.dump(entry, handle, protocol=2)
            images[split].append(hwc)
            labels[split].extend(batch_labels)
    return {f"x_{s}": np.concatenate(images[s]) for s in images} | {f"y_{s}": np.array(labels[s]) for s in labels}


def _build(argv, capsys):
    from common.cli import run_cli

    status = run_cli(data_module.main, argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("gz, inner", [(False, "MNIST/raw"), (True, ""), (True, "raw")])
def test_build_mnist_from_folder_round_trips_exactly(tmp_path, capsys, gz, inner):
    arrays = _fake_mnist_folder(tmp_path / "tv", gz=gz, inner=inner)
    out = tmp_path / "data" / "mnist.npz"
    status, stdout, err = _build(["mnist", "--from-folder", str(tmp_path / "tv"), "--out", str(out)], capsys)
    assert status == 0 and err == "" and "9 training and 4 test images" in stdout
    data = load_mnist(out)
    np.testing.assert_array_equal(data.x_train[:, 0].numpy(), arrays["x_train"])
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), arrays["x_test"])
    np.testing.assert_array_equal(data.y_train.numpy(), arrays["y_train"])
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["y_test"])
    with np.load(out) as archive:
        assert archive["x_train"].shape == (9, 28, 28) and archive["y_train"].dtype == np.int64


def test_mnist_fixture_reads_the_same_through_torchvision(tmp_path):
    """The fixture is in the real format: torchvision's own MNIST reader agrees with the builder."""
    import torchvision.datasets

    _fake_mnist_folder(tmp_path)
    ours = data_module.read_torchvision_folder("mnist", tmp_path)
    for split, train in (("train", True), ("test", False)):
        theirs = torchvision.datasets.MNIST(str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(ours[f"x_{split}"], theirs.data.numpy())
        np.testing.assert_array_equal(ours[f"y_{split}"], theirs.targets.numpy())


@pytest.mark.parametrize("hundred", [False, True])
def test_build_cifar_from_folder_round_trips_exactly_and_agrees_with_torchvision(
    tmp_path, capsys, monkeypatch, hundred
):
    import torchvision.datasets

    arrays = _fake_cifar_folder(tmp_path / "tv", hundred=hundred)
    name = "cifar100" if hundred else "cifar10"
    status, _, err = _build([name, "--from-folder", str(tmp_path / "tv"), "--out-dir", str(tmp_path / "d")], capsys)
    assert status == 0 and err == ""
    out = tmp_path / "d" / f"{name}.npz"
    data = (data_module.load_cifar100 if hundred else load_cifar10)(out)
    assert data.num_classes == (100 if hundred else 10)
    n_train = 3 if hundred else 15
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    for split in ("train", "test"):
        np.testing.assert_array_equal(data.__dict__[f"x_{split}"].permute(0, 2, 3, 1).numpy(), arrays[f"x_{split}"])
        np.testing.assert_array_equal(data.__dict__[f"y_{split}"].numpy(), arrays[f"y_{split}"])
    # torchvision's reader on the same folder (its checksum test would reject fixtures: skip only that).
    cls = torchvision.datasets.CIFAR100 if hundred else torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cls, "_load_meta", lambda self: None)
    theirs = cls(str(tmp_path / "tv"), train=True, download=False)
    np.testing.assert_array_equal(data.x_train.permute(0, 2, 3, 1).numpy(), theirs.data)
    np.testing.assert_array_equal(data.y_train.numpy(), np.array(theirs.targets))


def test_build_all_writes_the_default_paths(tmp_path, capsys, monkeypatch):
    _fake_mnist_folder(tmp_path / "tv")
    _fake_cifar_folder(tmp_path / "tv")
    _fake_cifar_folder(tmp_path / "tv", hundred=True)
    monkeypatch.chdir(tmp_path)
    status, stdout, err = _build(["all", "--from-folder", "tv"], capsys)
    assert status == 0 and err == ""
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar10.npz", "cifar100.npz", "mnist.npz"]
    # A second run keeps what is there unless --force.
    before = (tmp_path / "data" / "mnist.npz").stat().st_mtime_ns
    status, stdout, err = _build(["mnist", "--from-folder", "tv"], capsys)
    assert status == 0 and "kept it" in stdout and (tmp_path / "data" / "mnist.npz").stat().st_mtime_ns == before


def test_offline_without_folder_is_one_error_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    out = tmp_path / "data" / "mnist.npz"
    status, stdout, err = _build(["mnist", "--root", str(tmp_path / "cache"), "--out", str(out)], capsys)
    assert status == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("error: could not download MNIST") and "--from-folder PATH" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["mnist", "--from-folder", "{tmp}/nowhere"], "--from-folder .*nowhere' is not a folder"),
        (["mnist", "--from-folder", "{tmp}"], "holds no MNIST: looked for train-images-idx3-ubyte"),
        (["cifar10", "--from-folder", "{tmp}"], "holds no CIFAR10: looked for test_batch"),
        (["mnist", "cifar10", "--out", "{tmp}/x.npz"], "--out names one file but 2 datasets"),
        (["imagenet"], "invalid choice: 'imagenet'"),
        (["mnist", "--from-folder", "{tmp}", "--out", "{tmp}"], "is a directory"),
    ],
)
def test_data_command_mistakes_are_one_error_line(tmp_path, capsys, monkeypatch, argv, message):
    import re

    monkeypatch.chdir(tmp_path)  # the default outputs go to data/ under the working folder

    status, _, err = _build([arg.replace("{tmp}", str(tmp_path)) for arg in argv], capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(message, err), err


def test_failed_rebuild_leaves_the_old_file_and_no_partial_file(tmp_path, capsys):
    _fake_cifar_folder(tmp_path / "tv")
    out = tmp_path / "cifar10.npz"
    out.write_bytes(b"old contents")
    (tmp_path / "tv" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    status, _, err = _build(["cifar10", "--from-folder", str(tmp_path / "tv"), "--out", str(out), "--force"], capsys)
    assert status == 2 and "data_batch_3" in err and "is not a CIFAR10 batch" in err
    assert out.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10.npz", "tv"]


def test_build_npz_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    out = tmp_path / "m.npz"
    out.write_bytes(b"old")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space"):
        data_module.build_npz({key: np.zeros(1) for key in data_module.NPZ_KEYS}, out)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_data_command_runs_as_a_module(tmp_path):
    """``python -m common.data`` itself: --help, and an error line from the real entry point."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    help_text = subprocess.run(
        [sys.executable, "-m", "common.data", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert help_text.returncode == 0
    for option in ("--from-folder", "--root", "--out", "--out-dir", "--force"):
        assert option in help_text.stdout
    _fake_mnist_folder(tmp_path / "tv")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.data",
            "mnist",
            "--from-folder",
            str(tmp_path / "tv"),
            "--out",
            str(tmp_path / "m.npz"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and load_mnist(tmp_path / "m.npz").x_train.shape == (9, 1, 28, 28)
    result = subprocess.run(
        [sys.executable, "-m", "common.data", "mnist", "--from-folder", str(tmp_path / "none")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (
        result.returncode == 2 and result.stderr.startswith("error: --from-folder") and "Traceback" not in result.stderr
    )


# ------------------------------------------------------------------------------------------------------------
# Loader errors name the file
# ------------------------------------------------------------------------------------------------------------


def test_npy_file_is_one_clear_error_naming_it(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 28, 28), dtype=np.uint8))
    with pytest.raises(DataUnavailableError, match=r"x\.npy' holds a single array .*not an \.npz archive"):
        load_mnist(path)


def test_directory_as_data_is_reported_as_a_directory(tmp_path):
    with pytest.raises(DataUnavailableError, match="is a directory, not a file") as caught:
        load_cifar10(tmp_path)
    assert "does not exist" not in str(caught.value) and str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_is_rejected_naming_the_file(tmp_path, split):
    _write_npz(
        tmp_path / "m.npz",
        **{f"x_{split}": np.zeros((0, 28, 28), dtype=np.uint8), f"y_{split}": np.zeros(0, dtype=np.int64)},
    )
    with pytest.raises(ValueError, match=rf"m\.npz.*x_{split} holds no images"):
        load_mnist(tmp_path / "m.npz")


def test_small_subset_is_balanced_seeded_and_each_image_is_its_source_through_one_jpeg():
    from PIL import Image

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(10), 7)
    # Smooth images (a per-image colour gradient), which JPEG keeps within a few levels, each tagged by its index.
    ramp = np.linspace(0, 1, 32)[None, :, None, None] * np.ones((1, 1, 32, 1))
    colours = rng.integers(40, 200, size=(70, 1, 1, 3))
    images = np.clip(colours + 50 * ramp, 0, 255).astype(np.uint8)
    arrays = {"x_train": images, "y_train": labels, "x_test": images[::-1].copy(), "y_test": labels[::-1].copy()}
    subset = data_module.small_subset(arrays, train_per_class=3, test_per_class=2, jpeg_quality=75, seed=0)
    assert subset["x_train"].shape == (30, 32, 32, 3) and subset["x_test"].shape == (20, 32, 32, 3)
    assert np.bincount(subset["y_train"]).tolist() == [3] * 10 and np.bincount(subset["y_test"]).tolist() == [2] * 10
    assert subset["y_train"].dtype == np.int64 and len(set(subset["y_train"][:10].tolist())) > 1  # interleaved
    for split in ("train", "test"):
        for image, label in zip(subset[f"x_{split}"], subset[f"y_{split}"]):
            distance = np.abs(arrays[f"x_{split}"].astype(int) - image.astype(int)).mean(axis=(1, 2, 3))
            source = int(distance.argmin())
            assert arrays[f"y_{split}"][source] == label and distance[source] < 3  # its own source, its label
            buffer = io.BytesIO()
            Image.fromarray(arrays[f"x_{split}"][source]).save(buffer, format="JPEG", quality=75)
            np.testing.assert_array_equal(np.asarray(Image.open(buffer).convert("RGB")), image)  # exactly one pass
    again = data_module.small_subset(arrays, train_per_class=3, test_per_class=2, jpeg_quality=75, seed=0)
    np.testing.assert_array_equal(again["x_train"], subset["x_train"])
    other = data_module.small_subset(arrays, train_per_class=3, test_per_class=2, jpeg_quality=75, seed=1)
    assert not np.array_equal(other["y_train"], subset["y_train"])
    with pytest.raises(ValueError, match="only 7 images of class 0; 8 per class"):
        data_module.small_subset(arrays, train_per_class=8, test_per_class=2, jpeg_quality=75, seed=0)


def test_build_cifar10_small_from_folder(tmp_path, capsys, monkeypatch):
    _fake_cifar_folder(tmp_path / "tv", per_batch=60)  # 300 training and 60 test images, every class in each
    monkeypatch.setattr(
        data_module, "SMALL_SUBSET", {"train_per_class": 5, "test_per_class": 1, "jpeg_quality": 75, "seed": 0}
    )
    monkeypatch.chdir(tmp_path)
    status, stdout, err = _build(["cifar10-small", "--from-folder", "tv"], capsys)
    assert status == 0 and err == "" and "50 training and 10 test images" in stdout
    data = load_cifar10(tmp_path / "data" / "cifar10-small.npz")
    assert data.x_train.shape == (50, 3, 32, 32) and torch.bincount(data.y_train).tolist() == [5] * 10
