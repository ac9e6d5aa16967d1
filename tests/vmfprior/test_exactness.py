"""Exactness at the edges: mean directions at and near +-e1, type promotion, KL signs, sampler resolution, heads."""

import math

import mpmath
import pytest
import torch
from torch.distributions import kl_divergence

from vmfprior import HypersphericalUniform, VMFPrior, VonMisesFisher, mean_resultant_length
from vmfprior.heads import make_head
from vmfprior.reflection import reflect_to_mean_direction
from vmfprior.wood_sampler import sample_radial

mpmath.mp.dps = 40

ANGLES = [0.0, 1e-12, 1e-8, 1e-6, 1e-3]


def _near_axis(angle, dim, sign, dtype):
    """A unit vector at ``angle`` from sign * e1 (formed in float64, then rounded to ``dtype``)."""
    loc = torch.zeros(dim, dtype=torch.float64)
    loc[0], loc[1] = sign * math.cos(angle), math.sin(angle)
    return loc.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("angle", ANGLES)
def test_samples_near_the_first_axis_are_on_the_sphere_with_the_drawn_component(dtype, sign, angle):
    # mu^T z must be the drawn w, and z - w mu must have norm sqrt(1 - w^2): both hold for any exact rotation
    # that maps e1 to mu, and together with |z| = 1 they are what the sampler promises.
    dim, num = 3, 2000
    loc = _near_axis(angle, dim, sign, dtype)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    w, tangent_length = sample_radial(torch.full((num,), 10.0, dtype=dtype), dim)
    normal = torch.randn(num, dim, dtype=dtype)
    normal[:, 0] = 0.0
    z = reflect_to_mean_direction(w, tangent_length, normal, normal.norm(dim=-1), loc.expand(num, dim))
    torch.random.set_rng_state(generator_state)
    tolerance = 8 * torch.finfo(dtype).eps
    z64, loc64 = z.double(), loc.double() / loc.double().norm()
    assert (z64.norm(dim=-1) - 1).abs().max() < tolerance
    assert ((z64 @ loc64) - w.double()).abs().max() < tolerance
    tangent = z64 - (z64 @ loc64)[:, None] * loc64
    assert (tangent.norm(dim=-1) - tangent_length.double()).abs().max() < tolerance


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("angle", [0.0, 1e-8])
def test_mean_resultant_length_near_the_axis_in_float32(sign, angle):
    # E[mu^T z] = A_d(kappa): the old Householder step gave 0.21 instead of 0.90 at angle 1e-8 (d = 3, kappa = 10).
    dim, kappa, num = 3, 10.0, 20_000
    torch.manual_seed(1)
    loc = _near_axis(angle, dim, sign, torch.float32)
    z = VonMisesFisher(loc, torch.tensor(kappa)).sample((num,))
    along = z.double() @ loc.double()
    expected = mean_resultant_length(dim, torch.tensor(kappa, dtype=torch.float64))
    assert abs(along.mean() - expected) < 5 * along.std() / math.sqrt(num)
    assert (z.double().norm(dim=-1) - 1).abs().max() < 1e-6


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-6, 0.3])
def test_reflection_loc_gradient_matches_finite_differences_at_and_near_the_axis(sign, angle):
    dim = 5
    generator = torch.Generator().manual_seed(3)
    w = torch.rand(4, generator=generator, dtype=torch.float64) * 1.8 - 0.9
    tangent_length = torch.sqrt(1 - w * w)
    normal = torch.randn(4, dim, generator=generator, dtype=torch.float64)
    normal[:, 0] = 0.0
    loc = _near_axis(angle, dim, sign, torch.float64).expand(4, dim).clone().requires_grad_(True)
    w.requires_grad_(), tangent_length.requires_grad_()
    function = lambda a, b, m: reflect_to_mean_direction(a, b, normal, normal.norm(dim=-1), m)  # noqa: E731
    assert torch.autograd.gradcheck(function, (w, tangent_length, loc), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradgradcheck(function, (w, tangent_length, loc), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("angle", [0.0, 1e-5])
def test_loc_gradient_near_the_axis_is_unbiased_with_bounded_spread(sign, angle):
    # d/dmu E[a^T z] = A_d(kappa) (I - mu mu^T) a along the sphere. At mu = e1 the old step gave 0 for every
    # sample; at 1e-5 from it, a spread of thousands. The spread must match the one at a generic direction.
    dim, kappa, num = 6, 8.0, 20_000
    a = torch.linspace(-1, 1, dim, dtype=torch.float64)

    def per_sample_gradients(loc, seed):
        torch.manual_seed(seed)
        rows = loc.expand(num, dim).clone().requires_grad_(True)
        (VonMisesFisher(rows, torch.tensor(kappa, dtype=torch.float64)).rsample() @ a).sum().backward()
        projector = torch.eye(dim, dtype=torch.float64) - torch.outer(loc, loc)
        return rows.grad @ projector, projector

    loc = _near_axis(angle, dim, sign, torch.float64)
    tangential, projector = per_sample_gradients(loc, 0)
    expected = mean_resultant_length(dim, torch.tensor(kappa, dtype=torch.float64)) * projector @ a
    standard_error = tangential.std(0) / math.sqrt(num)
    assert torch.all((tangential.mean(0) - expected).abs() < 5 * standard_error + 1e-12)
    generic = torch.nn.functional.normalize(torch.linspace(0.5, 2.0, dim, dtype=torch.float64), dim=0)
    spread_generic = per_sample_gradients(generic, 1)[0].norm(dim=-1).pow(2).mean().sqrt()
    spread = tangential.norm(dim=-1).pow(2).mean().sqrt()
    assert spread < 3 * spread_generic


@pytest.mark.parametrize("dim", [3, 9, 64])
def test_a_float64_value_on_a_float32_distribution_follows_type_promotion(dim):
    generator = torch.Generator().manual_seed(dim)
    loc = torch.nn.functional.normalize(torch.randn(4, dim, generator=generator), dim=-1)
    kappa = torch.rand(4, generator=generator) * 10 + 0.5
    value = torch.nn.functional.normalize(torch.randn(4, dim, generator=generator, dtype=torch.float64), dim=-1)
    got = VonMisesFisher(loc, kappa).log_prob(value)
    assert got.dtype == torch.float64
    reference = VonMisesFisher(loc.double(), kappa.double()).log_prob(value)
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-6)
    assert VonMisesFisher(loc.double(), kappa.double()).log_prob(value.float()).dtype == torch.float64
    mixed = kl_divergence(VonMisesFisher(loc, kappa), VonMisesFisher(value, kappa.double()))
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(
        mixed,
        kl_divergence(VonMisesFisher(loc.double(), kappa.double()), VonMisesFisher(value, kappa.double())),
        rtol=1e-5,
        atol=1e-6,
    )
    prior = VMFPrior.from_weight(torch.randn(3, dim, generator=generator), concentration=5.0)
    labels = torch.tensor([0, 1, 2, 0])
    prior64 = VMFPrior.from_weight(prior.weight.double(), concentration=5.0)
    torch.testing.assert_close(prior.log_prob(value, labels), prior64.log_prob(value, labels), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prior.mixture_log_prob(value), prior64.mixture_log_prob(value), rtol=1e-5, atol=1e-5)


def _reference_kl_to_uniform(dim, kappa):
    """kappa A_d - log(Gamma(d/2) (2 / kappa)^v I_v(kappa)), v = d/2 - 1, in mpmath."""
    kappa, v = mpmath.mpf(kappa), mpmath.mpf(dim) / 2 - 1
    mean = mpmath.besseli(v + 1, kappa) / mpmath.besseli(v, kappa)
    return float(kappa * mean - mpmath.log(mpmath.gamma(v + 1) * (2 / kappa) ** v * mpmath.besseli(v, kappa)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [2, 3, 5, 16, 128, 1024])
def test_every_kl_is_nonnegative_and_zero_for_equal_distributions(dtype, dim):
    kappa = torch.logspace(-4, 5, 28, dtype=torch.float64).to(dtype)
    generator = torch.Generator().manual_seed(dim)
    loc = torch.nn.functional.normalize(torch.randn(28, dim, generator=generator, dtype=torch.float64), dim=-1)
    p = VonMisesFisher(loc.to(dtype), kappa)
    same = VonMisesFisher(loc.to(dtype).clone(), kappa.clone())
    assert torch.equal(kl_divergence(p, same), torch.zeros_like(kappa))
    to_uniform = kl_divergence(p, HypersphericalUniform(dim, dtype=dtype))
    assert (to_uniform >= 0).all()
    for other_kappa, other_loc in [(kappa * (1 + 1e-6), loc), (kappa.flip(0), loc), (kappa, loc.roll(1, 0))]:
        q = VonMisesFisher(other_loc.to(dtype), other_kappa.to(dtype))
        assert (kl_divergence(p, q) >= 0).all()
    if dtype == torch.float64:
        for index in (0, 5, 14, 27):  # kappa = 1e-4, 4.6e-3, 2.2, 1e5
            reference = _reference_kl_to_uniform(dim, kappa[index].item())
            assert math.isclose(to_uniform[index].item(), reference, rel_tol=1e-6)


def test_kl_of_float32_directions_formed_in_float64_at_large_concentration():
    # The old KL formed mu_p . mu_q in float32: KL(p || p') was as low as -0.024 at kappa = 1e5 for rows equal
    # up to rounding. A rotation of a float32 direction by its own rounding must give a tiny, non-negative KL.
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(500, 10), dim=-1)
    kappa = torch.full((500,), 1e5)
    renormalized = torch.nn.functional.normalize(loc * 1.0000001, dim=-1)
    kl = kl_divergence(VonMisesFisher(loc, kappa), VonMisesFisher(renormalized, kappa))
    assert (kl >= 0).all() and kl.max() < 1e-3


def test_float64_samples_keep_float64_resolution():
    # 1 - w of a float64 sample must use float64's resolution: forcing the proposals to float32 would make every
    # value representable in float32.
    torch.manual_seed(0)
    for dim in (2, 5, 64):
        w, _ = sample_radial(torch.full((2000,), 30.0, dtype=torch.float64), dim)
        one_minus_w = 1 - w
        representable = one_minus_w.float().double() == one_minus_w
        assert representable.float().mean() < 0.05


@pytest.mark.parametrize("dim", [5, 10, 20])
def test_hadamard_rows_have_unit_norm_at_dimensions_that_are_not_powers_of_two(dim):
    num_classes = min(dim, 10)  # a Hadamard head needs num_classes <= in_features
    head = make_head("hadamard", dim, num_classes)
    torch.testing.assert_close(head.weight.norm(dim=-1), torch.ones(num_classes), rtol=0, atol=1e-6)
    # every entry of a row has the same magnitude 1 / sqrt(d) (the rows are +-1 patterns, scaled)
    torch.testing.assert_close(head.weight.abs(), torch.full((num_classes, dim), dim**-0.5), rtol=0, atol=1e-6)
