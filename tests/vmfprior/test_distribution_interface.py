"""VonMisesFisher / HypersphericalUniform as torch.distributions: shapes, validation, expand, Independent."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import Independent, kl_divergence

from vmfprior import HypersphericalUniform, VonMisesFisher


def _unit(*shape, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def test_shapes_and_per_row_parameters():
    loc = _unit(4, 3, 6)
    concentration = torch.rand(4, 3, dtype=torch.float64) * 10 + 0.1
    q = VonMisesFisher(loc, concentration)
    assert q.batch_shape == (4, 3) and q.event_shape == (6,)
    assert q.rsample((2,)).shape == (2, 4, 3, 6)
    assert q.log_prob(q.sample()).shape == (4, 3)
    assert q.entropy().shape == (4, 3) and q.mean.shape == (4, 3, 6)
    # scalar concentration broadcasts over the batch
    assert VonMisesFisher(loc, 2.0).batch_shape == (4, 3)


def test_expand_and_independent():
    q = VonMisesFisher(_unit(6), torch.tensor(3.0, dtype=torch.float64))
    expanded = q.expand((5, 2))
    assert expanded.batch_shape == (5, 2) and expanded.sample().shape == (5, 2, 6)
    x = _unit(5, 2, 6, seed=1)
    torch.testing.assert_close(expanded.log_prob(x), q.log_prob(x))
    # a product over K latent spheres, e.g. a VAE with K independent vMF factors
    factors = Independent(VonMisesFisher(_unit(8, 4, 6), torch.full((8, 4), 5.0, dtype=torch.float64)), 1)
    assert factors.batch_shape == (8,) and factors.event_shape == (4, 6)
    assert factors.log_prob(factors.rsample()).shape == (8,)
    uniform = Independent(HypersphericalUniform(6, batch_shape=(8, 4), dtype=torch.float64), 1)
    kl = kl_divergence(factors, uniform)
    torch.testing.assert_close(kl, kl_divergence(factors.base_dist, uniform.base_dist).sum(-1))


def test_kl_broadcasts_batch_like_builtin_pairs():
    q = VonMisesFisher(_unit(7, 5), torch.linspace(0.5, 20, 7, dtype=torch.float64))
    assert kl_divergence(q, HypersphericalUniform(5, dtype=torch.float64)).shape == (7,)
    p = VonMisesFisher(_unit(5, seed=3), torch.tensor(2.0, dtype=torch.float64))
    assert kl_divergence(q, p).shape == (7,)
    with pytest.raises(ValueError, match="different dimensions"):
        kl_divergence(q, HypersphericalUniform(4))


@pytest.mark.parametrize(
    "loc, concentration, pattern",
    [
        (torch.tensor([1.0, 1.0, 0.0]), 1.0, "loc"),
        (torch.tensor([1.0, 0.0, 0.0]), 0.0, "concentration"),
        (torch.tensor([1.0, 0.0, 0.0]), -2.0, "concentration"),
        (torch.tensor([1.0, 0.0, 0.0]), math.inf, "concentration"),
        (torch.tensor([1.0, 0.0, 0.0]), math.nan, "concentration"),
    ],
)
def test_invalid_parameters_raise_value_error_naming_the_argument(loc, concentration, pattern):
    with pytest.raises(ValueError, match=pattern):
        VonMisesFisher(loc, torch.tensor(concentration), validate_args=True)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5,\)"):
        VonMisesFisher(_unit(4, 3), torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="trailing dimension"):
        VonMisesFisher(_unit(4, 3), torch.ones(4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="d >= 2"):
        VonMisesFisher(torch.ones(3, 1), torch.ones(3))


def test_log_prob_validates_support():
    q = VonMisesFisher(_unit(3), torch.tensor(1.0, dtype=torch.float64), validate_args=True)
    with pytest.raises(ValueError):
        q.log_prob(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))


def test_float32_samples_stay_float32_and_on_the_sphere():
    q = VonMisesFisher(_unit(16, 10, dtype=torch.float32), torch.full((16,), 30.0))
    z = q.rsample((100,))
    assert z.dtype == torch.float32
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-5
    assert q.log_prob(z).dtype == torch.float32 and q.entropy().dtype == torch.float32


def test_hyperspherical_uniform():
    u = HypersphericalUniform(3, batch_shape=(2,), dtype=torch.float64)
    z = u.sample((1000,))
    assert z.shape == (1000, 2, 3) and torch.allclose(z.norm(dim=-1), torch.ones(()).double())
    assert torch.allclose(u.log_prob(z), torch.full((1000, 2), -math.log(4 * math.pi), dtype=torch.float64))
    assert math.isclose(u.entropy()[0].item(), math.log(4 * math.pi))
    # the mean of uniform samples vanishes within Monte Carlo error (each coordinate has variance 1/3)
    assert z.mean(0).abs().max() < 5 * math.sqrt(1 / 3 / 1000)
    assert u.expand((4, 2)).sample().shape == (4, 2, 3)
    with pytest.raises(ValueError, match="dim"):
        HypersphericalUniform(1)


@pytest.mark.parametrize("d, kappa", [(2, 0.5), (3, 5.0), (10, 50.0), (128, 100.0), (1024, 1000.0)])
def test_log_prob_and_entropy_match_scipy(d, kappa):
    loc = _unit(d, seed=d)
    q = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64))
    reference = scipy.stats.vonmises_fisher(loc.numpy(), kappa)
    x = _unit(20, d, seed=1).numpy()
    x[:5] = reference.rvs(5, random_state=np.random.default_rng(0))
    np.testing.assert_allclose(q.log_prob(torch.from_numpy(x)).numpy(), reference.logpdf(x), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(q.entropy().item(), reference.entropy(), rtol=1e-10, atol=1e-9)
