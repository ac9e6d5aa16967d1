"""Wide ResNet classifier on CIFAR-10: the source of the vMF prior for SNGAN-vMF.

WRN-depth-width (Zagoruyko & Komodakis 2016): pre-activation basic blocks in three groups of widths
16k, 32k, 64k; the penultimate features are ``64 * width`` wide (128 for WRN-40-2, the prior's d), and the
final layer is a :mod:`vmfprior.heads` module stored as ``head`` so ``VMFPrior.from_checkpoint`` finds
``head.weight``.

Train and save ``OUT/classifier.pt`` (``{"model": state_dict, "config": {...}, "test_accuracy": ...}``)::

    python -m gan.classifier --data ../shared/data/cifar10-jpeg-q75-subset.npz --out runs/wrn-40-2
    accelerate launch -m gan.classifier --out runs/wrn-40-2          # full CIFAR-10 via torchvision
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.cli import ArgumentParser, run_cli, set_threads
from common.runs import METRICS_FILE, load_checkpoint
from common.wrn import WideResNet, augment
from vmfprior import VMFPrior

__all__ = ["ClassifierConfig", "test_features", "train_classifier", "load_classifier", "main", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "classifier.pt"

@dataclass
class ClassifierConfig:
    """Training config; defaults follow the WRN paper's CIFAR-10 protocol (SGD, nesterov, cosine decay)."""

    out: str = "runs/wrn-40-2"
    data: str | None = None  # CIFAR-10 .npz (offline) or None to download with torchvision
    depth: int = 40
    width: int = 2
    architecture: str | None = None  # convnet-W (eval.classifiers) instead of the WRN of depth/width; None: the WRN
    head: str = "linear"
    epochs: int = 200
    batch_size: int = 128  # global: split across processes
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_steps: int = 0  # stop after this many optimizer steps (0: all epochs); for smoke tests
    seed: int = 0
    mixed_precision: str = "no"
    threads: int | None = None  # torch CPU threads (None: torch's default; 1 suits a busy shared CPU)


PRESETS = {"tiny": {"depth": 10, "width": 1, "epochs": 1, "batch_size": 64}}
"""``tiny``: WRN-10-1 (penultimate width 64), one epoch: a CPU smoke run and the prior of the tiny GAN preset."""


def _learning_rate(config: ClassifierConfig, step: int, total_steps: int) -> float:
    # Cosine decay computed from the step count and set explicitly on the optimizer: an
    # accelerate-prepared scheduler would step once per process per call; this is right on any process count.
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


@torch.no_grad()
def test_features(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate features (N, d) of uint8 images (N, 3, 32, 32), in eval mode, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [model.features(images[start:start + batch_size].to(device).float() / 255.0)
              for start in range(0, len(images), batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, accelerator, batch_size: int = 500) -> float:
    """Test accuracy of ``model`` on uint8 images (N, 3, 32, 32), sharded over processes and gathered."""
    model.eval()
    counts = torch.zeros(2, device=accelerator.device)  # (correct, seen) on this process
    shard = range(accelerator.process_index * batch_size, len(images), accelerator.num_processes * batch_size)
    for start in shard:
        x = images[start:start + batch_size].to(accelerator.device).float() / 255.0
        y = labels[start:start + batch_size].to(accelerator.device)
        counts[0] += (model(x).argmax(dim=1) == y).sum()
        counts[1] += len(y)
    correct, total = accelerator.reduce(counts, "sum").tolist()  # one collective: shards may differ in length
    model.train()
    return correct / max(total, 1)


def train_classifier(config: ClassifierConfig) -> dict:
    """Train a WRN on CIFAR-10, evaluate, and save ``config.out/classifier.pt``.

    Returns:
        {"test_accuracy": float, "checkpoint": path, "steps": int, "seconds": float}.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from common.data import load_cifar10
    from common.runs import MetricsLog, atomic_save, write_config

    set_threads(config.threads)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} must divide by the {accelerator.num_processes} processes")
    set_seed(config.seed)
    with accelerator.main_process_first():  # one torchvision download, not one per process
        data = load_cifar10(config.data)
    model = build_model(dataclasses.asdict(config), data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train),
                                         batch_size=config.batch_size // accelerator.num_processes,
                                         shuffle=True, drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    out = Path(config.out)
    if accelerator.is_main_process:
        write_config(out, config, "gan-classifier")
        log = MetricsLog(out / METRICS_FILE)
    if len(loader) == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(data.x_train)} training images")
    total_steps = config.epochs * len(loader)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    step, start = 0, time.time()
    while step < total_steps:
        for images, labels in loader:
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step, total_steps)
            logits = model(augment(images.float() / 255.0))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            step += 1
            if accelerator.is_main_process and (step % 100 == 0 or step == total_steps):
                log.write({"step": step, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]})
                accelerator.print(f"step {step}/{total_steps} loss {loss.item():.4f}")
            if step >= total_steps:
                break
    accuracy = evaluate(model, data.x_test, data.y_test, accelerator)
    seconds = time.time() - start
    path = out / CHECKPOINT_NAME
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        # The maximum-likelihood kappa of held-out activations with the head's directions held fixed.
        kappa = float(VMFPrior.from_linear(unwrapped.head, 1.0).fit_concentration(
            test_features(unwrapped, data.x_test), data.y_test))
        atomic_save({"model": unwrapped.state_dict(), "config": dataclasses.asdict(config),
                     "test_accuracy": accuracy, "feature_dim": unwrapped.feature_dim,
                     "num_classes": data.num_classes, "concentration_mle": kappa}, path)
        log.write({"step": step, "test_accuracy": accuracy,
                   "concentration_mle": kappa, "seconds": seconds})
        accelerator.print(f"test accuracy {accuracy:.4f} after {step} steps ({seconds:.0f} s); saved {path}\n"
                          f"MLE concentration of the test activations around the head's directions: {kappa:.2f} "
                          f"(a candidate for gan/train.py --concentration)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"test_accuracy": accuracy, "checkpoint": str(path), "steps": step, "seconds": seconds}


def build_model(config: dict, num_classes: int) -> nn.Module:
    """The classifier a config describes: ``architecture`` (eval.classifiers) when set, else WRN-depth-width."""
    if config.get("architecture"):
        if config.get("head", "linear") != "linear":
            raise ValueError(f"head {config['head']!r} needs the WRN; architecture {config['architecture']!r} has a "
                             "linear head")
        from eval.classifiers import build_classifier

        return build_classifier(config["architecture"], num_classes)
    return WideResNet(config["depth"], config["width"], num_classes, config["head"])


def load_classifier(path: str, device: str | torch.device = "cpu") -> WideResNet:
    """Rebuild a trained classifier from ``classifier.pt`` (eval mode), e.g. for eval.features.

    Args:
        path: a checkpoint written by :func:`train_classifier`.
        device: where to put the model.

    Returns:
        the classifier (a :class:`WideResNet` unless the config names another architecture), with
        ``features(images in [0, 1]) -> (B, d)`` and ``head``.
    """
    checkpoint = load_checkpoint(path, ("model", "config"), what="gan.classifier checkpoint")
    config = checkpoint["config"]
    num_classes = checkpoint.get("num_classes") or checkpoint["model"]["head.weight"].shape[0]
    model = build_model(config, num_classes)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m gan.classifier [--preset tiny] [--key value ...]``."""
    from common.runs import add_dataclass_arguments, config_from_args

    parser = ArgumentParser(prog="python -m gan.classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="small model for CPU smoke runs")
    add_dataclass_arguments(parser, ClassifierConfig)
    preset, _ = parser.parse_known_args(argv)
    if preset.preset:
        parser.set_defaults(**PRESETS[preset.preset])
    return train_classifier(config_from_args(ClassifierConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    if __package__ in (None, ""):  # run by path: make the repository root importable
        sys.path[0] = str(Path(__file__).resolve().parent.parent)
    sys.exit(run_cli(main))
