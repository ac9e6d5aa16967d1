"""The prior source for HVAE-L: an MNIST classifier with a d-dimensional penultimate layer.

Architecture: the VAE encoder's ``784 -> 256 -> 128`` (ReLU), then ``Linear(128, d)`` (the penultimate
activations ``a``, no nonlinearity: they live on all of ``R^d`` like the VAE's latent before normalizing),
then a head from :func:`vmfprior.heads.make_head` named ``head`` (learned linear by default; fixed random /
orthogonal / Hadamard for the ablation). Training, the run folder and ``classifier.pt`` (with the head's kappa MLE
and mean |a|) come from :mod:`common.classifier`; ``VMFPrior.from_checkpoint(path, concentration)`` finds
``head.weight`` in it.

    python -m vae.classifier --latent-dim 5 --data data/mnist.npz --out runs/classifier-d5 [--head linear] [--epochs 5]
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from vae.config import ClassifierConfig

    answer_early(ClassifierConfig, prog="python -m vae.classifier", description=__doc__.split("\n\n")[0])

import sys

import torch
from torch import nn

from common.classifier import CHECKPOINT_NAME, accuracy, check_settings, load_classifier_checkpoint
from common.classifier import train_classifier as train_on_run_folder
from common.cli import run_cli, set_threads
from common.config import ConfigError, parse_config
from common.data import load_mnist
from common.run import report_non_finite
from vae.config import ClassifierConfig
from vmfprior.heads import make_head

__all__ = [
    "CHECKPOINT_NAME",
    "ClassifierConfig",
    "MNISTClassifier",
    "accuracy",
    "load_classifier",
    "main",
    "train_classifier",
]


class MNISTClassifier(nn.Module):
    """Encoder-architecture classifier with a ``d``-dimensional penultimate layer and a pluggable head.

    Args:
        latent_dim: penultimate dimension ``d``.
        head: kind passed to ``vmfprior.heads.make_head`` ("linear", "random", "orthogonal", ...).
        num_classes: number of classes.
        input_dim: pixels per image.
    """

    def __init__(self, latent_dim: int, head: str = "linear", num_classes: int = 10, input_dim: int = 784):
        super().__init__()
        if int(latent_dim) < 2:
            raise ValueError(f"latent_dim must be at least 2, got {latent_dim}")
        self.features = nn.Sequential(
            nn.Linear(input_dim, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, int(latent_dim))
        )
        self.head = make_head(head, int(latent_dim), num_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` images -> ``(B, d)`` penultimate activations."""
        return self.features(x.reshape(x.shape[0], -1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` images in [0, 1] -> ``(B, C)`` logits."""
        return self.head(self.penultimate(x))


def train_classifier(config: ClassifierConfig, data=None, log=None) -> dict:
    """Train (or resume) a classifier on ``config.out`` and save ``OUT/classifier.pt``.

    Args:
        config: the settings.
        data: an already loaded ``ImageData`` (None: load ``config.data``).
        log: where progress lines go (default: print on the main process).

    Returns:
        :func:`common.classifier.train_classifier`'s result: ``checkpoint`` (path), ``validation_accuracy``,
        ``test_accuracy``, ``kappa_mle``, ``mean_activation_norm``, ``seconds``, ``stopped``.
    """
    if config.latent_dim < 2:
        raise ConfigError(f"--latent-dim must be at least 2, got {config.latent_dim}")
    check_settings(config)  # before loading the data: a mistake is reported at once
    set_threads(config.threads)
    data = data if data is not None else load_mnist(config.data)
    torch.manual_seed(config.seed)
    model = MNISTClassifier(config.latent_dim, config.head, data.num_classes)
    return train_on_run_folder(config, model, data, kind="vae-classifier", log=log)


def load_classifier(path) -> tuple[MNISTClassifier, dict]:
    """``(model, checkpoint)`` from ``classifier.pt`` or its run folder (eval mode, CPU)."""

    def build(config: dict, checkpoint: dict) -> MNISTClassifier:
        num_classes = checkpoint.get("num_classes") or checkpoint["model"]["head.weight"].shape[0]
        return MNISTClassifier(config["latent_dim"], config.get("head", "linear"), int(num_classes))

    return load_classifier_checkpoint(path, build, what="vae.classifier checkpoint")


def main(argv=None) -> dict | int:
    """Command-line entry point; a non-finite loss is an error (exit status 1)."""
    config = parse_config(ClassifierConfig, argv, prog="python -m vae.classifier", description=__doc__.split("\n\n")[0])
    result = train_classifier(config)
    return 1 if report_non_finite(result, f"in {config.out}") else result


if __name__ == "__main__":
    sys.exit(run_cli(main))
