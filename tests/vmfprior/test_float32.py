"""float32 gradients stay within a few float32 ulps of the float64 ones (and of mpmath where it applies).

float32 distributions take the cheap route: the implicit gradient's quadrature runs in float32 with fewer nodes
(``wood_sampler.QUADRATURE``). The tolerances are a few times the measured worst cases: about 7e-6 relative
for the implicit derivative (d <= 96; above, float32 distributions use the float64 quadrature), 2e-7 for the KL's
gradient, 1e-6 for rsample's loc gradient and 8e-5 for its kappa gradient, whose float32 chain rule loses digits
where w is near 1 (see the test).
"""

import math

import mpmath
import pytest
import torch
from torch.distributions import kl_divergence

import vmfprior.distributions as distributions
import vmfprior.wood_sampler as wood_sampler
from vmfprior import HypersphericalUniform, VonMisesFisher, mean_resultant_length
from vmfprior.wood_sampler import _sample_one_minus_w_wood, implicit_dw_dkappa

from .test_gradients import _reference_dw_dkappa

mpmath.mp.dps = 30
FLOAT32_GRADIENT_RTOL = 2e-5
FLOAT32_KAPPA_CHAIN_RTOL = 3e-4


@pytest.mark.parametrize(
    "d, kappa, w",
    [
        (2, 1.0, 0.3),
        (2, 50.0, 0.999),
        (4, 0.5, -0.9),
        (5, 3.0, 0.7),
        (10, 5.0, 0.1),
        (10, 50.0, 0.95),
        (64, 100.0, 0.6),
        (64, 3000.0, 0.9895),
    ],
)
def test_float32_implicit_derivative_matches_mpmath(d, kappa, w):
    got = implicit_dw_dkappa(
        torch.tensor([w], dtype=torch.float64), torch.tensor([kappa], dtype=torch.float64), d, dtype=torch.float32
    )
    assert got.dtype == torch.float32
    assert math.isclose(got.item(), _reference_dw_dkappa(w, kappa, d), rel_tol=FLOAT32_GRADIENT_RTOL)


@pytest.mark.parametrize("d", [2, 4, 5, 10, 64, wood_sampler.FLOAT32_QUADRATURE_MAX_DIM, 128])
@pytest.mark.parametrize("kappa", [1.5, 50.0, 3000.0])
def test_float32_implicit_derivative_matches_float64_on_samples(d, kappa):
    torch.manual_seed(d)
    concentration = torch.full((2000,), kappa, dtype=torch.float64)
    w = 1.0 - _sample_one_minus_w_wood(concentration, d, torch.float64)
    mean = mean_resultant_length(d, concentration)
    reference = implicit_dw_dkappa(w, concentration, d, mean)  # float64: checked against mpmath in test_gradients
    dtype = wood_sampler._quadrature_dtype(torch.float32, torch.float64, d)  # what a float32 rsample uses
    got = implicit_dw_dkappa(w, concentration, d, mean, dtype=dtype).double()
    assert torch.allclose(got, reference, rtol=FLOAT32_GRADIENT_RTOL, atol=0)


@pytest.mark.parametrize("d", [3, 5, 10, 64])
def test_float32_kl_gradient_matches_float64(d):
    kappa = torch.exp(torch.linspace(math.log(1e-2), math.log(1e4), 100, dtype=torch.float64))
    loc = torch.nn.functional.normalize(
        torch.randn(100, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64), dim=-1
    )
    gradients = []
    for dtype in (torch.float32, torch.float64):
        leaf = kappa.to(dtype).requires_grad_()
        kl = kl_divergence(VonMisesFisher(loc.to(dtype), leaf), HypersphericalUniform(d, dtype=dtype))
        gradients.append(torch.autograd.grad(kl.sum(), leaf)[0].double())
    # d KL / d kappa = kappa (1 - A^2) - (d - 1) A, from the float64 Bessel terms in both cases
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("d", [4, 5, 10, 64])
def test_float32_rsample_gradients_match_float64_for_the_same_draws(d, monkeypatch):
    num = 500
    generator = torch.Generator().manual_seed(d)
    kappa = torch.rand(num, generator=generator, dtype=torch.float64) * 50.0 + 1.0
    loc = torch.nn.functional.normalize(torch.randn(num, d, generator=generator, dtype=torch.float64), dim=-1)
    upstream = torch.randn(num, d, generator=generator, dtype=torch.float64)
    one_minus_w = _sample_one_minus_w_wood(kappa, d, torch.float64)
    normal = torch.randn(num, d, generator=generator, dtype=torch.float64)
    normal[:, 0] = 0.0
    # the same draws for both dtypes: only the arithmetic differs
    monkeypatch.setattr(wood_sampler, "_sample_one_minus_w_wood", lambda k, dim, dtype: one_minus_w.clone())
    monkeypatch.setattr(
        distributions,
        "_tangent_directions",
        lambda shape, dtype, device: (normal.to(dtype), normal.norm(dim=-1).to(dtype)),
    )
    gradients = []
    for dtype in (torch.float32, torch.float64):
        leaves = [loc.to(dtype).requires_grad_(), kappa.to(dtype).requires_grad_()]
        z = VonMisesFisher(*leaves).rsample()
        gradients.append([g.double() for g in torch.autograd.grad((z * upstream.to(dtype)).sum(), leaves)])
    (loc_32, kappa_32), (loc_64, kappa_64) = gradients
    # loc: relative to each row's largest entry
    assert ((loc_32 - loc_64).abs() <= FLOAT32_GRADIENT_RTOL * loc_64.abs().amax(dim=1, keepdim=True)).all()
    # kappa: (dL/dw + dL/dsqrt(1 - w^2) * (-w / sqrt(1 - w^2))) dw/dkappa cancels where w is near 1, so the
    # float32 reflection gradients lose more digits there (measured up to 8e-5 relative, 6e-5 before the
    # float32 quadrature existed): the quadrature is not the limit
    assert torch.allclose(kappa_32, kappa_64, rtol=FLOAT32_KAPPA_CHAIN_RTOL, atol=0)
