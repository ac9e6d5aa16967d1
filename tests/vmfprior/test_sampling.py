"""Exactness of VonMisesFisher samples: distribution of mu^T z, the tangent part, and the mean."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from vmfprior import VonMisesFisher, mean_resultant_length
from vmfprior.wood_sampler import _symmetric_beta_centered

NUM = 40_000
P_FLOOR = 1e-3  # with fixed seeds these tests are deterministic; the floor guards against a wrong sampler


def _unit(d, seed):
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm()


def _marginal_cdf(d, kappa):
    """CDF of w = mu^T z from its density ∝ exp(kappa w) (1 - w^2)^((d-3)/2), by trapezoidal quadrature.

    The grid is concentrated where the mass is (a window of +-12 standard deviations around the mode).
    """
    a = (d - 3) / 2
    mode = kappa / (a + np.sqrt(a * a + kappa * kappa)) if a > 0 else 1.0
    spread = 1.0 / np.sqrt(kappa + a * 4) if a > 0 else 12.0 / kappa
    lower, upper = max(-1.0, mode - 12 * spread), min(1.0, mode + 12 * spread)
    grid = np.linspace(lower, upper, 400_001)
    log_density = kappa * grid + a * np.log(np.clip((1 - grid) * (1 + grid), 1e-300, None))
    density = np.exp(log_density - log_density.max())
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    return lambda w: np.interp(w, grid, cumulative / cumulative[-1])


@pytest.mark.parametrize(
    "d, kappa, dtype",
    [
        (2, 1e-4, torch.float64),
        (2, 300.0, torch.float32),
        (3, 1e-4, torch.float64),
        (3, 7.0, torch.float32),
        (5, 0.01, torch.float64),
        (10, 50.0, torch.float32),
        (10, 50.0, torch.float64),
        (20, 1e5, torch.float32),
        (128, 100.0, torch.float64),
    ],
)
def test_component_along_mean_matches_scipy(d, kappa, dtype):
    torch.manual_seed(d)
    loc = _unit(d, seed=1)
    z = VonMisesFisher(loc.to(dtype), torch.tensor(kappa, dtype=dtype)).sample((NUM,))
    w = (z.double() @ loc).numpy()
    reference = (
        scipy.stats.vonmises_fisher(loc.numpy(), kappa).rvs(NUM, random_state=np.random.default_rng(d)) @ loc.numpy()
    )
    assert scipy.stats.ks_2samp(w, reference).pvalue > P_FLOOR
    # mean of w against the exact A_d(kappa), within 5 standard errors
    expected = mean_resultant_length(d, torch.tensor(kappa, dtype=torch.float64)).item()
    assert abs(w.mean() - expected) < 5 * w.std() / math.sqrt(NUM) + 1e-7


@pytest.mark.parametrize("d, kappa", [(64, 1e5), (1024, 1000.0), (1024, 1e-4)])
def test_component_along_mean_matches_quadrature_cdf_in_high_dimension(d, kappa):
    # Where d is not small against kappa an approximated envelope (as in the s-vae reference) is visibly off.
    torch.manual_seed(0)
    loc = _unit(d, seed=0)
    w = (VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).sample((NUM,)) @ loc).numpy()
    assert scipy.stats.kstest(w, _marginal_cdf(d, kappa)).pvalue > P_FLOOR


@pytest.mark.parametrize("d", [3, 6])  # d = 3 draws its tangent direction from an angle, others from Gaussians
def test_tangent_part_is_isotropic(d):
    kappa = 4.0
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


@pytest.mark.parametrize("shape", [0.5, 1.0, 4.5, 63.5, 511.5])
def test_symmetric_beta_draws_are_beta_distributed(shape):
    torch.manual_seed(0)
    draws = (1.0 + _symmetric_beta_centered(shape, torch.rand(2, NUM, dtype=torch.float64))) / 2.0
    assert draws.dtype == torch.float64
    assert scipy.stats.kstest(draws.numpy(), scipy.stats.beta(shape, shape).cdf).pvalue > P_FLOOR


@pytest.mark.parametrize("d, kappa", [(5, 2.0), (10, 50.0)])
def test_small_batches_take_several_proposals_per_entry_and_stay_exact(d, kappa):
    # Below SMALL_BATCH entries the sampler draws several proposals per entry and keeps the first accepted.
    torch.manual_seed(7)
    loc = _unit(d, seed=3)
    q = VonMisesFisher(loc.expand(100, d), torch.full((100,), kappa, dtype=torch.float64))
    w = torch.cat([q.sample() @ loc for _ in range(NUM // 100)]).numpy()
    reference = (
        scipy.stats.vonmises_fisher(loc.numpy(), kappa).rvs(NUM, random_state=np.random.default_rng(d)) @ loc.numpy()
    )
    assert scipy.stats.ks_2samp(w, reference).pvalue > P_FLOOR
