"""Train a teacher for class-wise distillation, and measure what CKD needs from it.

    python -m ckd.teacher --architecture mnist-conv --dataset mnist --data data/mnist.npz --out runs/teacher
    accelerate launch -m ckd.teacher --architecture wrn-40-2 --dataset cifar100 --preset cifar --out runs/wrn-40-2

The architecture and the dataset are picked here; training, the run folder and ``OUT/classifier.pt`` come from
:mod:`common.classifier`. After training, the penultimate activations of the first ``--stats-images`` clean
training images give the two numbers CKD uses, stored in ``classifier.pt``: ``kappa_mle`` (the maximum-likelihood
kappa with the final layer's directions held fixed) and ``mean_activation_norm`` (the mean |a|), where
``VMFPrior.class_affinity`` of a prior built from that checkpoint finds its activation norm.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import torch

from ckd.models import build_model, check_architecture
from ckd.train import DATASETS, PRESETS, load_dataset
from common.classifier import OPTIMIZERS, train_classifier
from common.cli import run_cli, set_threads
from common.config import option, parse_config
from common.run import SCHEDULES

__all__ = ["TeacherConfig", "train_teacher", "TEACHER_CHECKPOINT"]

TEACHER_CHECKPOINT = "classifier.pt"


@dataclass
class TeacherConfig:
    """Settings of one teacher run (saved in config.json and every checkpoint)."""

    architecture: str = option("mnist-conv", "mnist-conv, mnist-conv-half, mnist-conv-W (an optional -nobias or "
                                             "-cosine suffix), or wrn-D-K")
    feature_dim: Optional[int] = option(None, "penultimate dimension d of an mnist-conv net (None: 64; a WRN has "
                                              "its own)")
    dataset: str = option("mnist", "the dataset", choices=DATASETS)
    data: Optional[str] = option(None, "the dataset's .npz file (None: download with torchvision)")
    out: str = option("runs/ckd-teacher", "run folder: config.json, last.pt, metrics.jsonl, classifier.pt")
    epochs: int = option(5, "training epochs")
    batch_size: int = option(128, "global batch size (split across processes)")
    optimizer: str = option("adam", "adam, or sgd with nesterov momentum", choices=OPTIMIZERS)
    learning_rate: float = option(1e-3, "initial step size")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "L2 weight decay")
    schedule: str = option("constant", "learning-rate schedule: constant, cosine (per step, to 0), linear, or step "
                                       "(x0.1 after each milestone epoch)", choices=SCHEDULES)
    milestones: tuple[int, ...] = option((), "epochs after which the step schedule multiplies the rate by 0.1")
    augment: bool = option(False, "random crop (pad 4) and horizontal flip per batch (CIFAR)")
    num_validation: int = option(0, "the last N training images are held out for validation accuracy (0: none)")
    train_subset: Optional[int] = option(None, "use only the first N training images")
    stats_images: int = option(10_000, "clean training images whose activations give kappa's MLE and the mean |a|")
    seed: int = option(0, "seeds initialization, shuffling and augmentation")
    resume: bool = option(False, "continue OUT/last.pt exactly; refuses a different config")
    stop_after: Optional[int] = option(None, "stop after this epoch (continue later with --resume)")
    progress: bool = option(False, "show a progress bar")
    cpu: bool = option(False, "use the CPU even when a GPU is present")
    threads: Optional[int] = option(None, "torch CPU threads (None: torch's default; 1 suits a busy shared CPU)")


def train_teacher(config: TeacherConfig, data=None, log=None) -> dict:
    """Train (or resume) a teacher on ``config.out``; returns ``common.classifier.train_classifier``'s result."""
    data = data if data is not None else load_dataset(config.dataset, config.data)
    check_architecture(config.architecture, data.image_shape)
    torch.manual_seed(config.seed)
    model = build_model(config.architecture, data.num_classes, data.image_shape, config.feature_dim)
    augment = None
    if config.augment:
        from common.wrn import augment
    return train_classifier(config, model, data, kind="ckd-teacher", augment=augment, log=log)


def main(argv=None) -> dict | int:
    """Command-line entry point."""
    config = parse_config(TeacherConfig, argv, prog="python -m ckd.teacher", description=__doc__.split("\n\n")[0],
                          presets=PRESETS)
    set_threads(config.threads)
    result = train_teacher(config)
    if result["stopped"] == "non-finite loss":
        print(f"error: non-finite training loss in {config.out}; its last checkpoint is kept (lower "
              "--learning-rate, then --resume)", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
