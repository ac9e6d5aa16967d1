"""The conditional-sampler protocol that the image evaluations take (grids, IS/FID).

A sampler is any object with::

    num_classes: int                       # C
    latent_dim: int                        # d
    spherical: bool                        # True: interpolate latents with slerp, else lerp (optional, default False)
    device: torch.device                   # where label tensors go (optional, default CPU)
    sample_latent(labels (B,) long) -> z (B, d)
    decode(z (B, d), label_probs (B, C) float) -> images (B, C_img, H, W) in [0, 1]

``vae.sampling.VAESampler`` and ``gan.sampling.GANSampler`` are the two in this repository.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["ConditionalSampler", "check_sampler", "sampler_device"]


@runtime_checkable
class ConditionalSampler(Protocol):
    """Structural type of a conditional sampler (see the module docstring)."""

    num_classes: int

    def sample_latent(self, labels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor, label_probs: torch.Tensor) -> torch.Tensor: ...


def check_sampler(sampler) -> int:
    """Raise TypeError / ValueError unless ``sampler`` follows the protocol.

    Returns:
        ``sampler.num_classes`` as an int.
    """
    for name in ("num_classes", "sample_latent", "decode"):
        if not hasattr(sampler, name):
            raise TypeError(f"sampler must provide `{name}` (see eval.sampler), got {type(sampler).__name__}")
    if int(sampler.num_classes) < 1:
        raise ValueError(f"sampler.num_classes must be positive, got {sampler.num_classes}")
    return int(sampler.num_classes)


def sampler_device(sampler) -> torch.device:
    """Where to create label tensors for ``sampler``: its ``device`` attribute, else the CPU."""
    return torch.device(getattr(sampler, "device", "cpu"))
