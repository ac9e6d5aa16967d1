"""The settings every classifier command shares (``vae.classifier``, ``gan.classifier``, ``ckd.teacher``).

Split from :mod:`common.classifier` so that a command's ``--help`` needs no torch (``common.config.answer_early``);
``common.classifier`` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.config import GLOSSARY, SCHEDULES, option

__all__ = ["HEAD_KINDS", "OPTIMIZERS", "ClassifierSettings", "TrainingSettings", "head_option"]

OPTIMIZERS = ("adam", "sgd")
HEAD_KINDS = ("linear", "random", "random-cosine", "orthogonal", "hadamard", "identity")
"""``vmfprior.heads.HEAD_KINDS``, repeated here without importing torch (a test checks that the two agree)."""


def head_option(default: str = "linear"):
    """The ``--head`` field of a command whose architecture takes any :mod:`vmfprior.heads` final layer."""
    return option(default, "final layer (vmfprior.heads): " + ", ".join(HEAD_KINDS), choices=HEAD_KINDS)


@dataclass
class TrainingSettings:
    """The fields every trainer of a classification loss shares: data, run folder, optimizer, schedule, validation
    split and run control. :class:`ClassifierSettings` (the prior-source classifiers) and ``ckd.config.TrainConfig``
    (the distilled students) build on it; a command may restate a field with its own default or help."""

    data: str | None = option(None, "the dataset's .npz file (None: download with torchvision)")
    out: str = option("runs/classifier", "run folder: config.json, last.pt, metrics.jsonl, classifier.pt")
    epochs: int = option(5, "training epochs")
    batch_size: int = option(128, "global batch size (split across processes)")
    optimizer: str = option("adam", "adam, or sgd with nesterov momentum", choices=OPTIMIZERS)
    learning_rate: float = option(1e-3, "initial step size")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "L2 weight decay")
    schedule: str = option(
        "constant",
        "learning-rate schedule: constant, cosine (per step, to 0), linear, or step (x0.1 after each milestone epoch)",
        choices=SCHEDULES,
    )
    milestones: tuple[int, ...] = option((), "epochs after which the step schedule multiplies the rate by 0.1")
    num_validation: int = option(0, "the last N training images are held out for validation accuracy (0: none)")
    train_subset: int | None = option(None, "use only the first N training images")
    seed: int = option(0, "seeds initialization, shuffling and augmentation")
    resume: bool = option(False, "continue OUT/last.pt exactly; refuses a different config")
    stop_after: int | None = option(None, "stop after this epoch (continue later with --resume)")
    progress: bool = option(False, "show a progress bar")
    cpu: bool = option(False, "use the CPU even when a GPU is present")
    threads: int | None = option(None, GLOSSARY["threads"])


@dataclass
class ClassifierSettings(TrainingSettings):
    """The fields ``common.classifier.train_classifier`` reads; a command's config restates some (with its own
    defaults) and adds its architecture's (``head = head_option()`` where the architecture takes any head)."""

    stats_images: int = option(10_000, "clean training images whose activations give kappa's MLE and the mean |a|")
