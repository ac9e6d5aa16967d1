"""The prior source for HVAE-L: an MNIST classifier with a d-dimensional penultimate layer.

Architecture: the VAE encoder's ``784 -> 256 -> 128`` (ReLU), then ``Linear(128, d)`` (the penultimate
activations ``a``, no nonlinearity: they live on all of ``R^d`` like the VAE's latent before normalizing),
then a head from :func:`vmfprior.heads.make_head` named ``head`` (learned linear by default; fixed random /
orthogonal / Hadamard for the ablation). ``VMFPrior.from_checkpoint(path, concentration)`` finds
``head.weight`` in the saved checkpoint.

Command line::

    python -m vae.classifier --latent-dim 5 --data PATH.npz --out runs/classifier-d5 [--head linear] [--epochs 5]
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator

from common.cli import ArgumentParser, run_cli, set_threads
from common.data import load_mnist, train_validation_split
from common.runs import add_dataclass_arguments, atomic_save, config_from_args, write_config
from vmfprior.heads import make_head

CHECKPOINT_NAME = "classifier.pt"


@dataclass
class ClassifierConfig:
    """Settings of one classifier run (saved in config.json and in the checkpoint)."""

    latent_dim: int = 5  # penultimate dimension d: the latent dimension of the HVAE-L it serves
    head: str = "linear"  # linear, random, random-cosine, orthogonal, hadamard or identity (vmfprior.heads)
    data: Optional[str] = None  # MNIST .npz (None: download with torchvision)
    out: str = "runs/classifier"  # run folder: config.json and classifier.pt
    epochs: int = 5  # training epochs
    batch_size: int = 128  # training batch size
    learning_rate: float = 1e-3  # Adam step size
    seed: int = 0  # seeds initialization and shuffling
    num_validation: int = 10_000  # the last N training images are the validation split
    train_subset: Optional[int] = None  # use only the first N training images (quick runs)
    cpu: bool = False  # force the CPU even when a GPU is present
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)


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


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images (N, 1, 28, 28)`` with ``labels (N,)``."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float() / 255.0
        correct += int((model(x).argmax(-1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(images.shape[0], 1)


def train_classifier(config: ClassifierConfig, data=None, log=print) -> dict:
    """Train a classifier, report validation/test accuracy, save ``OUT/classifier.pt``.

    Args:
        config: the settings.
        data: an already loaded ``ImageData`` (None: load ``config.data``).
        log: where progress lines go.

    Returns:
        dict with ``checkpoint`` (path), ``validation_accuracy``, ``test_accuracy``, ``seconds``.
    """
    for name in ("epochs", "batch_size", "num_validation"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {config.learning_rate}")
    set_threads(config.threads)
    device = Accelerator(cpu=config.cpu).device
    data = data if data is not None else load_mnist(config.data)
    x_train, y_train, x_val, y_val = train_validation_split(data.x_train, data.y_train, config.num_validation)
    if config.train_subset is not None:
        x_train, y_train = x_train[: config.train_subset], y_train[: config.train_subset]
    torch.manual_seed(config.seed)
    model = MNISTClassifier(config.latent_dim, config.head, data.num_classes).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate)
    order_generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(x_train.shape[0], generator=order_generator)
        total = 0.0
        for start in range(0, order.shape[0], config.batch_size):
            index = order[start : start + config.batch_size]
            x = x_train[index].to(device).float() / 255.0
            loss = F.cross_entropy(model(x), y_train[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.shape[0]
        model.eval()
        log(f"classifier d={config.latent_dim} head={config.head} epoch {epoch}: train loss "
            f"{total / order.shape[0]:.4f}, validation accuracy {accuracy(model, x_val, y_val):.4f}")
    result = {
        "validation_accuracy": accuracy(model, x_val, y_val),
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "seconds": round(time.perf_counter() - started, 2),
    }
    out = Path(config.out)
    write_config(out, config, kind="vae-classifier")
    path = out / CHECKPOINT_NAME
    atomic_save({"model": model.state_dict(), "config": asdict(config), **result}, path)
    result["checkpoint"] = str(path)
    log(f"classifier d={config.latent_dim} head={config.head}: test accuracy {result['test_accuracy']:.4f} -> {path}")
    return result


def main(argv=None) -> dict:
    """Command-line entry point."""
    parser = add_dataclass_arguments(ArgumentParser(prog="python -m vae.classifier", description=__doc__.split("\n\n")[0]),
                                     ClassifierConfig)
    return train_classifier(config_from_args(ClassifierConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
