"""The datasets ``python -m common.data`` builds, and its parser: no numpy or torch here, so that
``python -m common.data --help`` and a mistyped argument are answered before the loaders import them
(``common.config.answer_early``). :mod:`common.data` re-exports :data:`DATASETS` and :data:`DEFAULT_ROOT`.
"""

from __future__ import annotations

from common.cli import ArgumentParser

__all__ = ["DATASETS", "DEFAULT_ROOT", "data_parser"]

DEFAULT_ROOT = "~/.cache/vmfprior"
"""Where torchvision downloads to by default."""
DATASETS = {
    # name: (torchvision class, default output, folder names torchvision uses under its root)
    "mnist": ("MNIST", "data/mnist.npz", ("MNIST/raw", "raw", "")),
    "cifar10": ("CIFAR10", "data/cifar10.npz", ("cifar-10-batches-py", "")),
    "cifar100": ("CIFAR100", "data/cifar100.npz", ("cifar-100-python", "")),
    "cifar10-small": ("CIFAR10", "data/cifar10-small.npz", ("cifar-10-batches-py", "")),
}
"""The datasets the data command builds: torchvision class, default output path, folders searched under a root."""


def data_parser() -> ArgumentParser:
    """The parser of ``python -m common.data``."""
    parser = ArgumentParser(
        prog="python -m common.data",
        description="Build the .npz archives the experiments take with --data, from torchvision's download or "
        "from a torchvision dataset folder you already have (offline).",
        epilog="examples: python -m common.data mnist; python -m common.data all --from-folder ~/datasets",
    )
    parser.add_argument(
        "datasets",
        nargs="+",
        choices=[*DATASETS, "all"],
        metavar="DATASET",
        help="what to build: mnist, cifar10, cifar100, cifar10-small (the CPU-scale GAN data: "
        "1,000 training and 200 test images per class, drawn with seed 0, JPEG quality 75), "
        "or all (mnist, cifar10 and cifar100)",
    )
    parser.add_argument(
        "--from-folder",
        metavar="PATH",
        default=None,
        help="read an existing torchvision dataset folder instead of downloading: a folder holding "
        "MNIST/raw/ (idx files), cifar-10-batches-py/ or cifar-100-python/, or that folder "
        "itself",
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        default=DEFAULT_ROOT,
        help=f"where torchvision downloads to when --from-folder is not given (default: {DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=None,
        help="output file, for a single dataset (default: DATASET.npz in --out-dir)",
    )
    parser.add_argument(
        "--out-dir",
        metavar="DIR",
        default="data",
        help="folder of the default outputs mnist.npz, cifar10.npz, cifar100.npz, cifar10-small.npz (default: data)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild an output that already exists")
    return parser
