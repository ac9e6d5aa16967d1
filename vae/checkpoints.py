"""VAE run folders: which files a run holds, and the model rebuilt from them.

A run folder written by ``vae.train`` holds ``config.json`` (kind "vae"), ``last.pt`` (:mod:`common.run`'s
checkpoint: model, optimizer, step, config, early-stopping state, RNG states; for ``--resume``) and ``best.pt``
(the weights with the best validation ELBO). HVAE-L checkpoints hold the class prior as the ``class_prior.*``
buffers of a :class:`vmfprior.VMFPrior` submodule, so a run never needs its classifier again.

Runs written by earlier versions (config keys ``z_dim`` and ``max_epochs``, state key ``prior_weight``, a
``last.pt`` counting ``epoch``) are converted on load by :func:`upgrade_legacy` and :func:`upgrade_checkpoint`;
nothing on disk changes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.run import LAST_CHECKPOINT, CheckpointError, load_checkpoint, read_run
from vae.models import HypersphericalVAE
from vmfprior import VMFPrior

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "load_model",
    "model_from_state",
    "upgrade_checkpoint",
    "upgrade_legacy",
]

BEST_CHECKPOINT = "best.pt"


def upgrade_legacy(config: dict, state: dict) -> tuple[dict, dict]:
    """Convert a config and model state dict of earlier formats (``z_dim``, ``max_epochs``, ``prior_weight``) to the
    current one.

    Args:
        config: a run's config dict.
        state: the model's state dict.

    Returns:
        ``(config, state)``, new dicts (or the given ones when already current).
    """
    if "z_dim" in config and "latent_dim" not in config:
        config = {("latent_dim" if key == "z_dim" else key): value for key, value in config.items()}
        config.setdefault("encoder_sees_label", False)
    if "max_epochs" in config and "epochs" not in config:
        config = {("epochs" if key == "max_epochs" else key): value for key, value in config.items()}
    if "prior_weight" in state:
        state = dict(state)
        directions = state.pop("prior_weight")  # (C, d) unit rows: the prior's mean directions
        concentration = float(config.get("prior_concentration", 5.0))
        state["class_prior.weight"] = directions
        state["class_prior.mean_directions"] = torch.nn.functional.normalize(directions, dim=1)
        state["class_prior.concentration"] = torch.full((directions.shape[0],), concentration, dtype=directions.dtype)
    return config, state


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """A ``last.pt`` of an earlier version with its config and model state converted (for ``RunFolder.open``)."""
    config, state = upgrade_legacy(checkpoint["config"], checkpoint.get("model", {}))
    return {**checkpoint, "config": config, "model": state}


def model_from_state(config: dict, state: dict, source="the checkpoint") -> HypersphericalVAE:
    """Build a model from a run's config dict and load a model state dict into it (legacy formats converted).

    Args:
        config: with keys ``model``, ``latent_dim`` (or legacy ``z_dim``).
        state: the model's state dict (``checkpoint["model"]``).
        source: the file it came from, for the message when it does not fit.

    Returns:
        the model, on the CPU, in training mode.
    """
    config, state = upgrade_legacy(config, state)
    class_prior = None
    if "class_prior.weight" in state:
        class_prior = VMFPrior.from_weight(
            state["class_prior.weight"], state["class_prior.concentration"], state.get("class_prior.bias")
        )
    num_classes = state["class_prior.weight"].shape[0] if class_prior is not None else config.get("num_classes", 10)
    model = HypersphericalVAE(
        config["model"],
        config["latent_dim"],
        num_classes,
        class_prior=class_prior,
        encoder_sees_label=config.get("encoder_sees_label", False),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # mismatched keys or shapes: the file belongs to another model
        raise CheckpointError(
            f"{source} does not fit a {config['model']} with latent_dim "
            f"{config['latent_dim']}: {str(error).splitlines()[0]}"
        ) from error
    return model


def load_model(run_dir, which: str = "best", device="cpu") -> HypersphericalVAE:
    """Rebuild a trained model from its run folder.

    Args:
        run_dir: folder written by ``vae.train``.
        which: "best" (best validation ELBO; falls back to "last") or "last".
        device: where to put the model.

    Returns:
        the model in eval mode.
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    run_dir = Path(run_dir)
    _, config = read_run(run_dir, ("vae",))
    path = run_dir / (BEST_CHECKPOINT if which == "best" else LAST_CHECKPOINT)
    if not path.is_file():
        path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint ({BEST_CHECKPOINT} or {LAST_CHECKPOINT}) yet")
    checkpoint = load_checkpoint(path, ("model",), what="vae.train checkpoint")
    return model_from_state(config, checkpoint["model"], source=path).to(device).eval()
