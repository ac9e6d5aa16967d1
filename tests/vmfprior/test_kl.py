"""Closed-form KLs against Monte Carlo (tolerance from the standard error), scipy, and known limits."""

import math

import pytest
import scipy.stats
import torch
from torch.distributions import kl_divergence

from vmfprior import HypersphericalUniform, VonMisesFisher
from vmfprior.distributions import log_sphere_area


def _unit(d, seed):
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm()


@pytest.mark.parametrize("d, kappa", [(3, 0.5), (10, 20.0), (64, 300.0)])
def test_kl_to_uniform_matches_monte_carlo_and_scipy(d, kappa):
    q = VonMisesFisher(_unit(d, 0), torch.tensor(kappa, dtype=torch.float64))
    p = HypersphericalUniform(d, dtype=torch.float64)
    kl = kl_divergence(q, p).item()
    torch.manual_seed(0)
    z = q.sample((20_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    assert abs(log_ratio.mean().item() - kl) < 5 * log_ratio.std().item() / math.sqrt(20_000)
    scipy_kl = -scipy.stats.vonmises_fisher(_unit(d, 0).numpy(), kappa).entropy() + log_sphere_area(d)
    assert math.isclose(kl, scipy_kl, rel_tol=1e-9)


@pytest.mark.parametrize("d, kappa_p, kappa_q, seed", [(3, 4.0, 1.0, 0), (10, 20.0, 50.0, 1), (32, 80.0, 5.0, 2)])
def test_kl_between_vmfs_matches_monte_carlo(d, kappa_p, kappa_q, seed):
    p = VonMisesFisher(_unit(d, seed), torch.tensor(kappa_p, dtype=torch.float64))
    q = VonMisesFisher(_unit(d, seed + 10), torch.tensor(kappa_q, dtype=torch.float64))
    kl = kl_divergence(p, q).item()
    torch.manual_seed(seed)
    z = p.sample((20_000,))
    log_ratio = p.log_prob(z) - q.log_prob(z)
    assert abs(log_ratio.mean().item() - kl) < 5 * log_ratio.std().item() / math.sqrt(20_000)


def test_kl_limits():
    p = VonMisesFisher(_unit(5, 0), torch.tensor(7.0, dtype=torch.float64))
    assert abs(kl_divergence(p, p).item()) < 1e-12
    # a vMF with vanishing concentration is the uniform distribution
    nearly_uniform = VonMisesFisher(_unit(5, 1), torch.tensor(1e-9, dtype=torch.float64))
    assert math.isclose(
        kl_divergence(p, nearly_uniform).item(), kl_divergence(p, HypersphericalUniform(5)).item(), rel_tol=1e-7
    )
    # small kappa: KL(vMF || U) = kappa^2 / (2 d) + O(kappa^4)
    small = VonMisesFisher(_unit(3, 0), torch.tensor(1e-4, dtype=torch.float64))
    assert math.isclose(kl_divergence(small, HypersphericalUniform(3)).item(), 1e-8 / 6, rel_tol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kls_are_finite_and_nonnegative_over_the_supported_range(dtype):
    dims = [2, 3, 10, 128, 1024]
    kappas = torch.logspace(-4, 5, 19, dtype=dtype)
    for d in dims:
        loc = torch.nn.functional.normalize(torch.randn(len(kappas), d, dtype=dtype), dim=-1)
        q = VonMisesFisher(loc, kappas)
        to_uniform = kl_divergence(q, HypersphericalUniform(d, dtype=dtype))
        to_vmf = kl_divergence(q, VonMisesFisher(loc.flip(0), kappas.flip(0)))
        for kl in (to_uniform, to_vmf):
            assert kl.dtype == dtype and torch.isfinite(kl).all() and (kl >= -1e-6).all(), (d, kl)
        entropy = q.entropy()
        assert torch.isfinite(entropy).all()


def test_kl_gradients_match_finite_differences():
    d = 7
    loc = _unit(d, 0)
    kappa = torch.tensor([0.3, 4.0, 60.0], dtype=torch.float64, requires_grad=True)
    other = torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda k: kl_divergence(VonMisesFisher(loc.expand(3, d), k), HypersphericalUniform(d)), (kappa,)
    )
    assert torch.autograd.gradcheck(
        lambda k: kl_divergence(VonMisesFisher(loc.expand(3, d), k), VonMisesFisher(_unit(d, 1).expand(3, d), other)),
        (kappa,),
    )
