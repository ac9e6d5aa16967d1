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

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vmfprior.prior import concentration_from_mean_cosine

__all__ = ["WideResNet", "ClassifierConfig", "augment", "estimate_concentration", "test_features", "train_classifier", "load_classifier", "main", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "classifier.pt"
CROP_PADDING = 4
"""Random-crop padding of the standard CIFAR augmentation (pad 4, crop 32, horizontal flip)."""
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class _BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.norm1(x))
        h = self.conv2(F.relu(self.norm2(self.conv1(activated))))
        return h + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 images with a :mod:`vmfprior.heads` final layer.

    Args:
        depth: 6n + 4 (e.g. 40, 28, 16, 10).
        width: widening factor k; the penultimate width is 64k.
        num_classes: C.
        head: head kind for ``vmfprior.heads.make_head`` ("linear", "random", "orthogonal", ...).
        image_channels: input channels.
    """

    def __init__(self, depth: int = 40, width: int = 2, num_classes: int = 10, head: str = "linear",
                 image_channels: int = 3):
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"width must be a positive int, got {width!r}")
        from vmfprior.heads import make_head

        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(image_channels, widths[0], 3, padding=1, bias=False)
        layers = []
        for group in range(3):
            for index in range(blocks_per_group):
                in_channels = widths[group] if index == 0 else widths[group + 1]
                stride = 2 if group > 0 and index == 0 else 1
                layers.append(_BasicBlock(in_channels, widths[group + 1], stride))
        self.blocks = nn.Sequential(*layers)
        self.final_norm = nn.BatchNorm2d(widths[3])
        self.feature_dim = widths[3]
        self.head = make_head(head, self.feature_dim, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations. Args: images (B, 3, 32, 32) in [0, 1]. Returns: (B, 64k)."""
        h = self.blocks(self.stem((images - self.mean) / self.std))
        return F.relu(self.final_norm(h)).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits. Args: images (B, 3, 32, 32) in [0, 1]. Returns: (B, C)."""
        return self.head(self.features(images))


def augment(images: torch.Tensor) -> torch.Tensor:
    """Random 32x32 crop of the 4-pixel reflect-padded image and a random horizontal flip, per image.

    Args:
        images: (B, C, H, W) float.

    Returns:
        (B, C, H, W) augmented images (global torch RNG; on the images' device).
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, [CROP_PADDING] * 4, mode="reflect")  # (B, C, H+8, W+8)
    top = torch.randint(0, 2 * CROP_PADDING + 1, (batch, 1), device=images.device)
    left = torch.randint(0, 2 * CROP_PADDING + 1, (batch, 1), device=images.device)
    rows = (top + torch.arange(height, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left + torch.arange(width, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel_index = torch.arange(channels, device=images.device)[None, :, None, None]
    cropped = padded[batch_index, channel_index, rows, cols]  # (B, C, H, W)
    flip = torch.rand(batch, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


@dataclass
class ClassifierConfig:
    """Training config; defaults follow the WRN paper's CIFAR-10 protocol (SGD, nesterov, cosine decay)."""

    out: str = "runs/wrn-40-2"
    data: str | None = None  # CIFAR-10 .npz (offline) or None to download with torchvision
    depth: int = 40
    width: int = 2
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


def estimate_concentration(features: torch.Tensor, labels: torch.Tensor, mean_directions: torch.Tensor) -> tuple[float, float]:
    """Maximum-likelihood kappa of the class-conditional vMF with the head's mean directions held fixed.

    With the mean direction mu_y known, the MLE of a shared kappa solves ``A_d(kappa) = mean(mu_y . x / |x|)``
    (Mardia & Jupp 2000, sec. 10.3), solved by ``vmfprior.prior.concentration_from_mean_cosine``.

    Args:
        features: (N, d) penultimate activations.
        labels: (N,) classes.
        mean_directions: (C, d) unit rows, e.g. ``VMFPrior.mean_directions``.

    Returns:
        (mean_cosine, kappa): the mean resultant length and the kappa whose A_d equals it (clipped to the bracket).
    """
    if features.dim() != 2 or features.shape[1] != mean_directions.shape[1] or len(labels) != len(features):
        raise ValueError(f"features must be (N, {mean_directions.shape[1]}) with N labels, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    unit = F.normalize(features.double(), dim=1)
    mean_cosine = (unit * mean_directions.double()[labels]).sum(dim=1).mean().item()
    return mean_cosine, concentration_from_mean_cosine(torch.tensor(mean_cosine), features.shape[1]).item()


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

    from vmfprior.data import load_cifar10
    from vmfprior.runs import MetricsLog, atomic_save, write_config

    if config.threads is not None:
        if config.threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {config.threads!r}")
        torch.set_num_threads(config.threads)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} must divide by the {accelerator.num_processes} processes")
    set_seed(config.seed)
    with accelerator.main_process_first():  # one torchvision download, not one per process
        data = load_cifar10(config.data)
    model = WideResNet(config.depth, config.width, data.num_classes, config.head)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train),
                                         batch_size=config.batch_size // accelerator.num_processes,
                                         shuffle=True, drop_last=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    out = Path(config.out)
    if accelerator.is_main_process:
        write_config(out, config, "gan-classifier")
        log = MetricsLog(out / "metrics.jsonl")
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
        head_weight = unwrapped.head.weight.detach()
        mean_cosine, kappa = estimate_concentration(test_features(unwrapped, data.x_test).cpu(), data.y_test,
                                                    F.normalize(head_weight.double(), dim=1).cpu())
        atomic_save({"model": unwrapped.state_dict(), "config": dataclasses.asdict(config),
                     "test_accuracy": accuracy, "feature_dim": unwrapped.feature_dim,
                     "num_classes": data.num_classes, "mean_cosine": mean_cosine, "concentration_mle": kappa}, path)
        log.write({"step": step, "test_accuracy": accuracy, "mean_cosine": mean_cosine,
                   "concentration_mle": kappa, "seconds": seconds})
        accelerator.print(f"test accuracy {accuracy:.4f} after {step} steps ({seconds:.0f} s); saved {path}\n"
                          f"test activations vs head directions: mean cosine {mean_cosine:.4f}, "
                          f"MLE concentration {kappa:.2f} (a candidate for gan/train.py --concentration)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"test_accuracy": accuracy, "checkpoint": str(path), "steps": step, "seconds": seconds}


def load_classifier(path: str, device: str | torch.device = "cpu") -> WideResNet:
    """Rebuild a trained classifier from ``classifier.pt`` (eval mode), e.g. for eval.features.

    Args:
        path: a checkpoint written by :func:`train_classifier`.
        device: where to put the model.

    Returns:
        the :class:`WideResNet`, with ``features(images in [0, 1]) -> (B, 64k)`` and ``head``.
    """
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"path {str(path)!r} is not a gan.classifier checkpoint (needs 'model' and 'config')")
    config = checkpoint["config"]
    num_classes = checkpoint.get("num_classes") or checkpoint["model"]["head.weight"].shape[0]
    model = WideResNet(config["depth"], config["width"], num_classes, config["head"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m gan.classifier [--preset tiny] [--key value ...]``."""
    from vmfprior.runs import add_dataclass_arguments, config_from_args

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="small model for CPU smoke runs")
    add_dataclass_arguments(parser, ClassifierConfig)
    preset, _ = parser.parse_known_args(argv)
    if preset.preset:
        parser.set_defaults(**PRESETS[preset.preset])
    return train_classifier(config_from_args(ClassifierConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    if __package__ in (None, ""):  # run by path: make the repository root importable
        sys.path[0] = str(Path(__file__).resolve().parent.parent)
    main()
