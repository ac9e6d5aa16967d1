"""A trained VAE as the conditional sampler that ``eval.grids`` and ``eval.fidelity`` take.

sampler = load_sampler("runs/hvae-l-d5")
images = sampler.decode(sampler.sample_latent(labels), torch.nn.functional.one_hot(labels, 10).float())
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae.checkpoints import load_model
from vae.models import IMAGE_SHAPE, HypersphericalVAE

__all__ = ["VAESampler", "load_sampler"]


class VAESampler:
    """Conditional sampler over a trained VAE (the protocol of :mod:`eval.sampler`).

    Attributes:
        num_classes: labels ``C``. latent_dim: ``d``. spherical: True (interpolate with slerp).
    """

    spherical = True

    def __init__(self, model: HypersphericalVAE):
        self.model = model
        self.num_classes = model.num_classes
        self.latent_dim = model.latent_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample_latent(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B,)`` labels -> ``(B, d)`` latents from the model's prior (hvae-l: ``vMF(w_y, kappa)``; else uniform)."""
        labels = self.model.check_labels(torch.as_tensor(labels, device=self.device), len(labels))
        if self.model.class_prior is not None:
            return self.model.class_prior.sample(labels)
        return F.normalize(torch.randn(labels.shape[0], self.latent_dim, device=self.device), dim=-1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, label_probs: torch.Tensor) -> torch.Tensor:
        """``z (B, d)``, ``label_probs (B, C)`` -> Bernoulli means ``(B, 1, 28, 28)`` in [0, 1] (labels used by
        hvae-c)."""
        if z.dim() != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if label_probs.shape != (z.shape[0], self.num_classes):
            raise ValueError(
                f"label_probs must have shape ({z.shape[0]}, {self.num_classes}), got {tuple(label_probs.shape)}"
            )
        logits = self.model.decode_logits(z.to(self.device).float(), label_probs.to(self.device).float())
        return torch.sigmoid(logits).view(-1, *IMAGE_SHAPE)


def load_sampler(run_dir, device="cpu") -> VAESampler:
    """The conditional sampler of a trained VAE run folder (best checkpoint)."""
    return VAESampler(load_model(run_dir, device=device))
