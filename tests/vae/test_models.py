"""Tests for vae.models: shapes, the ELBO identity, KL terms against scipy, and input checks."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import gammaln, ive
from scipy.stats import vonmises_fisher

from vae.models import HypersphericalVAE
from vmfprior import VMFPrior


def _prior_weight(num_classes=10, dim=5, seed=0):
    return torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))


def _model(kind, dim=5, seed=0, prior_concentration=5.0, **kwargs):
    torch.manual_seed(seed)
    prior = VMFPrior.from_weight(_prior_weight(dim=dim), prior_concentration) if kind == "hvae-l" else None
    return HypersphericalVAE(kind, dim, class_prior=prior, **kwargs)


def _batch(size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(size, 1, 28, 28, generator=generator) < 0.3).float()
    y = torch.randint(0, 10, (size,), generator=generator)
    return x, y


def _kl_vmf_uniform_scipy(concentration, dim):
    """KL(vMF(kappa) || U(S^{d-1})) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}| with scipy Bessels."""
    kappa = np.asarray(concentration, dtype=np.float64)
    nu = dim / 2 - 1
    log_iv = np.log(ive(nu, kappa)) + kappa
    log_c = nu * np.log(kappa) - dim / 2 * np.log(2 * np.pi) - log_iv
    a_d = ive(dim / 2, kappa) / ive(nu, kappa)
    log_area = np.log(2) + dim / 2 * np.log(np.pi) - gammaln(dim / 2)
    return kappa * a_d + log_c + log_area


@pytest.mark.parametrize("kind", ["hvae", "hvae-c", "hvae-l"])
def test_elbo_shapes_and_identity(kind):
    model = _model(kind)
    x, y = _batch()
    terms = model.elbo(x, y)
    for value in terms:
        assert value.shape == (8,) and torch.isfinite(value).all()
    expected_label_term = 0.0 if kind == "hvae" else -math.log(10)
    torch.testing.assert_close(terms.log_label_prior, torch.full((8,), expected_label_term))
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl + terms.log_label_prior)
    assert (terms.kl >= 0).all() and (terms.reconstruction < 0).all()
    warm = model.elbo(x, y, kl_weight=0.25)
    assert warm.elbo.shape == (8,)


def test_flat_and_image_inputs_agree():
    model = _model("hvae")
    x, _ = _batch()
    torch.manual_seed(3)
    a = model.elbo(x).elbo
    torch.manual_seed(3)
    b = model.elbo(x.view(8, 784)).elbo
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["hvae", "hvae-c"])
def test_uniform_prior_kl_matches_scipy(kind):
    model = _model(kind, dim=5)
    x, y = _batch()
    kappa = model.encode(x).concentration.detach()
    kl = model.elbo(x, y).kl.detach()
    np.testing.assert_allclose(kl.numpy(), _kl_vmf_uniform_scipy(kappa.numpy(), 5), rtol=1e-4, atol=1e-5)


def test_hvae_l_kl_matches_monte_carlo_against_the_labels_prior():
    model = _model("hvae-l", dim=5, prior_concentration=5.0)
    x, y = _batch(size=4)
    q = model.encode(x)
    kl = model.elbo(x, y).kl.detach().numpy()
    directions = F.normalize(_prior_weight(dim=5), dim=-1).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    for index in range(4):
        mu = q.loc[index].detach().numpy().astype(np.float64)
        mu /= np.linalg.norm(mu)
        kappa = float(q.concentration[index].detach())
        posterior = vonmises_fisher(mu, kappa)
        prior = vonmises_fisher(directions[int(y[index])], 5.0)
        samples = posterior.rvs(40_000, random_state=rng)
        log_ratio = posterior.logpdf(samples) - prior.logpdf(samples)
        tolerance = 5 * log_ratio.std() / math.sqrt(len(log_ratio)) + 1e-4
        assert abs(kl[index] - log_ratio.mean()) < tolerance


def test_log_likelihood_is_the_bernoulli_log_density():
    model = _model("hvae-c")
    x, y = _batch(size=3)
    z = F.normalize(torch.randn(2, 3, 5), dim=-1)
    onehot = F.one_hot(y, 10).float()
    value = model.log_likelihood(x.view(3, 784), z, onehot)
    assert value.shape == (2, 3)
    logits = model.decoder(torch.cat([z, onehot.expand(2, 3, 10)], dim=-1))
    probs = torch.sigmoid(logits.double())
    reference = (x.view(1, 3, 784) * probs.log() + (1 - x.view(1, 3, 784)) * (1 - probs).log()).sum(-1)
    torch.testing.assert_close(value.double(), reference, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("dim", [2, 3, 10])
def test_uniform_density_is_one_over_the_sphere_area(dim):
    model = _model("hvae", dim=dim)
    area = 2 * math.pi ** (dim / 2) / math.gamma(dim / 2)
    assert model.log_uniform_density == pytest.approx(-math.log(area), rel=1e-12)
    z = F.normalize(torch.randn(4, 2, dim), dim=-1)
    torch.testing.assert_close(model.log_prior(z, None), torch.full((4, 2), -math.log(area)))


def test_hvae_l_label_prior_and_mixture():
    model = _model("hvae-l", dim=3, prior_concentration=5.0)
    directions = F.normalize(_prior_weight(dim=3), dim=-1)
    z = F.normalize(torch.randn(2, 4, 3), dim=-1)
    y = torch.tensor([0, 3, 9, 3])
    log_norm = math.log(5.0) - math.log(2 * math.pi * (math.exp(5.0) - math.exp(-5.0)))  # vMF on S^2
    reference = log_norm + 5.0 * (z * directions[y]).sum(-1)
    torch.testing.assert_close(model.log_prior(z, y), reference, rtol=1e-5, atol=1e-5)
    all_classes = log_norm + 5.0 * torch.einsum("sbd,cd->sbc", z, directions)
    torch.testing.assert_close(
        model.log_marginal_prior(z), torch.logsumexp(all_classes, -1) - math.log(10), rtol=1e-5, atol=1e-5
    )


def test_hvae_l_holds_its_prior_as_a_submodule():
    model = _model("hvae-l", dim=3)
    assert isinstance(model.class_prior, VMFPrior)
    state = model.state_dict()
    assert {"class_prior.weight", "class_prior.mean_directions", "class_prior.concentration"} <= set(state)
    replacement = _prior_weight(dim=3, seed=1)
    other = _model("hvae-l", dim=3, seed=1, prior_concentration=20.0)
    other.class_prior = VMFPrior.from_weight(replacement, 20.0)
    model.load_state_dict(other.state_dict())  # the prior travels with the weights
    torch.testing.assert_close(model.class_prior.mean_directions, F.normalize(replacement, dim=-1))
    assert model.class_prior.concentration[0].item() == 20.0
    model.double()  # .to() moves the prior with the rest
    assert model.class_prior.mean_directions.dtype == torch.float64
    with torch.inference_mode():  # inference-mode tensors work too
        inference_model = _model("hvae-l", dim=3)
        x, y = _batch(4)
        assert torch.isfinite(inference_model.elbo(x, y).elbo).all()


def test_gradients_reach_every_parameter():
    model = _model("hvae-l")
    x, y = _batch()
    (-model.elbo(x, y).elbo.mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert not any(name.startswith("class_prior") for name, _ in model.named_parameters())  # buffers, not trained


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "vae"}, "kind"),
        ({"kind": "hvae", "latent_dim": 1}, "latent_dim"),
        ({"kind": "hvae-l"}, "class_prior"),
        ({"kind": "hvae", "class_prior": VMFPrior.from_weight(torch.randn(10, 5), 5.0)}, "only for it"),
        ({"kind": "hvae-l", "class_prior": VMFPrior.from_weight(torch.randn(10, 4), 5.0)}, "must cover"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    kwargs = {"latent_dim": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        HypersphericalVAE(**kwargs)


def test_bad_elbo_inputs():
    model = _model("hvae-c")
    x, y = _batch()
    with pytest.raises(ValueError, match="784"):
        model.elbo(torch.zeros(8, 10), y)
    with pytest.raises(ValueError, match="required"):
        model.elbo(x, None)
    with pytest.raises(ValueError, match="0..9"):
        model.elbo(x, torch.full((8,), 10))
    with pytest.raises(ValueError, match="integer"):
        model.elbo(x, y.float())
    with pytest.raises(ValueError, match="shape"):
        model.elbo(x, y[:3])
