"""Run folders of the first format (config key z_dim, state key prior_weight) load as current models."""

import json

import torch
import torch.nn.functional as F

from vae.checkpoints import load_model, upgrade_legacy
from vae.models import HypersphericalVAE
from vmfprior import VMFPrior


def _legacy_run(tmp_path, kind):
    """A run folder as the first version wrote it, from a current model's weights."""
    torch.manual_seed(0)
    directions = F.normalize(torch.randn(10, 4), dim=-1)
    prior = VMFPrior.from_weight(directions, 7.0) if kind == "hvae-l" else None
    model = HypersphericalVAE(kind, 4, class_prior=prior)
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("class_prior.")}
    if kind == "hvae-l":
        state["prior_weight"] = directions
    config = {"model": kind, "z_dim": 4, "prior_concentration": 7.0}
    run = tmp_path / kind
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "vae", "config": config}))
    torch.save({"model": state, "epoch": 3, "config": config}, run / "best.pt")
    return model.eval(), run


def test_a_legacy_hvae_l_run_loads_with_its_prior(tmp_path):
    reference, run = _legacy_run(tmp_path, "hvae-l")
    model = load_model(run)
    assert model.latent_dim == 4 and isinstance(model.class_prior, VMFPrior)
    torch.testing.assert_close(model.class_prior.concentration, torch.full((10,), 7.0))
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    y = torch.arange(6)
    z = F.normalize(torch.randn(3, 6, 4), dim=-1)
    for name, value in reference.log_joint(x, y, z).items():
        torch.testing.assert_close(model.log_joint(x, y, z)[name], value)


def test_a_legacy_hvae_run_loads(tmp_path):
    reference, run = _legacy_run(tmp_path, "hvae")
    model = load_model(run)
    torch.testing.assert_close(model.decoder[0].weight, reference.decoder[0].weight)


def test_upgrade_leaves_a_current_config_alone():
    config = {"model": "hvae", "latent_dim": 5, "encoder_sees_label": False}
    assert upgrade_legacy(config, {}) == (config, {})
