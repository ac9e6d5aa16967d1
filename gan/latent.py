"""Latent noise for the generator: Gaussian, class-conditional vMF from a classifier, or uniform on a sphere.

All samplers share one interface: ``sampler.sample(labels) -> z`` with ``labels (B,)`` long and ``z (B, d)``
on the labels' device, plus ``latent_dim``, ``spherical`` (samples lie on the sphere of radius sqrt(d), so
interpolate with slerp) and ``class_conditional``. Build one from a config with :func:`build_latent_sampler`.

* ``gaussian``: ``z ~ N(0, I_d)``, the SNGAN default.
* ``vmf``: ``z = sqrt(d) * u`` with ``u ~ vMF(w_y / |w_y|, kappa)`` from a classifier's final layer
  (:meth:`vmfprior.VMFPrior.from_checkpoint`), the SNGAN-vMF noise of Seo, Lee & Kwak (2021).
* ``sphere``: ``z = sqrt(d) * u`` with ``u`` uniform on ``S^{d-1}``: spherical like ``vmf`` but blind to the
  class, the ablation that separates "spherical noise" from "class-aware noise".
* ``vmf-orthogonal``: ``vmf`` with the mean directions of a fixed semi-orthogonal head
  (``vmfprior.heads.make_head("orthogonal", d, C, seed=ORTHOGONAL_HEAD_SEED)``) instead of a trained classifier's:
  noise clustered by class as tightly as ``vmf`` at the same kappa, but with no learned class affinity. The
  control that separates "the classifier's geometry helps" from "any class-clustered noise helps".

Sampling uses the global torch RNG, so ``accelerator.save_state`` / ``load_state`` make it resumable. The label
values are trusted (checked once per batch at the entry point, ``gan.layers.check_labels``): a range check per
draw would synchronize a GPU with the host at every draw.
"""

from __future__ import annotations

import math
import os

import torch

from gan.config import SAMPLERS, VMF_SAMPLERS

__all__ = [
    "SAMPLERS",
    "VMF_SAMPLERS",
    "ORTHOGONAL_HEAD_SEED",
    "LatentSampler",
    "GaussianSampler",
    "SphereSampler",
    "VMFSampler",
    "build_latent_sampler",
]

ORTHOGONAL_HEAD_SEED = 0
"""Seed of the fixed orthogonal head of ``vmf-orthogonal`` (one head for every run, so that seeds differ only in
training)."""


def _check_labels(labels: torch.Tensor) -> None:
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a (B,) integer tensor, got shape {tuple(labels.shape)} dtype {labels.dtype}")


class LatentSampler:
    """Base class: draws ``(B, latent_dim)`` noise for ``(B,)`` labels.

    Args:
        latent_dim: d.
    """

    name = "base"
    spherical = False
    class_conditional = False

    def __init__(self, latent_dim: int):
        if not isinstance(latent_dim, int) or latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        self.latent_dim = latent_dim

    @property
    def radius(self) -> float:
        """sqrt(d): the norm of spherical samples, and the typical norm of Gaussian ones."""
        return math.sqrt(self.latent_dim)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        """Draw noise. Args: labels (B,) long. Returns: z (B, latent_dim) float32 on ``labels.device``."""
        raise NotImplementedError

    def to(self, device) -> LatentSampler:
        """Move any tensors the sampler holds to ``device``; returns self (no-op for stateless samplers)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(latent_dim={self.latent_dim})"


class GaussianSampler(LatentSampler):
    """``z ~ N(0, I_d)``, independent of the label."""

    name = "gaussian"

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        _check_labels(labels)
        return torch.randn(labels.shape[0], self.latent_dim, device=labels.device)


class SphereSampler(LatentSampler):
    """``z`` uniform on the sphere of radius sqrt(d) (a normalized Gaussian), independent of the label."""

    name = "sphere"
    spherical = True

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        _check_labels(labels)
        gaussian = torch.randn(labels.shape[0], self.latent_dim, device=labels.device)
        return self.radius * gaussian / gaussian.norm(dim=1, keepdim=True)


def _prior_has_sync_free_sample(prior) -> bool:
    """Whether ``prior.sample`` takes ``validate=False`` (the label range check that reads labels on the host)."""
    import inspect

    return "validate" in inspect.signature(prior.sample).parameters


def _sample_from_buffers(prior, index: torch.Tensor) -> torch.Tensor:
    """ADAPTER, to delete once every VMFPrior has ``sample(..., validate=False)``: the same draw built from the
    prior's buffers, skipping the host-side label check (sampling needs no normalizing constant)."""
    from vmfprior import VonMisesFisher

    return VonMisesFisher(prior.mean_directions[index], prior.concentration[index], validate_args=False).sample()


class VMFSampler(LatentSampler):
    """``z = sqrt(d) * vMF(mean_direction_y, concentration)`` from a classifier's final layer.

    Args:
        prior: a :class:`vmfprior.VMFPrior`.
    """

    name = "vmf"
    spherical = True
    class_conditional = True

    def __init__(self, prior):
        super().__init__(int(prior.dim))
        self.prior = prior
        self.num_classes = int(prior.num_classes)

    def sample(self, labels: torch.Tensor) -> torch.Tensor:
        _check_labels(labels)
        index = labels.to(self.prior.mean_directions.device)
        with torch.no_grad():
            if _prior_has_sync_free_sample(self.prior):
                z = self.prior.sample(index, radius=self.radius, validate=False)  # (B, d); labels checked upstream
            else:
                z = self.radius * _sample_from_buffers(self.prior, index)
        return z.to(device=labels.device, dtype=torch.float32)

    def to(self, device) -> VMFSampler:
        """Move the prior's tensors to ``device`` (when the prior supports ``.to``); returns self."""
        if hasattr(self.prior, "to"):
            moved = self.prior.to(device)
            self.prior = moved if moved is not None else self.prior
        return self

    def __repr__(self) -> str:
        return f"VMFSampler(latent_dim={self.latent_dim}, num_classes={self.num_classes})"


def build_latent_sampler(
    name: str,
    latent_dim: int,
    num_classes: int | None = None,
    prior_checkpoint: str | os.PathLike | None = None,
    concentration: float | None = None,
) -> LatentSampler:
    """Build a sampler from config values.

    Args:
        name: one of :data:`SAMPLERS`.
        latent_dim: d; for ``vmf`` it must equal the classifier's penultimate width.
        num_classes: for ``vmf``, checked against the classifier's class count when given.
        prior_checkpoint: for ``vmf``: a classifier checkpoint readable by ``VMFPrior.from_checkpoint``.
        concentration: for ``vmf`` and ``vmf-orthogonal``: kappa > 0.

    Returns:
        a :class:`LatentSampler`.

    Raises:
        ValueError: unknown ``name`` (listing the valid names), missing/invalid vMF arguments, or a classifier
            whose width or class count does not match.
    """
    if name == "gaussian":
        return GaussianSampler(latent_dim)
    if name == "sphere":
        return SphereSampler(latent_dim)
    if name not in VMF_SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {name!r}")
    if concentration is None or not concentration > 0:
        raise ValueError(f"sampler {name!r} needs concentration > 0, got {concentration!r}")
    from vmfprior import VMFPrior  # imported here so the other samplers work without the prior module

    if name == "vmf-orthogonal":
        if num_classes is None:
            raise ValueError("sampler 'vmf-orthogonal' needs num_classes")
        from vmfprior.heads import make_head

        head = make_head("orthogonal", latent_dim, num_classes, seed=ORTHOGONAL_HEAD_SEED)
        return VMFSampler(VMFPrior.from_linear(head, concentration))
    if not prior_checkpoint:
        raise ValueError("sampler 'vmf' needs prior_checkpoint: a classifier checkpoint (see gan/classifier.py)")
    if not os.path.isfile(prior_checkpoint):
        raise ValueError(f"prior_checkpoint {str(prior_checkpoint)!r} is not a file")
    prior = VMFPrior.from_checkpoint(prior_checkpoint, concentration)
    if int(prior.dim) != latent_dim:
        raise ValueError(
            f"latent_dim {latent_dim} does not match the classifier's penultimate width {prior.dim} "
            f"in prior_checkpoint {str(prior_checkpoint)!r}"
        )
    if num_classes is not None and int(prior.num_classes) != num_classes:
        raise ValueError(f"num_classes {num_classes} does not match the classifier's {prior.num_classes} classes")
    return VMFSampler(prior)
