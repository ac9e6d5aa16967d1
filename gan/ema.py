"""Exponential moving average of a model's weights (e.g. the generator), for sampling and evaluation."""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(nn.Module):
    """Holds ``module``, a frozen copy of a model whose parameters track ``decay * ema + (1 - decay) * model``.

    Buffers (batch-norm running statistics, spectral-norm vectors) are copied, not averaged.

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
