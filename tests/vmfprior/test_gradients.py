"""rsample gradients: unbiased in kappa (implicit reparameterization) and in loc."""

import math

import mpmath
import pytest
import torch

from vmfprior import VonMisesFisher, mean_resultant_length
from vmfprior.wood_sampler import implicit_dw_dkappa

mpmath.mp.dps = 30


def _reference_dw_dkappa(w, kappa, d):
    """-dF/dkappa / f at w, by adaptive quadrature in mpmath (independent of the library's quadrature)."""
    w, kappa, a = mpmath.mpf(w), mpmath.mpf(kappa), mpmath.mpf(d - 3) / 2

    def g(t):  # f(t)/f(w)
        return mpmath.exp(kappa * (t - w)) * ((1 - t * t) / (1 - w * w)) ** a

    breaks = sorted(
        {-1, 0, w, 1} | {1 - mpmath.mpf(j) / kappa for j in (1, 3, 10, 30, 100) if 1 - mpmath.mpf(j) / kappa > -1}
    )
    mean = mpmath.quad(lambda t: t * g(t), breaks) / mpmath.quad(g, breaks)
    return float(-mpmath.quad(lambda t: (t - mean) * g(t), [p for p in breaks if p <= w]))


@pytest.mark.parametrize(
    "d, kappa, w",
    [
        (2, 1.0, 0.3),
        (2, 50.0, 0.999),
        (3, 2.0, -0.4),
        (3, 200.0, 0.995),
        (4, 0.5, -0.9),
        (10, 5.0, 0.1),
        (10, 50.0, 0.95),
        (128, 100.0, 0.2),
        (128, 100.0, 0.6),
        (1024, 1000.0, 0.6),
    ],
)
def test_implicit_derivative_matches_quadrature_reference(d, kappa, w):
    got = implicit_dw_dkappa(torch.tensor([w], dtype=torch.float64), torch.tensor([kappa], dtype=torch.float64), d)
    assert math.isclose(got.item(), _reference_dw_dkappa(w, kappa, d), rel_tol=1e-8)


@pytest.mark.parametrize("d, kappa", [(2, 1.0), (3, 2.0), (5, 0.05), (10, 5.0), (10, 50.0), (128, 100.0)])
def test_kappa_gradient_of_mean_is_unbiased(d, kappa):
    num = 20_000
    torch.manual_seed(d)
    loc = torch.zeros(d, dtype=torch.float64)
    loc[1] = 1.0
    concentration = torch.full((num,), kappa, dtype=torch.float64, requires_grad=True)
    z = VonMisesFisher(loc.expand(num, d), concentration).rsample()
    z[:, 1].sum().backward()  # per-sample derivative d(mu^T z_i)/dkappa_i lands in concentration.grad[i]
    per_sample = concentration.grad
    exact = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    mean_resultant_length(d, exact).backward()
    standard_error = per_sample.std() / math.sqrt(num)
    assert abs(per_sample.mean() - exact.grad) < 5 * standard_error


def test_loc_gradient_of_linear_function_is_unbiased():
    # E[a^T z] = A_d(kappa) a^T mu, so along the sphere d/dmu E[a^T z] = A_d(kappa) (I - mu mu^T) a.
    # (Off the sphere the sampler is not defined, so only the tangential part of the gradient is meaningful.)
    d, kappa, num = 6, 8.0, 20_000
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    rows = loc.expand(num, d).clone().requires_grad_(True)
    a = torch.linspace(-1, 1, d, dtype=torch.float64)
    (VonMisesFisher(rows, torch.tensor(kappa, dtype=torch.float64)).rsample() @ a).sum().backward()
    projector = torch.eye(d, dtype=torch.float64) - torch.outer(loc, loc)
    expected = mean_resultant_length(d, torch.tensor(kappa, dtype=torch.float64)) * projector @ a
    tangential = rows.grad @ projector
    standard_error = tangential.std(0) / math.sqrt(num)
    assert torch.all((tangential.mean(0) - expected).abs() < 5 * standard_error + 1e-12)


def test_gradients_flow_in_float32():
    loc = torch.nn.functional.normalize(torch.randn(8, 5), dim=-1).requires_grad_(True)
    concentration = torch.full((8,), 3.0, requires_grad=True)
    VonMisesFisher(loc, concentration).rsample((4,)).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(concentration.grad).all()
    assert concentration.grad.dtype == torch.float32
