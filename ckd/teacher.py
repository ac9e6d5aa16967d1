"""Train a teacher for class-wise distillation, and measure what CKD needs from it.

    python -m ckd.teacher --architecture mnist-conv --dataset mnist --data PATH.npz --out runs/teacher
    accelerate launch -m ckd.teacher --architecture wrn-40-2 --dataset cifar100 --preset cifar --out runs/wrn-40-2

The same training loop as ``ckd.train`` with the label loss on clean images. After training, the teacher's
penultimate activations of the first ``--stats-images`` clean training images give the two numbers CKD uses:
``kappa_mle`` (``VMFPrior.fit_concentration``: the maximum-likelihood kappa with the final layer's directions
held fixed) and ``mean_activation_norm`` (the mean |a|). Both are stored in ``OUT/model.pt``, where
``VMFPrior.class_affinity`` of a prior built from that checkpoint finds its activation norm.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import torch

from common.cli import run_cli
from ckd.train import features_of, parse_config, train
from vmfprior import VMFPrior

__all__ = ["TeacherConfig", "train_teacher", "teacher_statistics"]


@dataclass
class TeacherConfig:
    """Settings of one teacher run (saved in config.json and every checkpoint)."""

    architecture: str = "mnist-conv"  # mnist-conv, mnist-conv-half, mnist-conv-W or wrn-D-K
    feature_dim: Optional[int] = None  # penultimate dimension d of an mnist-conv net (None: 64; WRNs: their own)
    dataset: str = "mnist"  # mnist, cifar10 or cifar100
    data: Optional[str] = None  # the dataset's .npz (None: download with torchvision)
    out: str = "runs/ckd-teacher"  # run folder
    epochs: int = 5  # training epochs
    batch_size: int = 128  # global batch size
    optimizer: str = "adam"  # adam or sgd (nesterov momentum)
    learning_rate: float = 1e-3  # initial step size
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # L2 weight decay
    schedule: str = "constant"  # constant, cosine or step (x0.1 after each milestone epoch)
    milestones: tuple[int, ...] = ()  # epochs after which the step schedule multiplies the rate by 0.1
    augment: bool = False  # random crop (pad 4) and horizontal flip per batch (CIFAR)
    train_subset: Optional[int] = None  # use only the first N training images
    stats_images: int = 10_000  # clean training images whose activations give kappa's MLE and the mean |a|
    seed: int = 0  # seeds initialization, shuffling and augmentation
    resume: bool = False  # continue OUT/last.pt exactly; refuses a different config
    stop_after: Optional[int] = None  # stop after this epoch (continue later with --resume)
    progress: bool = True  # tqdm bar
    cpu: bool = False  # force the CPU even when a GPU is present
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)


def teacher_statistics(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """kappa's MLE around the head's directions and the mean activation norm, from clean images.

    Args:
        model: the trained teacher (``features`` and a linear ``head``).
        images: (N, C, H, W) uint8 clean images.
        labels: (N,) their classes.

    Returns:
        {"kappa_mle": float, "mean_activation_norm": float}.
    """
    features = features_of(model, images)
    prior = VMFPrior.from_linear(model.head.cpu(), 1.0)
    kappa = float(prior.fit_concentration(features, labels))
    model.head.to(next(model.parameters()).device)
    return {"kappa_mle": kappa, "mean_activation_norm": float(features.norm(dim=1).mean())}


def train_teacher(config: TeacherConfig, data=None, log=None) -> dict:
    """Train (or resume) a teacher; returns ``ckd.train.train``'s result plus the two statistics."""
    if config.stats_images < 1:
        raise ValueError(f"--stats-images must be a positive integer, got {config.stats_images}")

    def finish(model, images, labels):
        return teacher_statistics(model, images[:config.stats_images], labels[:config.stats_images])

    return train(config, data=data, log=log, kind="ckd-teacher", finish=finish)


def main(argv=None) -> dict:
    """Command-line entry point."""
    return train_teacher(parse_config(TeacherConfig, "python -m ckd.teacher", __doc__.split("\n\n")[0], argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
