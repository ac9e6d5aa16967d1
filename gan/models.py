"""The 32x32 ResNet SNGAN of Miyato & Koyama (2018): conditional generator and projection discriminator.

At the reference widths (generator ``channels=256``, latent 128; discriminator ``channels=128``) the generator
has 4,304,387 parameters and the discriminator 1,055,105 (pinned in tests/gan/test_models.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan.layers import (
    SHORTCUT_INIT_GAIN,
    UPSAMPLE_MODES,
    DiscriminatorBlock,
    GeneratorBlock,
    OptimizedDiscriminatorBlock,
    label_probabilities,
    sn_linear,
    xavier_init,
)

__all__ = ["Generator", "Discriminator"]

BOTTOM_SIZE = 4
"""Spatial size of the generator's first feature map; three 2x up-samplings reach 32x32."""


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class Generator(nn.Module):
    """z -> linear to 4x4xch -> 3 up-sampling residual blocks (conditional BN) -> BN, ReLU, 3x3 conv, tanh.

    Args:
        latent_dim: d, length of the input noise.
        channels: feature channels of every block (256 in the reference model).
        num_classes: C for conditional batch norm.
        image_channels: output channels (3 for RGB).
        upsample: 2x up-sampling in the blocks, "nearest" (chainer SNGAN) or "bilinear" (Mimicry).
    """

    def __init__(
        self,
        latent_dim: int = 128,
        channels: int = 256,
        num_classes: int = 10,
        image_channels: int = 3,
        upsample: str = "nearest",
    ):
        super().__init__()
        _check_positive(
            latent_dim=latent_dim, channels=channels, num_classes=num_classes, image_channels=image_channels
        )
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
        self.latent_dim, self.channels, self.num_classes = latent_dim, channels, num_classes
        self.input = xavier_init(nn.Linear(latent_dim, BOTTOM_SIZE * BOTTOM_SIZE * channels), SHORTCUT_INIT_GAIN)
        self.blocks = nn.ModuleList([GeneratorBlock(channels, channels, num_classes, upsample) for _ in range(3)])
        self.output_norm = nn.BatchNorm2d(channels)
        self.output = xavier_init(nn.Conv2d(channels, image_channels, 3, padding=1), SHORTCUT_INIT_GAIN)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Generate images.

        Args:
            z: (B, latent_dim) noise.
            labels: (B,) long class indices in [0, C), not range-checked here (gan.layers.check_labels does that
                once at the entry point), or (B, C) float class probabilities (soft labels blend classes).

        Returns:
            (B, image_channels, 32, 32) images in [-1, 1].
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if labels.shape[0] != z.shape[0]:
            raise ValueError(f"labels must have batch size {z.shape[0]}, got {tuple(labels.shape)}")
        probs = label_probabilities(labels, self.num_classes, z.dtype)  # (B, C), once for the 6 conditional BNs
        h = self.input(z).view(z.shape[0], self.channels, BOTTOM_SIZE, BOTTOM_SIZE)  # (B, ch, 4, 4)
        for block in self.blocks:
            h = block(h, probs)  # 8x8, 16x16, 32x32
        return torch.tanh(self.output(F.relu(self.output_norm(h))))


class Discriminator(nn.Module):
    """Projection discriminator: SN residual blocks, ReLU, global sum pooling, ``linear(phi) + embed(y) . phi``.

    Blocks: optimized first block (down), one down-sampling block, two plain blocks; all ``channels`` wide.

    Args:
        channels: feature channels (128 in the reference model).
        num_classes: C for the class projection.
        image_channels: input channels.
    """

    def __init__(self, channels: int = 128, num_classes: int = 10, image_channels: int = 3):
        super().__init__()
        _check_positive(channels=channels, num_classes=num_classes, image_channels=image_channels)
        self.channels, self.num_classes = channels, num_classes
        self.blocks = nn.Sequential(
            OptimizedDiscriminatorBlock(image_channels, channels),  # 16x16
            DiscriminatorBlock(channels, channels, downsample=True),  # 8x8
            DiscriminatorBlock(channels, channels, downsample=False),
            DiscriminatorBlock(channels, channels, downsample=False),
        )
        self.output = sn_linear(channels, 1)
        # The class embedding as a (C, ch) matrix with spectral norm, applied to class probabilities.
        self.projection = sn_linear(num_classes, channels, bias=False)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Score images.

        Args:
            images: (B, image_channels, 32, 32) in [-1, 1].
            labels: (B,) long in [0, C) (not range-checked here) or (B, C) float class probabilities.

        Returns:
            (B,) logits; larger means "real".
        """
        features = F.relu(self.blocks(images)).sum(dim=(2, 3))  # (B, ch): global sum pooling
        probs = label_probabilities(labels, self.num_classes, features.dtype)  # (B, C)
        class_embedding = self.projection(probs)  # (B, ch)
        return self.output(features).squeeze(1) + (class_embedding * features).sum(dim=1)
