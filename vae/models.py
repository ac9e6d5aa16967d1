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

Every model has the same interface:

* ``model.elbo(x, y) -> ELBOTerms`` with per-example terms. For the label-aware models (hvae-c, hvae-l) the
  bound is on ``log p(x, y)`` and includes ``log p(y) = log(1/C)``; for hvae it is on ``log p(x)``.
* ``model.proposal(x, y)`` and ``model.log_joint(x, y, z)``: what ``eval.loglik``'s importance sampler needs,
  with no knowledge of the model kind.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import kl_divergence

from vae.config import MODEL_KINDS
from vmfprior import HypersphericalUniform, VMFPrior, VonMisesFisher
from vmfprior.distributions import log_sphere_area

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
        latent_dim: ambient latent dimension ``d`` (``z`` in ``S^{d-1}`` of ``R^d``), at least 2.
        num_classes: number of labels ``C``.
        class_prior: the HVAE-L prior ``p(z | y)``, a :class:`VMFPrior` over ``C`` classes in ``d`` dimensions
            (required for "hvae-l", refused otherwise). Held as a submodule: ``.to()`` moves it and the
            state dict saves it, so a checkpoint is self-contained.
        input_dim: number of pixels (784 for MNIST).
        hidden: encoder hidden sizes; the decoder mirrors them.
        encoder_sees_label: the encoder reads ``concat(x, onehot(y))``, so the posterior is ``q(z | x, y)``
            (a literal reading of the paper's Eq. 11-12; hvae-c and hvae-l only). Default: ``q(z | x)``.
    """

    def __init__(
        self,
        kind: str,
        latent_dim: int,
        num_classes: int = 10,
        class_prior: VMFPrior | None = None,
        input_dim: int = 784,
        hidden: tuple[int, ...] = (256, 128),
        encoder_sees_label: bool = False,
    ):
        super().__init__()
        if kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
        if int(latent_dim) < 2:
            raise ValueError(f"latent_dim must be at least 2 (the sphere S^(d-1) of R^d), got {latent_dim}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.kind = kind
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.input_dim = int(input_dim)
        if encoder_sees_label and kind == "hvae":
            raise ValueError("encoder_sees_label needs a label-aware model (hvae-c or hvae-l), got kind='hvae'")
        self.encoder_sees_label = bool(encoder_sees_label)
        encoder_input = input_dim + (self.num_classes if self.encoder_sees_label else 0)
        self.encoder = nn.Sequential(_mlp([encoder_input, *hidden]), nn.ReLU())
        self.mean_layer = nn.Linear(hidden[-1], self.latent_dim)
        self.concentration_layer = nn.Linear(hidden[-1], 1)
        decoder_input = self.latent_dim + (self.num_classes if kind == "hvae-c" else 0)
        self.decoder = _mlp([decoder_input, *reversed(hidden), input_dim])
        if (kind == "hvae-l") != (class_prior is not None):
            raise ValueError(
                f"class_prior (a VMFPrior from a classifier) is required for kind='hvae-l' and only "
                f"for it; got kind={kind!r} with class_prior={type(class_prior).__name__}"
            )
        if class_prior is not None:
            if not isinstance(class_prior, VMFPrior):
                raise TypeError(f"class_prior must be a VMFPrior, got {type(class_prior).__name__}")
            if (class_prior.num_classes, class_prior.dim) != (self.num_classes, self.latent_dim):
                raise ValueError(
                    f"class_prior must cover (num_classes, latent_dim) = ({self.num_classes}, {self.latent_dim}), "
                    f"got ({class_prior.num_classes}, {class_prior.dim})"
                )
        self.class_prior = class_prior
        self.log_uniform_density = -log_sphere_area(self.latent_dim)

    @property
    def uses_labels(self) -> bool:
        """True for the models whose bound is on ``log p(x, y)`` (hvae-c, hvae-l)."""
        return self.kind != "hvae"

    # ----- inputs -------------------------------------------------------------------------------------------
    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 28, 28)`` or ``(B, 784)`` -> ``(B, 784)`` float, checked."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a (B, ...) tensor, got {getattr(x, 'shape', type(x))}")
        flat = x.reshape(x.shape[0], -1).float()
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"x must have {self.input_dim} values per example, got shape {tuple(x.shape)}")
        return flat

    def check_labels(self, y: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """``(B,)`` integer labels in ``0..C-1`` as int64 (None passes for hvae); raises ValueError otherwise."""
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
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> VonMisesFisher:
        """The posterior ``q(z | x)``, or ``q(z | x, y)`` with ``encoder_sees_label``.

        Args:
            x: ``(B, 784)`` or ``(B, 1, 28, 28)`` binary images.
            y: ``(B,)`` labels, read only with ``encoder_sees_label`` (required there).

        Returns:
            VonMisesFisher with batch shape ``(B,)`` and event shape ``(d,)``.
        """
        x = self.flatten(x)
        if self.encoder_sees_label:
            y = self.check_labels(y, x.shape[0])
            x = torch.cat([x, F.one_hot(y, self.num_classes).to(x.dtype)], dim=-1)  # (B, 784 + C)
        hidden = self.encoder(x)  # (B, 128)
        mean_direction = F.normalize(self.mean_layer(hidden), dim=-1)  # (B, d)
        concentration = F.softplus(self.concentration_layer(hidden)).squeeze(-1) + MIN_CONCENTRATION  # (B,)
        # Valid by construction (unit mean, kappa >= 1); a nan from a diverged network reaches the loss, where
        # training stops on it, so the per-step parameter check is skipped.
        return VonMisesFisher(mean_direction, concentration, validate_args=False)

    def prior(self, y: torch.Tensor | None, batch: int, like: torch.Tensor):
        """``p(z | y)`` with batch shape ``(B,)`` (uniform for hvae / hvae-c); ``y`` already checked."""
        if self.class_prior is not None:
            return self.class_prior(y)
        return HypersphericalUniform(self.latent_dim, batch_shape=(batch,), dtype=like.dtype, device=like.device)

    def log_prior(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``log p(z | y)`` for samples ``z (S, B, d)`` -> ``(S, B)`` (uniform: ``-log |S^{d-1}|``)."""
        samples, batch = z.shape[0], z.shape[1]
        if self.class_prior is not None:
            labels = y.unsqueeze(0).expand(samples, batch).reshape(-1)
            return self.class_prior.log_prob(z.reshape(-1, self.latent_dim), labels).view(samples, batch)
        return torch.full((samples, batch), self.log_uniform_density, dtype=z.dtype, device=z.device)

    def log_marginal_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z) = log sum_y p(y) p(z | y)`` with uniform ``p(y)``, for ``z (S, B, d)`` -> ``(S, B)``."""
        samples, batch = z.shape[0], z.shape[1]
        if self.class_prior is not None:
            return self.class_prior.mixture_log_prob(z.reshape(-1, self.latent_dim)).view(samples, batch)
        return torch.full((samples, batch), self.log_uniform_density, dtype=z.dtype, device=z.device)

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

    # ----- the bound and the importance sampler's interface ------------------------------------------------
    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float = 1.0) -> ELBOTerms:
        """Per-example evidence lower bound with one reparameterized sample and the closed-form KL.

        Args:
            x: ``(B, 784)`` or ``(B, 1, 28, 28)`` binary images.
            y: ``(B,)`` integer labels (required by hvae-c and hvae-l; ignored by hvae).
            kl_weight: weight of the KL in the returned ``elbo`` (KL warm-up); 1 gives the true bound.

        Returns:
            ELBOTerms of ``(B,)`` tensors; ``elbo = reconstruction - kl_weight * kl + log_label_prior``.
        """
        x = self.flatten(x)
        y = self.check_labels(y, x.shape[0])
        posterior = self.encode(x, y)
        z = posterior.rsample()  # (B, d)
        label_probs = F.one_hot(y, self.num_classes).float() if self.kind == "hvae-c" else None
        reconstruction = self.log_likelihood(x, z.unsqueeze(0), label_probs).squeeze(0)  # (B,)
        kl = kl_divergence(posterior, self.prior(y, x.shape[0], z))  # (B,)
        log_label_prior = torch.full_like(kl, -math.log(self.num_classes) if self.uses_labels else 0.0)
        return ELBOTerms(reconstruction, kl, log_label_prior, reconstruction - kl_weight * kl + log_label_prior)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float = 1.0) -> ELBOTerms:
        """Same as :meth:`elbo` (so wrappers such as DDP see a forward call)."""
        return self.elbo(x, y, kl_weight)

    @property
    def proposal_uses_label(self) -> bool:
        """True when the importance sampler's proposal is ``q(z | x, y)`` (see :mod:`eval.loglik`)."""
        return self.encoder_sees_label

    def proposal(self, x: torch.Tensor, y: torch.Tensor | None = None) -> VonMisesFisher:
        """The importance sampler's proposal for ``x (B, 784)``: the posterior ``q(z | x (, y))``."""
        return self.encode(x, y)

    def log_joint(
        self, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor, marginal: bool = True
    ) -> dict[str, torch.Tensor]:
        """Log joint densities of ``x``, the latents ``z (S, B, d)`` and, for the label-aware models, ``y``.

        Args:
            marginal: also return ``"log_px"`` for the label-aware models (the label summed out inside the
                weight; valid when the proposal does not depend on the label).

        Returns:
            dict of ``(S, B)`` tensors: ``"log_px"`` = log p(x, z) (the label summed out for hvae-c / hvae-l)
            and, for hvae-c / hvae-l, ``"log_pxy"`` = log p(x, y, z) and ``"log_px_given_y"`` = log p(x, z | y).
        """
        x = self.flatten(x)
        y = self.check_labels(y, x.shape[0])
        if not self.uses_labels:
            return {"log_px": self.log_likelihood(x, z) + self.log_prior(z, None)}
        log_label_prior = -math.log(self.num_classes)
        if not marginal:
            label_probs = F.one_hot(y, self.num_classes).float() if self.kind == "hvae-c" else None
            log_px_given_y = self.log_likelihood(x, z, label_probs) + self.log_prior(z, y)
            return {"log_pxy": log_px_given_y + log_label_prior, "log_px_given_y": log_px_given_y}
        if self.kind == "hvae-l":
            log_lik = self.log_likelihood(x, z)  # (S, B)
            log_px_given_y = log_lik + self.log_prior(z, y)
            log_px = log_lik + self.log_marginal_prior(z)
        else:  # hvae-c: log p(x | z) = logsumexp_c [log p(c) + log p(x | z, c)]
            eye = torch.eye(self.num_classes, dtype=z.dtype, device=z.device)
            per_label = torch.stack(
                [self.log_likelihood(x, z, eye[c].expand(x.shape[0], -1)) for c in range(self.num_classes)], dim=-1
            )  # (S, B, C)
            log_pz = self.log_prior(z, None)  # (S, B)
            log_px_given_y = per_label.gather(-1, y.view(1, -1, 1).expand(z.shape[0], -1, 1)).squeeze(-1) + log_pz
            log_px = torch.logsumexp(per_label, dim=-1) + log_label_prior + log_pz
        return {"log_px": log_px, "log_pxy": log_px_given_y + log_label_prior, "log_px_given_y": log_px_given_y}
