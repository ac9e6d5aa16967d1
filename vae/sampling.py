"""Load a trained VAE run folder as a model, or as the conditional sampler that eval.grids and eval.fidelity use.

    sampler = load_sampler("runs/hvae-l-d5")
    images = sampler.decode(sampler.sample_latent(labels), torch.nn.functional.one_hot(labels, 10).float())
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vae.models import IMAGE_SHAPE, HypersphericalVAE
from vae.train import BEST_CHECKPOINT, LAST_CHECKPOINT
from vmfprior.runs import read_config

__all__ = ["load_model", "load_sampler", "VAESampler"]


def load_model(run_dir, device="cpu", which: str = "best") -> HypersphericalVAE:
    """Rebuild a trained model from its run folder.

    Args:
        run_dir: folder written by ``vae.train``.
        device: where to put the model.
        which: "best" (best validation ELBO; falls back to "last") or "last".

    Returns:
        the model in eval mode.
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    run_dir = Path(run_dir)
    kind, config = read_config(run_dir)
    if kind != "vae":
        raise ValueError(f"{run_dir} holds a {kind!r} run, not a 'vae' run")
    path = run_dir / (BEST_CHECKPOINT if which == "best" else LAST_CHECKPOINT)
    if not path.is_file():
        path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint ({BEST_CHECKPOINT} or {LAST_CHECKPOINT})")
    # best.pt holds tensors and plain config values only; last.pt also holds RNG states (our own file).
    state = torch.load(path, map_location="cpu", weights_only=path.name == BEST_CHECKPOINT)["model"]
    model = HypersphericalVAE(
        config["model"], config["z_dim"], prior_weight=state.get("prior_weight"),
        prior_concentration=config["prior_concentration"],
    )
    model.load_state_dict(state)
    return model.to(device).eval()


class VAESampler:
    """Conditional sampler over a trained VAE (interface of .interfaces.md).

    Attributes:
        num_classes: labels ``C``. latent_dim: ``d``. spherical: True (interpolate with slerp).
    """

    spherical = True

    def __init__(self, model: HypersphericalVAE):
        self.model = model
        self.num_classes = model.num_classes
        self.latent_dim = model.z_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def sample_latent(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B,)`` labels -> ``(B, d)`` latents from the model's prior (hvae-l: ``vMF(w_y, kappa)``; else uniform)."""
        labels = self.model._check_labels(torch.as_tensor(labels, device=self.device), len(labels))
        if self.model.kind == "hvae-l":
            return self.model.label_prior().sample(labels)
        return F.normalize(torch.randn(labels.shape[0], self.latent_dim, device=self.device), dim=-1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, label_probs: torch.Tensor) -> torch.Tensor:
        """``z (B, d)``, ``label_probs (B, C)`` -> Bernoulli means ``(B, 1, 28, 28)`` in [0, 1] (labels used by hvae-c)."""
        if z.dim() != 2 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if label_probs.shape != (z.shape[0], self.num_classes):
            raise ValueError(f"label_probs must have shape ({z.shape[0]}, {self.num_classes}), got {tuple(label_probs.shape)}")
        logits = self.model.decode_logits(z.to(self.device).float(), label_probs.to(self.device).float())
        return torch.sigmoid(logits).view(-1, *IMAGE_SHAPE)


def load_sampler(run_dir, device="cpu") -> VAESampler:
    """The conditional sampler of a trained VAE run folder (best checkpoint)."""
    return VAESampler(load_model(run_dir, device=device))
