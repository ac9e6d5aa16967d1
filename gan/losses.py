"""GAN losses as pure functions of discriminator logits.

* hinge (Lim & Ye 2017; Miyato et al. 2018, the SNGAN default):
  ``L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``, ``L_G = -E[D(G(z))]``.
* non-saturating (Goodfellow et al. 2014):
  ``L_D = E[softplus(-D(x))] + E[softplus(D(G(z)))]``, ``L_G = E[softplus(-D(G(z)))]``
  (``softplus(-t) = -log sigmoid(t)``, computed stably).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "nonsaturating_discriminator_loss",
    "nonsaturating_generator_loss",
    "GANLoss",
    "LOSSES",
    "get_loss",
]


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator.

    Args:
        real_logits: (B_real,) D scores of real images.
        fake_logits: (B_fake,) D scores of generated images.

    Returns:
        scalar ``mean(relu(1 - real)) + mean(relu(1 + fake))``.
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator. Args: fake_logits (B,). Returns: scalar ``-mean(fake)``."""
    return -fake_logits.mean()


def nonsaturating_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the discriminator (real -> 1, fake -> 0).

    Args:
        real_logits: (B_real,) D scores of real images.
        fake_logits: (B_fake,) D scores of generated images.

    Returns:
        scalar ``mean(softplus(-real)) + mean(softplus(fake))``.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss. Args: fake_logits (B,). Returns: scalar ``mean(softplus(-fake))``."""
    return F.softplus(-fake_logits).mean()


class GANLoss(NamedTuple):
    """A pair of loss functions: ``discriminator(real_logits, fake_logits)`` and ``generator(fake_logits)``."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]


LOSSES = {
    "hinge": GANLoss(hinge_discriminator_loss, hinge_generator_loss),
    "nonsaturating": GANLoss(nonsaturating_discriminator_loss, nonsaturating_generator_loss),
}


def get_loss(name: str) -> GANLoss:
    """Look up a loss pair by name ("hinge" or "nonsaturating"); unknown names raise ValueError."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
