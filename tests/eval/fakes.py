"""Small stand-ins shared by the eval tests: a conditional sampler of the eval.sampler protocol."""

import math

import torch


class FakeSampler:
    """Conditional sampler: class c's latent is sqrt(d) * e_c (plus optional noise); images encode label_probs.

    decode maps label probabilities to image brightness (class c's share times (c + 1) / C), so tests can
    read back which labels a row was decoded with; every decoded latent is recorded in `decoded`.
    """

    def __init__(self, num_classes=3, latent_dim=4, spherical=True, image_size=8, channels=3, noise=0.0):
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.spherical = spherical
        self.image_size = image_size
        self.channels = channels
        self.noise = noise
        self.decoded = []

    def sample_latent(self, labels):
        """labels (B,) long -> (B, d) on the sphere of radius sqrt(d) when spherical."""
        z = torch.zeros(labels.shape[0], self.latent_dim)
        z[torch.arange(labels.shape[0]), labels % self.latent_dim] = 1.0
        z = z + self.noise * torch.randn_like(z)
        if self.spherical:
            z = math.sqrt(self.latent_dim) * z / z.norm(dim=-1, keepdim=True)
        return z

    def decode(self, z, label_probs):
        """(B, d), (B, C) -> (B, channels, H, W) in [0, 1]."""
        self.decoded.append(z.clone())
        levels = torch.arange(1, self.num_classes + 1, dtype=torch.float32) / self.num_classes  # (C,)
        brightness = (label_probs * levels).sum(-1)  # (B,)
        return brightness.view(-1, 1, 1, 1).expand(-1, self.channels, self.image_size, self.image_size).clone()
