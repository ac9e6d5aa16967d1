"""Classifier heads from the literature, one interface: features (B, d) -> logits (B, C), weight (C, d).

* ``linear``: the usual learned ``nn.Linear``.
* ``random``: fixed random unit class vectors, dot-product logits (frozen).
* ``random-cosine``: the same vectors, logits = scale * cos(feature, w_i) (frozen vectors, fixed scale).
* ``orthogonal``: a fixed semi-orthogonal matrix: orthonormal rows when C <= d, orthonormal columns otherwise.
* ``hadamard``: fixed rows of a Sylvester Hadamard matrix scaled to unit norm (Hoffer et al., 2018).
  Limit: needs C <= d; the rows are exactly orthogonal when d is a power of two (otherwise the truncation to
  d columns makes them only nearly so).
* ``identity``: logits are the first C features (Seo et al.'s identity head); needs d >= C.

Every head exposes ``weight`` (C, d), so any of them can define a ``VMFPrior`` (``VMFPrior.from_linear``).
Fixed heads store their weight as a buffer: it is saved in the state dict but never trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["make_head", "HEAD_KINDS", "FixedHead", "CosineHead", "IdentityHead", "sylvester_hadamard"]


def _check_sizes(in_features: int, num_classes: int) -> None:
    for name, value in (("in_features", in_features), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def sylvester_hadamard(order: int) -> torch.Tensor:
    """The Sylvester Hadamard matrix of the given order (a power of two), entries +-1, shape (order, order)."""
    if order < 1 or order & (order - 1):
        raise ValueError(f"order must be a power of two, got {order}")
    matrix = torch.ones(1, 1)
    while matrix.shape[0] < order:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix


def _random_unit_rows(num_classes: int, in_features: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(num_classes, in_features, generator=generator)
    return rows / rows.norm(dim=1, keepdim=True)


def _semi_orthogonal(num_classes: int, in_features: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tall = torch.randn(max(num_classes, in_features), min(num_classes, in_features), generator=generator)
    q, r = torch.linalg.qr(tall)  # q: orthonormal columns
    q = q * torch.sign(torch.diagonal(r))  # make the factorization unique (Haar-distributed q)
    return q if num_classes >= in_features else q.T  # (C, d)


def _hadamard_rows(num_classes: int, in_features: int) -> torch.Tensor:
    if num_classes > in_features:
        raise ValueError(
            f"a Hadamard head needs num_classes <= in_features, got {num_classes} classes for {in_features} features"
        )
    order = 1 << (in_features - 1).bit_length()
    rows = sylvester_hadamard(order)[:num_classes, :in_features]
    return rows / math.sqrt(in_features)


class FixedHead(nn.Module):
    """Dot-product logits ``features @ weight.T`` with a frozen weight (C, d) stored as a buffer."""

    weight: torch.Tensor
    """The frozen class vectors (C, d), a buffer."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.bias = None
        """None: a fixed head has no bias (``VMFPrior.from_linear`` reads ``weight`` and ``bias``)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T


class CosineHead(FixedHead):
    """Logits ``scale * cos(features, w_i)`` with frozen unit class vectors and a fixed scale."""

    def __init__(self, weight: torch.Tensor, scale: float = 16.0):
        super().__init__(weight / weight.norm(dim=1, keepdim=True))
        self.scale = float(scale)
        """The fixed factor on the cosine logits (the inverse temperature of the softmax)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.normalize(features, dim=-1) @ self.weight.T


class IdentityHead(nn.Module):
    """Logits = the first C features; weight = the (C, d) identity block."""

    weight: torch.Tensor
    """The (C, d) identity block, a buffer."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        if in_features < num_classes:
            raise ValueError(
                f"an identity head needs in_features >= num_classes, got {in_features} features for {num_classes} "
                "classes"
            )
        self.num_classes = num_classes
        """Number of classes C: the logits are the first C features."""
        self.register_buffer("weight", torch.eye(num_classes, in_features))
        self.bias = None
        """None: the identity head has no bias."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features[..., : self.num_classes]


HEAD_KINDS = ("linear", "random", "random-cosine", "orthogonal", "hadamard", "identity")
"""The ``kind`` names :func:`make_head` accepts: a trained linear layer, or a fixed head from related work."""


def make_head(kind: str, in_features: int, num_classes: int, seed: int = 0, cosine_scale: float = 16.0) -> nn.Module:
    """Build a classifier head mapping features (B, in_features) to logits (B, num_classes).

    Args:
        kind: one of ``HEAD_KINDS``.
        in_features: penultimate width d.
        num_classes: number of classes C.
        seed: seed of the fixed random heads (their own generator; the global RNG is not touched).
        cosine_scale: logit scale of the ``random-cosine`` head.

    Returns:
        An ``nn.Module`` with ``weight`` (C, d) and ``bias`` ((C,) or None).
    """
    _check_sizes(in_features, num_classes)
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "random":
        return FixedHead(_random_unit_rows(num_classes, in_features, seed))
    if kind == "random-cosine":
        return CosineHead(_random_unit_rows(num_classes, in_features, seed), scale=cosine_scale)
    if kind == "orthogonal":
        return FixedHead(_semi_orthogonal(num_classes, in_features, seed))
    if kind == "hadamard":
        return FixedHead(_hadamard_rows(num_classes, in_features))
    if kind == "identity":
        return IdentityHead(in_features, num_classes)
    raise ValueError(f"unknown head kind {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
