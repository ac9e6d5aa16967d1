"""Wide ResNet for 32x32 images (Zagoruyko & Komodakis 2016), and the standard CIFAR augmentation.

WRN-depth-width: pre-activation basic blocks in three groups of widths 16k, 32k, 64k; the penultimate features
are ``64 * width`` wide (128 for WRN-40-2). The final layer is a :mod:`vmfprior.heads` module stored as
``head``, so ``VMFPrior.from_checkpoint`` finds ``head.weight``. Shared by ``gan`` (the prior source of
SNGAN-vMF) and ``ckd`` (teacher WRN-40-2, student WRN-16-2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vmfprior.heads import make_head

__all__ = ["WideResNet", "augment", "CIFAR_MEAN", "CIFAR_STD", "CROP_PADDING"]

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

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, depth: int = 40, width: int = 2, num_classes: int = 10, head: str = "linear", image_channels: int = 3
    ):
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"width must be a positive int, got {width!r}")
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
