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

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from gan.config import CLASSIFIER_PRESETS, ClassifierConfig

    answer_early(
        ClassifierConfig,
        prog="python -m gan.classifier",
        description=__doc__.split("\n\n")[0],
        presets=CLASSIFIER_PRESETS,
    )

import sys
from pathlib import Path

import torch
from torch import nn

from common.classifier import CHECKPOINT_NAME, check_settings, load_classifier_checkpoint
from common.classifier import train_classifier as train_on_run_folder
from common.cli import run_cli, set_threads
from common.config import ConfigError, check_choice, parse_config
from common.run import CONFIG_FILE, LAST_CHECKPOINT, RunError, close_process_group, read_config, report_non_finite
from common.wrn import WideResNet
from gan.config import CLASSIFIER_PRESETS as PRESETS
from gan.config import MIXED_PRECISION, ClassifierConfig

__all__ = [
    "CHECKPOINT_NAME",
    "ClassifierConfig",
    "PRESETS",
    "build_model",
    "load_classifier",
    "main",
    "train_classifier",
]


def build_model(config: dict, num_classes: int) -> nn.Module:
    """The classifier a config describes: ``architecture`` (eval.classifiers) when set, else WRN-depth-width."""
    if config.get("architecture"):
        if config.get("head", "linear") != "linear":
            raise ConfigError(
                f"--head {config['head']} needs the WRN; --architecture {config['architecture']} has a linear head"
            )
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
        raise RunError(
            f"{out} holds a finished run of the earlier gan.classifier (config key lr, no last.pt): its "
            f"{CHECKPOINT_NAME} loads wherever a classifier is read, but it cannot be trained further; "
            "choose another --out"
        )


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
    model = build_model(
        {"architecture": config.architecture, "depth": config.depth, "width": config.width, "head": config.head},
        data.num_classes,
    )
    augment = None
    if config.augment:
        from common.wrn import augment
    return train_on_run_folder(
        config, model, data, kind="gan-classifier", augment=augment, log=log, accelerator=accelerator
    )


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
    config = parse_config(
        ClassifierConfig, argv, prog="python -m gan.classifier", description=__doc__.split("\n\n")[0], presets=PRESETS
    )
    result = train_classifier(config)
    close_process_group()
    return 1 if report_non_finite(result, f"in {config.out}") else result


if __name__ == "__main__":
    sys.exit(run_cli(main))
