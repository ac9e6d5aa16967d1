"""Second (and higher) derivatives: log_prob, entropy, KLs and rsample against mpmath and finite differences."""

import math

import mpmath
import pytest
import torch
from torch.distributions import kl_divergence

from vmfprior import HypersphericalUniform, VonMisesFisher, log_bessel_iv

mpmath.mp.dps = 40


def _mean_length(dim, kappa):
    v = mpmath.mpf(dim) / 2 - 1
    return mpmath.besseli(v + 1, kappa) / mpmath.besseli(v, kappa)


def _second(function, x):
    """d^2/dx^2 function(x) by autograd, in float64."""
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (first,) = torch.autograd.grad(function(x), x, create_graph=True)
    (second,) = torch.autograd.grad(first, x)
    return second.item()


@pytest.mark.parametrize("dim, kappa", [(5, 3.0), (2, 0.01), (3, 40.0), (10, 0.5), (128, 200.0)])
def test_second_derivative_in_kappa_of_log_prob_and_entropy(dim, kappa):
    # d^2/dkappa^2 log p(mu) = -A'(kappa) (the old backward dropped a Bessel term: -0.1667 for -0.1091 at d = 5,
    # kappa = 3); the entropy is -log C - kappa A, whose second derivative is A' - (kappa A')' (mpmath's diff).
    loc = torch.zeros(dim, dtype=torch.float64)
    loc[0] = 1.0
    log_prob = _second(lambda k: VonMisesFisher(loc, k).log_prob(loc), kappa)
    reference = -mpmath.diff(lambda k: _mean_length(dim, k), mpmath.mpf(kappa))
    assert math.isclose(log_prob, float(reference), rel_tol=1e-7)

    def entropy(k):
        v = mpmath.mpf(dim) / 2 - 1
        log_normalizer = v * mpmath.log(k) - dim / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k))
        return -log_normalizer - k * _mean_length(dim, k)

    got = _second(lambda k: VonMisesFisher(loc, k).entropy(), kappa)
    assert math.isclose(got, float(mpmath.diff(entropy, mpmath.mpf(kappa), 2)), rel_tol=1e-6, abs_tol=1e-12)
    to_uniform = _second(
        lambda k: kl_divergence(VonMisesFisher(loc, k), HypersphericalUniform(dim, dtype=k.dtype)), kappa
    )
    assert math.isclose(to_uniform, -got, rel_tol=1e-9, abs_tol=1e-14)


@pytest.mark.parametrize("v, x", [(0.0, 0.5), (1.5, 3.0), (20.0, 7.0), (0.5, 500.0)])
def test_third_derivative_of_log_bessel_matches_mpmath(v, x):
    point = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    derivative = log_bessel_iv(v, point)
    values = []
    for _ in range(3):
        (derivative,) = torch.autograd.grad(derivative, point, create_graph=True)
        values.append(derivative.item())
    for order, got in enumerate(values, start=1):
        reference = mpmath.diff(lambda t: mpmath.log(mpmath.besseli(v, t)), mpmath.mpf(x), order)
        assert math.isclose(got, float(reference), rel_tol=1e-7, abs_tol=1e-12)


def _flat_gradient(function, parameters):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(function(*parameters), parameters, create_graph=True)])


def _hessian_against_finite_differences(function, parameters, step=1e-6):
    """The Hessian by double backward, and by central differences of the exact first derivatives."""
    parameters = [p.detach().clone().requires_grad_(True) for p in parameters]
    gradient = _flat_gradient(function, parameters)
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(gradient[i], parameters, retain_graph=True)])
        for i in range(gradient.numel())
    ]
    hessian = torch.stack(rows)
    flat = torch.cat([p.detach().reshape(-1) for p in parameters])
    sizes = [p.numel() for p in parameters]
    columns = []
    for j in range(flat.numel()):
        shifted = []
        for sign in (1.0, -1.0):
            moved = flat.clone()
            moved[j] += sign * step
            pieces = [piece.reshape(p.shape).requires_grad_(True) for piece, p in zip(moved.split(sizes), parameters)]
            shifted.append(_flat_gradient(function, pieces).detach())
        columns.append((shifted[0] - shifted[1]) / (2 * step))
    return hessian, torch.stack(columns, dim=1)


@pytest.mark.parametrize("dim", [3, 12])
def test_hessian_of_the_vmf_kl_in_both_parameters(dim):
    generator = torch.Generator().manual_seed(dim)
    loc_p, loc_q = torch.randn(2, dim, generator=generator, dtype=torch.float64)
    kappa = torch.tensor([2.5, 7.0], dtype=torch.float64)

    def kl(loc_p, loc_q, kappa):
        normalize = torch.nn.functional.normalize
        p = VonMisesFisher(normalize(loc_p, dim=-1), kappa[0])
        q = VonMisesFisher(normalize(loc_q, dim=-1), kappa[1])
        return kl_divergence(p, q)

    hessian, finite = _hessian_against_finite_differences(kl, [loc_p, loc_q, kappa])
    torch.testing.assert_close(hessian, finite, rtol=1e-5, atol=1e-6)


def test_hessian_of_a_sample_in_loc_with_fixed_randomness():
    # With the random draws fixed, z is a deterministic smooth function of loc (away from the switch at mu_1 = 0).
    dim = 6
    target = torch.linspace(-1, 1, dim, dtype=torch.float64)

    def loss(raw):
        torch.manual_seed(5)
        z = VonMisesFisher(torch.nn.functional.normalize(raw, dim=-1), torch.tensor(4.0, dtype=torch.float64)).rsample(
            (3,)
        )
        return ((z - target) ** 2).sum()

    for raw in (
        torch.tensor([1.0, 1e-9, 0, 0, 0, 0], dtype=torch.float64),
        torch.tensor([0.3, -0.2, 0.5, 0.1, 0.7, -0.4], dtype=torch.float64),
    ):
        hessian, finite = _hessian_against_finite_differences(loss, [raw])
        torch.testing.assert_close(hessian, finite, rtol=1e-5, atol=1e-6)
        assert hessian.abs().max() > 1e-3  # not a graph-less zero


def test_rsample_refuses_a_second_backward_in_the_concentration():
    loc = torch.nn.functional.normalize(torch.randn(4, 5, dtype=torch.float64), dim=-1)
    kappa = torch.full((4,), 3.0, dtype=torch.float64, requires_grad=True)
    z = VonMisesFisher(loc, kappa).rsample()
    (gradient,) = torch.autograd.grad(z[:, 0].sum(), kappa, create_graph=True)
    assert gradient.requires_grad
    with pytest.raises(RuntimeError, match="second derivatives of samples in the concentration"):
        gradient.sum().backward()


def test_first_order_kappa_gradient_with_create_graph_matches_without():
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(4, 5, dtype=torch.float64), dim=-1)
    kappa = torch.full((4,), 3.0, dtype=torch.float64, requires_grad=True)
    gradients = []
    for create_graph in (False, True):
        torch.manual_seed(1)
        z = VonMisesFisher(loc, kappa).rsample()
        gradients.append(torch.autograd.grad(z[:, 0].sum(), kappa, create_graph=create_graph)[0].detach())
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=0)
