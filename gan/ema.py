"""Exponential moving average of a model's weights (e.g. the generator), for sampling and evaluation."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage", "recompute_batch_norm_statistics"]


class ExponentialMovingAverage(nn.Module):
    """Holds ``module``, a frozen copy of a model whose parameters track ``decay * ema + (1 - decay) * model``.

    Buffers are copied, not averaged. Batch-norm running statistics copied from the live model belong to the
    live weights, not to the averaged ones: call :func:`recompute_batch_norm_statistics` on ``module`` before
    sampling from it.

    Args:
        model: the model to track (its current weights start the average).
        decay: in [0, 1); the weight of the past per update.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights (same architecture as at construction)."""
        for average, current in zip(self.module.parameters(), model.parameters()):
            average.lerp_(current.detach().to(average.dtype), 1.0 - self.decay)
        for average, current in zip(self.module.buffers(), model.buffers()):
            average.copy_(current)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@torch.no_grad()
def recompute_batch_norm_statistics(generator: nn.Module, latent, num_samples: int, batch_size: int, seed: int) -> None:
    """Re-estimate the running statistics of every batch norm in ``generator`` from its own samples.

    The statistics are reset and averaged with equal weight over ``ceil(num_samples / batch_size)`` training-mode
    forward passes of ``batch_size`` images on fresh noise and uniform labels (the "standing statistics" of an
    averaged generator).
    The noise comes from a forked RNG seeded with ``seed``: the result is reproducible and the caller's random
    streams do not move.

    Args:
        generator: a gan.models.Generator (num_classes, parameters on one device); left in its former mode.
        latent: its gan.latent sampler.
        num_samples: images to average over.
        batch_size: images per forward pass (the training batch: statistics of batches of that size).
        seed: seed of the noise and labels.
    """
    norms = [module for module in generator.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device = next(generator.parameters()).device
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: every batch weighs the same
    was_training = generator.training
    generator.train()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for _ in range(-(-num_samples // batch_size)):
                labels = torch.randint(0, generator.num_classes, (batch_size,), device=device)
                generator(latent.sample(labels), labels)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        generator.train(was_training)
