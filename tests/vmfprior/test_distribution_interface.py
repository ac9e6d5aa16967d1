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


# ---- constraints: biject_to / transform_to --------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3, 7])
def test_stereographic_bijection_round_trip_and_jacobian_of_the_surface_measure(d):
    from torch.distributions import biject_to

    from vmfprior.constraints import StereographicTransform, unit_sphere

    transform = biject_to(unit_sphere)
    assert isinstance(transform, StereographicTransform) and transform.bijective
    x = torch.randn(5, d - 1, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    y = transform(x)
    assert y.shape == (5, d) and unit_sphere.check(y).all()
    torch.testing.assert_close(transform.inv(y), x, rtol=1e-12, atol=1e-12)
    z = _unit(5, d, seed=d + 1)
    torch.testing.assert_close(transform(transform.inv(z)), z, rtol=1e-12, atol=1e-12)
    assert transform.forward_shape((4, d - 1)) == (4, d) and transform.inverse_shape((4, d)) == (4, d - 1)
    # the surface-measure Jacobian is sqrt(det(J^T J)) of the d x (d - 1) derivative (independent of the closed form)
    for row in range(5):
        jacobian = torch.autograd.functional.jacobian(transform, x[row])
        gram = torch.linalg.det(jacobian.T @ jacobian)
        torch.testing.assert_close(transform.log_abs_det_jacobian(x[row], y[row]), 0.5 * torch.log(gram))


def test_transform_to_the_sphere_normalizes_and_the_concentration_is_positive():
    from torch.distributions import biject_to, transform_to
    from torch.distributions.transforms import ExpTransform

    from vmfprior.constraints import NormalizeTransform, positive_finite, unit_sphere

    normalize = transform_to(unit_sphere)
    assert isinstance(normalize, NormalizeTransform) and not normalize.bijective
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(normalize(x), torch.tensor([[0.6, 0.8], [0.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(normalize(normalize.inv(normalize(x))), normalize(x))
    for registry in (biject_to, transform_to):
        exp = registry(positive_finite)
        assert isinstance(exp, ExpTransform)
        kappa = torch.tensor([1e-6, 1.0, 1e5], dtype=torch.float64)
        torch.testing.assert_close(exp(exp.inv(kappa)), kappa)
        assert positive_finite.check(exp(torch.linspace(-30, 30, 7, dtype=torch.float64))).all()


# ---- loc is normalized once -----------------------------------------------------------------------------------


def test_a_nearly_unit_loc_is_normalized_once_for_every_method():
    loc = torch.tensor([1.0 + 9e-5, 0.0, 0.0], dtype=torch.float64)
    unit = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    kappa = torch.tensor(1e4, dtype=torch.float64)
    p, reference = VonMisesFisher(loc, kappa, validate_args=True), VonMisesFisher(unit, kappa)
    assert abs(kl_divergence(p, p).item()) < 1e-9  # was -1.80 with the unnormalized loc in the closed form
    assert abs(kl_divergence(p, reference).item()) < 1e-9
    torch.testing.assert_close(p.loc, unit, rtol=0, atol=1e-15)
    torch.testing.assert_close(p.mean, reference.mean)
    z = reference.sample((5,))
    torch.testing.assert_close(p.log_prob(z), reference.log_prob(z))
    torch.manual_seed(0)
    first = p.rsample((5,))
    torch.manual_seed(0)
    torch.testing.assert_close(first, reference.rsample((5,)))


def test_gradients_flow_through_the_normalization_to_the_callers_loc():
    raw = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # log_prob = log C + kappa z^T loc/|loc|; the gradient is kappa (z - (z^T u) u) / |loc| = kappa z here
    VonMisesFisher(raw, 2.0).log_prob(z).backward()
    torch.testing.assert_close(raw.grad, 2.0 * z)


# ---- deepcopy and pickle --------------------------------------------------------------------------------------


@pytest.mark.parametrize("concentration_shape", [(4,), ()], ids=["same-batch", "broadcast"])
def test_deepcopy_and_pickle_with_parameters_that_require_grad(concentration_shape):
    import copy
    import pickle

    loc = _unit(4, 5).requires_grad_()
    kappa = torch.full(concentration_shape, 3.0, dtype=torch.float64, requires_grad=True)
    q = VonMisesFisher(loc, kappa)
    z = q.sample().detach()
    for copied in (copy.deepcopy(q), pickle.loads(pickle.dumps(q)), copy.deepcopy(q.expand((2, 4)))):
        torch.testing.assert_close(copied.log_prob(z).detach(), q.log_prob(z).detach().expand(copied.batch_shape))
        copied.log_prob(z).sum().backward()
        assert loc.grad is None and kappa.grad is None  # the copy has its own leaves
        assert copied._given_loc.grad is not None and copied._given_concentration.grad is not None
    # torch's Normal copies with same-shaped parameters (a reference for the first case); with broadcasting it
    # stores a non-leaf and refuses, where VonMisesFisher copies
    normal = torch.distributions.Normal(
        torch.zeros(4, requires_grad=True), torch.ones(concentration_shape, requires_grad=True)
    )
    if concentration_shape:
        copy.deepcopy(normal)
    else:
        with pytest.raises(RuntimeError, match="leaves"):
            copy.deepcopy(normal)


# ---- the KLs from the uniform distribution --------------------------------------------------------------------


@pytest.mark.parametrize("d, kappa", [(2, 0.3), (3, 5.0), (10, 50.0), (64, 1e3)])
def test_kl_uniform_to_vmf_matches_mpmath_and_scipy_and_its_gradient_is_the_mean_length(d, kappa):
    import mpmath

    from vmfprior import mean_resultant_length
    from vmfprior.distributions import log_sphere_area

    concentration = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    q = VonMisesFisher(_unit(d, seed=d), concentration)
    kl = kl_divergence(HypersphericalUniform(d, dtype=torch.float64), q)
    # -log|S| - log C_d(kappa), with log C_d from mpmath's Bessel function
    v = mpmath.mpf(d) / 2 - 1
    log_c = v * mpmath.log(kappa) - mpmath.mpf(d) / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, kappa))
    assert kl.item() == pytest.approx(float(-log_sphere_area(d) - log_c), rel=1e-10, abs=1e-12)
    # scipy: log C_d is the log-density at a point orthogonal to the mean direction
    orthogonal = torch.linalg.qr(torch.stack([q.loc.detach(), _unit(d, seed=99)], dim=1))[0][:, 1]
    scipy_log_c = scipy.stats.vonmises_fisher(q.loc.detach().numpy(), kappa).logpdf(orthogonal.numpy())
    assert kl.item() == pytest.approx(-log_sphere_area(d) - scipy_log_c, rel=1e-8, abs=1e-10)
    # d/dkappa (-log C_d) = A_d(kappa): an independent check of the gradient
    kl.backward()
    expected = mean_resultant_length(d, torch.tensor(kappa, dtype=torch.float64)).item()
    assert concentration.grad.item() == pytest.approx(expected, rel=1e-9)


def test_kl_uniform_to_uniform_and_shapes():
    u = HypersphericalUniform(4, batch_shape=(3,), dtype=torch.float64)
    assert torch.equal(
        kl_divergence(u, HypersphericalUniform(4, dtype=torch.float64)), torch.zeros(3, dtype=torch.float64)
    )
    q = VonMisesFisher(_unit(2, 3, 4), torch.tensor([[1.0], [2.0]], dtype=torch.float64).expand(2, 3))
    assert kl_divergence(u, q).shape == (2, 3) and kl_divergence(HypersphericalUniform(4), q).dtype == torch.float64
    with pytest.raises(ValueError, match="different dimensions"):
        kl_divergence(u, HypersphericalUniform(5))
    with pytest.raises(ValueError, match="different dimensions"):
        kl_divergence(HypersphericalUniform(5), q)


# ---- shape and type conventions -------------------------------------------------------------------------------


def test_errors_follow_torch_where_nothing_is_lost():
    from vmfprior.distributions import ParameterTypeError, ShapeMismatchError

    with pytest.raises(ShapeMismatchError, match=r"\(4, 3\).*\(5,\)") as caught:
        VonMisesFisher(_unit(4, 3), torch.ones(5, dtype=torch.float64))
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, ValueError)  # torch's and ours
    for bad_loc in ([1.0, 0.0, 0.0], torch.tensor([1, 0, 0])):
        with pytest.raises(ParameterTypeError, match="loc") as caught:
            VonMisesFisher(bad_loc, 1.0)
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="squeeze its trailing dimension"):  # s-vae's (B, 1): (B, B) by broadcasting
        VonMisesFisher(_unit(4, 3), torch.ones(4, 1, dtype=torch.float64))


def test_validation_messages_name_the_worst_entry_not_the_tensor():
    loc = _unit(1000, 3)
    loc[417] *= 1.5
    loc[3] *= 1.001
    with pytest.raises(ValueError) as caught:
        VonMisesFisher(loc, 1.0, validate_args=True)
    message = str(caught.value)
    assert "index (417,)" in message and "1.5" in message and "2 of 1000" in message
    assert "tensor(" not in message and len(message) < 300
    q = VonMisesFisher(_unit(2, 3), 1.0, validate_args=True)
    with pytest.raises(ValueError, match=r"value .*index \(1, 0\)"):
        q.log_prob(torch.stack([_unit(2, 3), 3.0 * _unit(2, 3, seed=2)]))
    with pytest.raises(ValueError, match=r"index \(2,\), is -1.0"):
        VonMisesFisher(_unit(3, 3), torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64), validate_args=True)


def test_select_shares_the_bessel_terms_and_equals_a_direct_construction(monkeypatch):
    import vmfprior.distributions as distributions

    calls = []
    original = distributions.bessel_values
    monkeypatch.setattr(distributions, "bessel_values", lambda v, x: calls.append(tuple(x.shape)) or original(v, x))
    every = VonMisesFisher(_unit(4, 6), torch.tensor([0.5, 3.0, 20.0, 300.0], dtype=torch.float64))
    index = torch.tensor([[3, 0, 0], [1, 1, 2]])
    selected = every.select(index)
    direct = VonMisesFisher(every.loc[index], every.concentration[index])
    assert selected.batch_shape == (2, 3)
    z = direct.sample()
    torch.testing.assert_close(selected.log_prob(z), direct.log_prob(z))
    torch.testing.assert_close(selected.entropy(), direct.entropy())
    torch.testing.assert_close(
        kl_divergence(selected, direct), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert calls.count((4,)) == 1  # one evaluation for the four classes, none for the six selected rows
    with pytest.raises(ValueError, match="integer"):
        every.select(torch.tensor([0.0]))


def test_version_is_the_one_in_pyproject():
    from pathlib import Path

    import tomllib

    import vmfprior

    pyproject = tomllib.loads((Path(vmfprior.__file__).parent.parent / "pyproject.toml").read_text())
    assert vmfprior.__version__ == pyproject["project"]["version"]
