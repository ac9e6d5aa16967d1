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

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import PRESETS, TeacherConfig
    from common.config import answer_early

    answer_early(TeacherConfig, prog="python -m ckd.teacher", description=__doc__.split("\n\n")[0], presets=PRESETS)

import sys

import torch

from ckd.config import DATASETS, PRESETS, TeacherConfig
from ckd.models import build_model, check_architecture
from ckd.train import load_dataset
from common.classifier import check_settings, train_classifier
from common.cli import run_cli, set_threads
from common.config import check_choice, parse_config
from common.run import report_non_finite

__all__ = ["TeacherConfig", "train_teacher", "TEACHER_CHECKPOINT"]

TEACHER_CHECKPOINT = "classifier.pt"


def train_teacher(config: TeacherConfig, data=None, log=None) -> dict:
    """Train (or resume) a teacher on ``config.out``; returns ``common.classifier.train_classifier``'s result."""
    check_choice(config, "dataset", DATASETS)
    check_settings(config)  # before loading the data: a mistake is reported at once
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
    config = parse_config(
        TeacherConfig, argv, prog="python -m ckd.teacher", description=__doc__.split("\n\n")[0], presets=PRESETS
    )
    set_threads(config.threads)
    result = train_teacher(config)
    return 1 if report_non_finite(result, f"in {config.out}") else result


if __name__ == "__main__":
    sys.exit(run_cli(main))
