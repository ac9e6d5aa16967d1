"""Exactness of VonMisesFisher samples: distribution of mu^T z, the tangent part, and the mean."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from vmfprior import VonMisesFisher, mean_resultant_length
from vmfprior.wood_sampler import _gamma_proposals

NUM = 40_000
P_FLOOR = 1e-3  # with fixed seeds these tests are deterministic; the floor guards against a wrong sampler


def _unit(d, seed):
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm()


@pytest.mark.parametrize(
    "d, kappa",
    [(2, 1e-4), (2, 300.0), (3, 1e-4), (3, 7.0), (5, 0.01), (10, 50.0), (20, 1e5), (128, 100.0), (1024, 1000.0)],
)
def test_component_along_mean_matches_scipy(d, kappa):
    torch.manual_seed(d)
    loc = _unit(d, seed=1)
    z = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).sample((NUM,))
    w = (z @ loc).numpy()
    reference = scipy.stats.vonmises_fisher(loc.numpy(), kappa).rvs(NUM, random_state=np.random.default_rng(d)) @ loc.numpy()
    assert scipy.stats.ks_2samp(w, reference).pvalue > P_FLOOR
    # mean of w against the exact A_d(kappa), within 5 standard errors
    expected = mean_resultant_length(d, torch.tensor(kappa, dtype=torch.float64)).item()
    assert abs(w.mean() - expected) < 5 * w.std() / math.sqrt(NUM) + 1e-12


def test_large_kappa_high_dimension_is_exact():
    # Where d is not small against kappa an approximated envelope (as in the s-vae reference) is visibly off.
    d, kappa = 1024, 1000.0
    torch.manual_seed(0)
    z = VonMisesFisher(_unit(d, 0), torch.tensor(kappa, dtype=torch.float64)).sample((NUM,))
    w = z @ _unit(d, 0)
    expected = mean_resultant_length(d, torch.tensor(kappa, dtype=torch.float64))
    assert abs(w.mean() - expected) < 5 * w.std() / math.sqrt(NUM)


def test_tangent_part_is_isotropic():
    d, kappa = 6, 4.0
    torch.manual_seed(1)
    loc = _unit(d, seed=2)
    z = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).sample((NUM,))
    w = z @ loc
    tangent = z - w[:, None] * loc
    # E[t t^T] = (1 - E[w^2]) / (d - 1) (I - mu mu^T)
    second = tangent.T @ tangent / NUM
    expected = (1 - (w * w).mean()) / (d - 1) * (torch.eye(d, dtype=torch.float64) - torch.outer(loc, loc))
    standard_error = (tangent[:, :, None] * tangent[:, None, :]).std(0) / math.sqrt(NUM)
    assert torch.all((second - expected).abs() < 5 * standard_error + 1e-12)


def test_samples_with_per_row_parameters_follow_their_own_row():
    torch.manual_seed(3)
    locs = torch.stack([_unit(5, 0), _unit(5, 1)])
    kappas = torch.tensor([1.0, 200.0], dtype=torch.float64)
    z = VonMisesFisher(locs, kappas).sample((NUM,))  # (NUM, 2, 5)
    w = (z * locs).sum(-1)
    expected = mean_resultant_length(5, kappas)
    assert torch.all((w.mean(0) - expected).abs() < 5 * w.std(0) / math.sqrt(NUM))


def test_loc_equal_to_first_basis_vector():
    loc = torch.zeros(4, dtype=torch.float64)
    loc[0] = 1.0
    z = VonMisesFisher(loc, torch.tensor(10.0, dtype=torch.float64)).sample((1000,))
    assert torch.isfinite(z).all() and torch.allclose(z.norm(dim=-1), torch.ones(1000, dtype=torch.float64))


@pytest.mark.parametrize("shape", [0.5, 4.5, 63.5])
def test_gamma_proposals_are_gamma_distributed(shape):
    torch.manual_seed(0)
    draws, accepted = _gamma_proposals(shape, (NUM,), torch.zeros(1, dtype=torch.float64))
    assert accepted.float().mean() > 0.9
    assert scipy.stats.kstest(draws[accepted].numpy(), scipy.stats.gamma(shape).cdf).pvalue > P_FLOOR
