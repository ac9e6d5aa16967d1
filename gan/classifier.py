"""CIFAR-10 classifier: the source of the vMF prior for SNGAN-vMF, or an independent evaluator.

A Wide ResNet WRN-depth-width (:mod:`common.wrn`; the penultimate features are ``64 * width`` wide: 128 for
WRN-40-2, the prior's d) or, with ``--architecture``, an :mod:`eval.classifiers` network (``convnet-W``); its final
layer is the submodule ``head``, so ``VMFPrior.from_checkpoint`` finds ``head.weight``. Training, the run folder
(``--resume``, ``--stop-after``) and ``OUT/classifier.pt`` with the head's kappa MLE (``kappa_mle``: the
maximum-likelihood kappa of the penultimate activations of clean training images around the head's directions)
come from :mod:`common.classifier`. The defaults follow the WRN paper's CIFAR-10 protocol (SGD with nesterov
momentum, cosine decay, random crops and flips)::

    python -m gan.classifier --data data/cifar10-small.npz --out runs/wrn-40-2
    accelerate launch -m gan.classifier --out runs/wrn-40-2          # full CIFAR-10 via torchvision

Checkpoints written before this trainer moved onto :mod:`common.classifier` (config keys ``lr``, ``max_steps``;
kappa stored as ``concentration_mle``, measured on test activations) load everywhere as before.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.classifier import (
    CHECKPOINT_NAME,
    OPTIMIZERS,
    ClassifierSettings,
    check_settings,
    head_option,
    load_classifier_checkpoint,
)
from common.classifier import train_classifier as train_on_run_folder
from common.cli import run_cli, set_threads
from common.config import ConfigError, check_choice, option, parse_config
from common.run import CONFIG_FILE, LAST_CHECKPOINT, SCHEDULES, RunError, close_process_group, read_config
from common.wrn import WideResNet

__all__ = ["CHECKPOINT_NAME", "ClassifierConfig", "PRESETS", "build_model", "load_classifier", "main",
           "train_classifier"]

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class ClassifierConfig(ClassifierSettings):
    """Settings of one classifier run (saved in config.json and in the checkpoint)."""

    data: str | None = option(None, "CIFAR-10 .npz file (None: download with torchvision)")
    out: str = option("runs/wrn-40-2", "run folder: config.json, last.pt, metrics.jsonl, classifier.pt")
    depth: int = option(40, "WRN depth (6n + 4)")
    width: int = option(2, "WRN widening factor k (penultimate width 64 k)")
    architecture: str | None = option(None, "an eval.classifiers architecture (e.g. convnet-32) instead of the WRN "
                                            "of --depth and --width (None: the WRN)")
    head: str = head_option()
    epochs: int = option(200, "training epochs")
    optimizer: str = option("sgd", "adam, or sgd with nesterov momentum", choices=OPTIMIZERS)
    learning_rate: float = option(0.1, "initial step size")
    weight_decay: float = option(5e-4, "L2 weight decay")
    schedule: str = option("cosine", "learning-rate schedule: constant, cosine (per step, to 0), linear, or step "
                                     "(x0.1 after each milestone epoch)", choices=SCHEDULES)
    augment: bool = option(True, "random crop (pad 4, reflect) and horizontal flip of every training batch")
    mixed_precision: str = option("no", "accelerate's mixed precision", choices=MIXED_PRECISION)


PRESETS = {"tiny": {"depth": 10, "width": 1, "epochs": 1, "batch_size": 64}}
"""``tiny``: WRN-10-1 (penultimate width 64), one epoch: a CPU smoke run and the prior of the tiny GAN preset."""


def build_model(config: dict, num_classes: int) -> nn.Module:
    """The classifier a config describes: ``architecture`` (eval.classifiers) when set, else WRN-depth-width."""
    if config.get("architecture"):
        if config.get("head", "linear") != "linear":
            raise ConfigError(f"--head {config['head']} needs the WRN; --architecture {config['architecture']} has a "
                              "linear head")
        from eval.classifiers import build_classifier

        return build_classifier(config["architecture"], num_classes)
    return WideResNet(config["depth"], config["width"], num_classes, config.get("head", "linear"))


def _refuse_earlier_layout(out: Path) -> None:
    """A run folder of the trainer before common.classifier (config keys lr and max_steps, no last.pt) is finished
    and cannot be continued: say so, instead of calling it damaged."""
    if not (out / CONFIG_FILE).is_file() or (out / LAST_CHECKPOINT).is_file():
        return
    kind, saved = read_config(out)
    if kind == "gan-classifier" and "lr" in saved and "learning_rate" not in saved:
        raise RunError(f"{out} holds a finished run of the earlier gan.classifier (config key lr, no last.pt): its "
                       f"{CHECKPOINT_NAME} loads wherever a classifier is read, but it cannot be trained further; "
                       "choose another --out")


def train_classifier(config: ClassifierConfig, data=None, log=None) -> dict:
    """Train (or resume) a classifier on ``config.out`` and save ``OUT/classifier.pt``.

    Args:
        config: the settings.
        data: an already loaded ``ImageData`` (None: load ``config.data``, or download CIFAR-10).
        log: where progress lines go (default: print on the main process).

    Returns:
        :func:`common.classifier.train_classifier`'s result: ``checkpoint`` (path), ``validation_accuracy``,
        ``test_accuracy``, ``kappa_mle``, ``mean_activation_norm``, ``seconds``, ``stopped``.
    """
    from accelerate import Accelerator

    check_settings(config)  # before loading the data: a mistake is reported at once
    check_choice(config, "mixed_precision", MIXED_PRECISION)
    _refuse_earlier_layout(Path(config.out))
    set_threads(config.threads)
    accelerator = Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    if data is None:
        from common.data import load_cifar10

        with accelerator.main_process_first():  # one torchvision download, not one per process
            data = load_cifar10(config.data)
    torch.manual_seed(config.seed)
    model = build_model({"architecture": config.architecture, "depth": config.depth, "width": config.width,
                         "head": config.head}, data.num_classes)
    augment = None
    if config.augment:
        from common.wrn import augment
    return train_on_run_folder(config, model, data, kind="gan-classifier", augment=augment, log=log,
                               accelerator=accelerator)


def load_classifier(path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained classifier from ``classifier.pt`` or its run folder (eval mode), e.g. for eval.features.

    Reads the checkpoints of this trainer and of its earlier version alike (both store ``depth``, ``width``,
    ``architecture`` and ``head`` in their config).

    Args:
        path: ``classifier.pt`` or the run folder holding it.
        device: where to put the model.

    Returns:
        the classifier (a :class:`WideResNet` unless the config names another architecture), with
        ``features(images in [0, 1]) -> (B, d)`` and ``head``.
    """
    def build(config: dict, checkpoint: dict) -> nn.Module:
        num_classes = checkpoint.get("num_classes") or checkpoint["model"]["head.weight"].shape[0]
        return build_model(config, int(num_classes))

    model, _ = load_classifier_checkpoint(path, build, what="gan.classifier checkpoint")
    return model.to(device)


def main(argv=None) -> dict | int:
    """Command-line entry point; a non-finite loss is an error (exit status 1)."""
    config = parse_config(ClassifierConfig, argv, prog="python -m gan.classifier",
                          description=__doc__.split("\n\n")[0], presets=PRESETS)
    result = train_classifier(config)
    close_process_group()
    if result["stopped"] == "non-finite loss":
        print(f"error: non-finite loss in {config.out}; its last checkpoint is kept (lower --learning-rate, then "
              "--resume)", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
