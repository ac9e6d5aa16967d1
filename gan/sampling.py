"""Conditional sampler of a trained GAN run, for grids and IS/FID (the protocol of eval.sampler).

sampler = load_sampler("runs/sngan-vmf", device="cuda")
labels = torch.arange(10)
images = sampler.decode(sampler.sample_latent(labels), F.one_hot(labels, 10).float())  # (10, 3, 32, 32) in [0, 1]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.run import load_checkpoint, read_run
from gan.config import GANConfig
from gan.latent import LatentSampler, build_latent_sampler
from gan.layers import check_labels
from gan.models import Generator

__all__ = ["GENERATOR_FILE", "GANSampler", "load_sampler", "build_sampler_from_state"]

GENERATOR_FILE = "generator.pt"
"""Written by gan/train.py at every checkpoint: generator (and EMA) weights, prior weights, iteration, config."""


class GANSampler:
    """A generator plus its latent sampler, behind the project's conditional-sampler interface.

    Args:
        generator: a :class:`gan.models.Generator` (put in eval mode by :meth:`decode`).
        latent: the :class:`gan.latent.LatentSampler` the generator was trained with.
    """

    def __init__(self, generator: nn.Module, latent: LatentSampler):
        if generator.latent_dim != latent.latent_dim:
            raise ValueError(f"latent.latent_dim {latent.latent_dim} != generator.latent_dim {generator.latent_dim}")
        self.generator = generator
        self.latent = latent
        self.num_classes = generator.num_classes
        self.latent_dim = generator.latent_dim
        self.spherical = latent.spherical

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @torch.no_grad()
    def sample_latent(self, labels: torch.Tensor) -> torch.Tensor:
        """Draw the model's noise. Args: labels (B,) long in [0, C). Returns: z (B, latent_dim) on the generator's
        device."""
        labels = labels.to(self.device)
        check_labels(labels, self.num_classes)  # the entry point: the sampler and the generator trust labels
        return self.latent.sample(labels)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, label_probs: torch.Tensor) -> torch.Tensor:
        """Generate images in eval mode (batch-norm running statistics).

        Args:
            z: (B, latent_dim) noise.
            label_probs: (B, num_classes) class probabilities (one-hot, or blends for interpolations);
                (B,) long labels are accepted too.

        Returns:
            (B, 3, 32, 32) float images in [0, 1].
        """
        label_probs = label_probs.to(self.device)
        if not label_probs.is_floating_point():
            check_labels(label_probs, self.num_classes)
        was_training = self.generator.training
        self.generator.eval()
        images = self.generator(z.to(self.device, torch.float32), label_probs)
        self.generator.train(was_training)
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        """Images for labels (B,) long: ``decode(sample_latent(labels), labels)``. Returns (B, 3, 32, 32) in [0, 1]."""
        labels = labels.to(self.device)
        z = self.sample_latent(labels)  # checks the labels
        return self.decode(z, F.one_hot(labels, self.num_classes).float())


def _config_from_dict(values: dict) -> GANConfig:
    known = {field.name for field in dataclasses.fields(GANConfig)}
    return GANConfig(**{key: value for key, value in values.items() if key in known})


def build_sampler_from_state(config: GANConfig, state: dict, device: str | torch.device = "cpu") -> GANSampler:
    """Rebuild a sampler from a config and the dict saved in ``generator.pt``.

    The vMF prior is rebuilt from the mean directions stored in ``state["prior_weight"]`` when present, so the
    run folder does not depend on the classifier checkpoint's path.

    Args:
        config: the run's GANConfig.
        state: {"generator": state_dict, "ema": state_dict or None, "prior_weight": (C, d) or None, ...}.
        device: where to build the models.

    Returns:
        a :class:`GANSampler` using the EMA weights when the run kept an EMA.
    """
    generator = Generator(config.latent_dim, config.g_channels, config.num_classes, upsample=config.upsample)
    weights = state.get("ema") or state["generator"]
    generator.load_state_dict(weights)
    generator.to(device).eval()
    if config.sampler in ("vmf", "vmf-orthogonal") and state.get("prior_weight") is not None:
        from gan.latent import VMFSampler
        from vmfprior import VMFPrior

        latent = VMFSampler(VMFPrior.from_weight(state["prior_weight"].float(), config.concentration))
    else:
        latent = build_latent_sampler(
            config.sampler, config.latent_dim, config.num_classes, config.prior_checkpoint, config.concentration
        )
    return GANSampler(generator, latent.to(device))


def load_sampler(run_dir: str | Path, device: str | torch.device = "cpu") -> GANSampler:
    """Load the conditional sampler of a GAN run folder (EMA generator weights if the run kept them).

    Args:
        run_dir: a folder written by gan/train.py (config.json with kind "gan", generator.pt).
        device: where to put the generator and the latent sampler.

    Returns:
        an object with num_classes, latent_dim, spherical, sample_latent(labels), decode(z, label_probs).
    """
    _, values = read_run(run_dir, ("gan",))
    path = Path(run_dir) / GENERATOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run has not written a checkpoint yet")
    state = load_checkpoint(path, ("generator",), what="gan/train.py generator file")
    return build_sampler_from_state(_config_from_dict(values), state, device)
