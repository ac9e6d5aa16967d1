"""Image classifiers by name, for the class-aware scores (GAN-train, GAN-test) and independent evaluators.

    model = build_classifier("convnet-32", num_classes=10)   # or "wrn-10-1", "wrn-16-2", ...
    model = train_on_images(images, labels, "convnet-32", num_classes=10, epochs=10)
    accuracy(model, test_images, test_labels)

Every classifier takes float images in [0, 1] ``(B, C, H, W)``, returns logits ``(B, num_classes)`` and exposes
``features(x) -> (B, d)`` and ``head`` with ``logits = head(features)`` (what :mod:`eval.features` needs).

Names:

* ``wrn-D-W``: the Wide ResNet of :mod:`common.wrn` (the prior classifiers of gan and ckd).
* ``convnet-W``: a plain VGG-style network (no residual connections): three stages of two 3x3 conv-BN-ReLU
  layers of widths W, 2W, 4W, max pooling between stages, global average pooling; features are 4W wide.
  A different family from the WRN, for an evaluator that shares no architecture with the prior.
* names added with :func:`register_architecture` (tests add tiny ones).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from common.wrn import CIFAR_MEAN, CIFAR_STD, WideResNet, augment

__all__ = ["ConvNet", "build_classifier", "register_architecture", "train_on_images", "accuracy", "predict"]

_REGISTERED: dict[str, Callable[[int], nn.Module]] = {}


class ConvNet(nn.Module):
    """Plain VGG-style classifier (see the module docstring): features ``(B, 4 * width)``, ``head`` linear.

    Args:
        width: channels of the first stage.
        num_classes: C.
        image_channels: input channels.
    """

    def __init__(self, width: int = 32, num_classes: int = 10, image_channels: int = 3):
        super().__init__()
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"width must be a positive int, got {width!r}")
        layers: list[nn.Module] = []
        channels = image_channels
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            if stage:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(2):
                layers += [
                    nn.Conv2d(channels, stage_width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(stage_width),
                    nn.ReLU(inplace=True),
                ]
                channels = stage_width
        self.body = nn.Sequential(*layers)
        self.feature_dim = channels
        self.head = nn.Linear(channels, num_classes)
        mean = CIFAR_MEAN if image_channels == 3 else (0.5,) * image_channels
        std = CIFAR_STD if image_channels == 3 else (0.25,) * image_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations. Args: images (B, C, H, W) in [0, 1]. Returns: (B, 4 * width)."""
        return self.body((images - self.mean) / self.std).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits. Args: images (B, C, H, W) in [0, 1]. Returns: (B, C)."""
        return self.head(self.features(images))


def register_architecture(name: str, builder: Callable[[int], nn.Module], replace: bool = False) -> None:
    """Make ``build_classifier(name, num_classes)`` call ``builder(num_classes)``.

    Args:
        name: the architecture's name; must not shadow ``wrn-D-W`` / ``convnet-W``.
        builder: callable num_classes -> nn.Module with ``features`` and ``head``.
        replace: allow replacing an earlier registration of ``name``.
    """
    if not isinstance(name, str) or not name or re.fullmatch(r"(wrn-\d+-\d+|convnet-\d+)", name):
        raise ValueError(f"name must be a non-empty string other than wrn-D-W / convnet-W, got {name!r}")
    if name in _REGISTERED and not replace:
        raise ValueError(f"architecture {name!r} is already registered; pass replace=True")
    _REGISTERED[name] = builder


def build_classifier(architecture: str, num_classes: int, image_channels: int = 3) -> nn.Module:
    """A freshly initialized classifier (uses the global torch RNG).

    Args:
        architecture: ``wrn-D-W``, ``convnet-W`` or a registered name.
        num_classes: C.
        image_channels: input channels (for the built-in families).

    Returns:
        the nn.Module (train mode).

    Raises:
        ValueError: an unknown name.
    """
    if architecture in _REGISTERED:
        return _REGISTERED[architecture](num_classes)
    match = re.fullmatch(r"wrn-(\d+)-(\d+)", str(architecture))
    if match:
        return WideResNet(int(match[1]), int(match[2]), num_classes, image_channels=image_channels)
    match = re.fullmatch(r"convnet-(\d+)", str(architecture))
    if match:
        return ConvNet(int(match[1]), num_classes, image_channels)
    raise ValueError(f"architecture must be wrn-D-W, convnet-W or one of {sorted(_REGISTERED)}, got {architecture!r}")


def _as_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device)
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels of ``images`` in eval mode (the model's training flag is restored).

    Args:
        model: classifier on images in [0, 1].
        images: (N, C, H, W) uint8 (0..255) or float in [0, 1].
        batch_size: images per forward.

    Returns:
        (N,) long predictions on the CPU.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = [
        model(_as_float(images[start : start + batch_size], device)).argmax(dim=1).cpu()
        for start in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` (N, C, H, W) classified as ``labels`` (N,); see :func:`predict`."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images and labels must be equally long and non-empty, got {len(images)} and {len(labels)}")
    return (predict(model, images, batch_size) == labels.cpu()).float().mean().item()


def train_on_images(
    images: torch.Tensor,
    labels: torch.Tensor,
    architecture: str,
    num_classes: int,
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 0.05,
    weight_decay: float = 5e-4,
    augmentation: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train a classifier from scratch on a fixed set of images (GAN-train's classifier, or its real-data baseline).

    SGD with Nesterov momentum 0.9 and a cosine learning rate over ``epochs``; random crops and flips when
    ``augmentation`` (only for 32x32 images). The caller's RNG state is restored afterwards.

    Args:
        images: (N, C, H, W) uint8 or float in [0, 1].
        labels: (N,) long in [0, num_classes).
        architecture: a name for :func:`build_classifier`.
        num_classes: C.
        epochs: passes over the images.
        batch_size: images per step (the last incomplete batch is dropped, unless it is the only one).
        learning_rate: initial SGD learning rate.
        weight_decay: L2 penalty.
        augmentation: random crop and flip (32x32 images only).
        seed: seeds the initial weights, the batch order and the augmentation.
        device: where to train.

    Returns:
        the trained model, in eval mode, on ``device``.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images and labels must be equally long and non-empty, got {len(images)} and {len(labels)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_classifier(architecture, num_classes, image_channels=images.shape[1]).to(device)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=learning_rate, momentum=0.9, weight_decay=weight_decay, nesterov=True
        )
        batch_size = min(batch_size, len(images))
        steps_per_epoch = len(images) // batch_size
        total = epochs * steps_per_epoch
        crop = augmentation and images.shape[-1] == 32 and images.shape[-2] == 32
        labels = labels.to(device)
        step = 0
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(images))
            for index in range(steps_per_epoch):
                batch = order[index * batch_size : (index + 1) * batch_size]
                x = _as_float(images[batch], device)
                if crop:
                    x = augment(x)
                for group in optimizer.param_groups:  # cosine decay to 0 over all steps
                    group["lr"] = 0.5 * learning_rate * (1.0 + math.cos(math.pi * step / total))
                loss = F.cross_entropy(model(x), labels[batch.to(device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    return model.eval()
