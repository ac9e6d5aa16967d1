"""Hyperspherical VAEs on binarized MNIST: HVAE, HVAE-C and HVAE-L.

Architecture of Davidson et al. (2018, "Hyperspherical Variational Auto-Encoders"), as used by the paper:

* encoder ``784 -> 256 -> 128`` (ReLU); mean direction ``normalize(Linear(128, d))``; concentration
  ``softplus(Linear(128, 1)) + 1``; ``q(z|x) = VonMisesFisher(mean, concentration)`` on ``S^{d-1}``.
* decoder ``d (+ C) -> 128 -> 256 -> 784`` (ReLU), Bernoulli logits.

The three models differ only in what the decoder sees and in the prior:

=========  ======================  ====================================================
model      decoder input           prior ``p(z | y)``
=========  ======================  ====================================================
hvae       ``z``                   ``HypersphericalUniform(d)``
hvae-c     ``concat(z, onehot y)``  ``HypersphericalUniform(d)``
hvae-l     ``z``                   ``vMF(w_y / |w_y|, concentration)`` from a classifier
=========  ======================  ====================================================

Every model has the same interface, ``model.elbo(x, y) -> ELBOTerms`` with per-example terms. For the
label-aware models (hvae-c, hvae-l) the bound is on ``log p(x, y)`` and includes ``log p(y) = log(1/C)``;
for hvae it is on ``log p(x)`` and ``log_label_prior`` is 0.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import kl_divergence

from vmfprior import HypersphericalUniform, VMFPrior, VonMisesFisher

MODEL_KINDS = ("hvae", "hvae-c", "hvae-l")
IMAGE_SHAPE = (1, 28, 28)
MIN_CONCENTRATION = 1.0
"""Added to softplus so q(z|x) never gets flatter than kappa = 1 (Davidson et al. 2018): keeps the
rejection sampler and the Bessel ratios away from the kappa -> 0 corner at no cost in expressiveness."""


class ELBOTerms(NamedTuple):
    """Per-example terms of the evidence lower bound, each ``(B,)``.

    ``elbo = reconstruction - kl + log_label_prior``.
    """

    reconstruction: torch.Tensor  # E_q[log p(x | z (, y))], one reparameterized sample
    kl: torch.Tensor  # KL(q(z|x) || p(z (| y))), closed form
    log_label_prior: torch.Tensor  # log p(y) = log(1/C) for the label-aware models, 0 for hvae
    elbo: torch.Tensor


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class HypersphericalVAE(nn.Module):
    """HVAE / HVAE-C / HVAE-L with a von Mises-Fisher posterior.

    Args:
        kind: "hvae", "hvae-c" or "hvae-l".
        z_dim: ambient latent dimension ``d`` (``z`` in ``S^{d-1}`` of ``R^d``), at least 2.
        num_classes: number of labels ``C``.
        prior_weight: ``(C, d)`` classifier final-layer weight defining the HVAE-L prior (required for
            "hvae-l", ignored otherwise). Stored as a buffer, so checkpoints are self-contained.
        prior_concentration: concentration of the HVAE-L prior (the paper used 5).
        input_dim: number of pixels (784 for MNIST).
        hidden: encoder hidden sizes; the decoder mirrors them.
    """

    def __init__(
        self,
        kind: str,
        z_dim: int,
        num_classes: int = 10,
        prior_weight: torch.Tensor | None = None,
        prior_concentration: float = 5.0,
        input_dim: int = 784,
        hidden: tuple[int, ...] = (256, 128),
    ):
        super().__init__()
        if kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
        if int(z_dim) < 2:
            raise ValueError(f"z_dim must be at least 2 (the sphere S^(d-1) of R^d), got {z_dim}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.kind = kind
        self.z_dim = int(z_dim)
        self.num_classes = int(num_classes)
        self.input_dim = int(input_dim)
        self.encoder = nn.Sequential(_mlp([input_dim, *hidden]), nn.ReLU())
        self.mean_layer = nn.Linear(hidden[-1], self.z_dim)
        self.concentration_layer = nn.Linear(hidden[-1], 1)
        decoder_input = self.z_dim + (self.num_classes if kind == "hvae-c" else 0)
        self.decoder = _mlp([decoder_input, *reversed(hidden), input_dim])
        if kind == "hvae-l":
            if prior_weight is None:
                raise ValueError("prior_weight (C, d) from a classifier is required for kind='hvae-l'")
            prior_weight = torch.as_tensor(prior_weight, dtype=torch.float32)
            if prior_weight.shape != (self.num_classes, self.z_dim):
                raise ValueError(
                    f"prior_weight must have shape (num_classes, z_dim) = ({self.num_classes}, {self.z_dim}), "
                    f"got {tuple(prior_weight.shape)}"
                )
            if not float(prior_concentration) > 0:
                raise ValueError(f"prior_concentration must be positive, got {prior_concentration}")
            self.register_buffer("prior_weight", prior_weight.clone())
        self.prior_concentration = float(prior_concentration)
        self._label_prior_cache = None  # (prior_weight tensor, its version, concentration, VMFPrior)

    @property
    def uses_labels(self) -> bool:
        """True for the models whose bound is on ``log p(x, y)`` (hvae-c, hvae-l)."""
        return self.kind != "hvae"

    # ----- inputs -------------------------------------------------------------------------------------------
    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 28, 28)`` or ``(B, 784)`` -> ``(B, 784)`` float, checked."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a (B, ...) tensor, got {getattr(x, 'shape', type(x))}")
        flat = x.reshape(x.shape[0], -1).float()
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} values per example, got shape {tuple(x.shape)}")
        return flat

    def _check_labels(self, y: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if y is None:
            if self.uses_labels:
                raise ValueError(f"y (labels) is required for kind={self.kind!r}")
            return None
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"y must be an integer tensor of labels, got {getattr(y, 'dtype', type(y))}")
        if y.shape != (batch,):
            raise ValueError(f"y must have shape ({batch},) to match x, got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"y must lie in 0..{self.num_classes - 1}, got {int(y.min())}..{int(y.max())}")
        return y.long()

    # ----- distributions ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> VonMisesFisher:
        """The posterior ``q(z | x)``.

        Args:
            x: ``(B, 784)`` or ``(B, 1, 28, 28)`` binary images.

        Returns:
            VonMisesFisher with batch shape ``(B,)`` and event shape ``(d,)``.
        """
        hidden = self.encoder(self._flatten(x))  # (B, 128)
        mean_direction = F.normalize(self.mean_layer(hidden), dim=-1)  # (B, d)
        concentration = F.softplus(self.concentration_layer(hidden)).squeeze(-1) + MIN_CONCENTRATION  # (B,)
        # Valid by construction (unit mean, kappa >= 1); a nan from a diverged network reaches the loss, where
        # training stops on it, so the per-step parameter check is skipped.
        return VonMisesFisher(mean_direction, concentration, validate_args=False)

    def label_prior(self) -> VMFPrior:
        """The HVAE-L class-conditional prior built from the stored classifier weight.

        Built once and reused (with its per-class normalizers); rebuilt when the weight buffer is replaced
        (``.to(device)``) or changed in place (``load_state_dict``), or the concentration is changed.
        """
        if self.kind != "hvae-l":
            raise ValueError(f"kind={self.kind!r} has no label prior (only 'hvae-l')")
        weight, cached = self.prior_weight, self._label_prior_cache
        try:
            version = weight._version
        except RuntimeError:  # an inference-mode tensor has no version counter: build afresh
            return VMFPrior.from_weight(weight, self.prior_concentration)
        if cached is None or cached[0] is not weight or cached[1:3] != (version, self.prior_concentration):
            cached = (weight, version, self.prior_concentration, VMFPrior.from_weight(weight, self.prior_concentration))
            self._label_prior_cache = cached
        return cached[3]

    def prior(self, y: torch.Tensor | None, batch: int, like: torch.Tensor):
        """``p(z | y)`` with batch shape ``(B,)`` (uniform for hvae / hvae-c)."""
        if self.kind == "hvae-l":
            return self.label_prior()(y)
        return HypersphericalUniform(self.z_dim, batch_shape=(batch,), dtype=like.dtype, device=like.device)

    def log_prior(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``log p(z | y)`` for samples ``z (S, B, d)`` -> ``(S, B)`` (uniform: ``-log |S^{d-1}|``)."""
        samples, batch = z.shape[0], z.shape[1]
        if self.kind == "hvae-l":
            labels = y.unsqueeze(0).expand(samples, batch).reshape(-1)
            return self.label_prior().log_prob(z.reshape(-1, self.z_dim), labels).view(samples, batch)
        return torch.full((samples, batch), self.log_uniform_density(), dtype=z.dtype, device=z.device)

    def log_marginal_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z) = log sum_y p(y) p(z | y)`` with uniform ``p(y)``, for ``z (S, B, d)`` -> ``(S, B)``."""
        samples, batch = z.shape[0], z.shape[1]
        if self.kind == "hvae-l":
            return self.label_prior().mixture_log_prob(z.reshape(-1, self.z_dim)).view(samples, batch)
        return torch.full((samples, batch), self.log_uniform_density(), dtype=z.dtype, device=z.device)

    def log_uniform_density(self) -> float:
        """``-log`` of the surface area of ``S^{d-1}``: ``log Gamma(d/2) - log 2 - (d/2) log pi``."""
        half = self.z_dim / 2.0
        return math.lgamma(half) - math.log(2.0) - half * math.log(math.pi)

    # ----- decoder ------------------------------------------------------------------------------------------
    def decode_logits(self, z: torch.Tensor, label_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli logits of ``p(x | z (, y))``.

        Args:
            z: ``(..., d)`` points on the sphere.
            label_probs: ``(..., C)`` one-hot or soft labels; used by hvae-c only (required there).

        Returns:
            ``(..., 784)`` logits.
        """
        if self.kind == "hvae-c":
            if label_probs is None:
                raise ValueError("label_probs (..., C) is required to decode with kind='hvae-c'")
            z = torch.cat([z, label_probs.to(z.dtype).expand(*z.shape[:-1], self.num_classes)], dim=-1)
        return self.decoder(z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, label_probs: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x | z (, y))`` summed over pixels.

        Args:
            x: ``(B, 784)`` binary images (flattened).
            z: ``(S, B, d)`` samples.
            label_probs: ``(B, C)`` one-hot labels (hvae-c) or None.

        Returns:
            ``(S, B)``.
        """
        logits = self.decode_logits(z, label_probs)  # (S, B, 784)
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float = 1.0) -> ELBOTerms:
        """Per-example evidence lower bound with one reparameterized sample and the closed-form KL.

        Args:
            x: ``(B, 784)`` or ``(B, 1, 28, 28)`` binary images.
            y: ``(B,)`` integer labels (required by hvae-c and hvae-l; ignored by hvae).
            kl_weight: weight of the KL in the returned ``elbo`` (KL warm-up); 1 gives the true bound.

        Returns:
            ELBOTerms of ``(B,)`` tensors; ``elbo = reconstruction - kl_weight * kl + log_label_prior``.
        """
        x = self._flatten(x)
        y = self._check_labels(y, x.shape[0])
        posterior = self.encode(x)
        z = posterior.rsample()  # (B, d)
        label_probs = F.one_hot(y, self.num_classes).float() if self.kind == "hvae-c" else None
        reconstruction = self.log_likelihood(x, z.unsqueeze(0), label_probs).squeeze(0)  # (B,)
        kl = kl_divergence(posterior, self.prior(y, x.shape[0], z))  # (B,)
        log_label_prior = torch.full_like(kl, -math.log(self.num_classes) if self.uses_labels else 0.0)
        return ELBOTerms(reconstruction, kl, log_label_prior, reconstruction - kl_weight * kl + log_label_prior)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float = 1.0) -> ELBOTerms:
        """Same as :meth:`elbo` (so wrappers such as DDP see a forward call)."""
        return self.elbo(x, y, kl_weight)


def build_model(config: dict, prior_weight: torch.Tensor | None = None) -> HypersphericalVAE:
    """Build a model from a training config dict (keys model, z_dim, prior_concentration)."""
    return HypersphericalVAE(
        config["model"],
        config["z_dim"],
        prior_weight=prior_weight,
        prior_concentration=config.get("prior_concentration", 5.0),
    )
