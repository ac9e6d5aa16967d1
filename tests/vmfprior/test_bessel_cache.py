"""The Bessel terms are evaluated at most once per distribution (and per VMFPrior) and reused."""

import math

import scipy.stats
import torch
from torch.distributions import kl_divergence

from vmfprior import HypersphericalUniform, VMFPrior, VonMisesFisher, bessel
from vmfprior.bessel import bessel_values, log_bessel_iv_and_ratio
from vmfprior.wood_sampler import sample_radial


def _counting(monkeypatch, module):
    """Count calls of bessel_values made through ``module``."""
    calls = []
    original = module.bessel_values

    def counted(v, x):
        calls.append(tuple(x.shape))
        return original(v, x)

    monkeypatch.setattr(module, "bessel_values", counted)
    return calls


def _distribution(requires_grad=True, dim=5):
    generator = torch.Generator().manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(8, dim, generator=generator, dtype=torch.float64), dim=-1)
    kappa = (torch.rand(8, generator=generator, dtype=torch.float64) * 20 + 1).requires_grad_(requires_grad)
    return loc, kappa


def test_sampling_kl_and_log_prob_share_one_evaluation(monkeypatch):
    import vmfprior.distributions as distributions

    calls = _counting(monkeypatch, distributions)
    loc, kappa = _distribution()
    q = VonMisesFisher(loc, kappa)
    z = q.rsample()
    loss = q.log_prob(z).sum() + kl_divergence(q, HypersphericalUniform(5, (8,), dtype=torch.float64)).sum()
    loss = loss + q.entropy().sum() + q.mean.sum()
    loss.backward()
    assert len(calls) == 1


def test_values_passed_in_give_the_same_terms_and_gradients():
    x = torch.tensor([0.01, 0.7, 12.0, 900.0], dtype=torch.float64, requires_grad=True)
    direct = log_bessel_iv_and_ratio(2.5, x)
    reused = log_bessel_iv_and_ratio(2.5, x, values=bessel_values(2.5, x))
    for a, b in zip(direct, reused):
        assert torch.equal(a, b)
    grad_direct = torch.autograd.grad(sum(t.sum() for t in direct), x)[0]
    grad_reused = torch.autograd.grad(sum(t.sum() for t in reused), x)[0]
    assert torch.equal(grad_direct, grad_reused)
    assert torch.autograd.gradcheck(lambda t: log_bessel_iv_and_ratio(2.5, t, values=bessel_values(2.5, t)), (x,))


def test_repeated_backward_through_one_distribution_works():
    loc, kappa = _distribution()
    q = VonMisesFisher(loc, kappa)
    points = q.sample((3,))
    first = torch.autograd.grad(q.log_prob(points).sum(), kappa)[0]
    second = torch.autograd.grad(q.log_prob(points).sum(), kappa)[0]
    assert torch.equal(first, second)


def test_a_distribution_built_after_an_in_place_change_sees_the_new_concentration():
    # A distribution keeps its Bessel terms from first use (like torch's lazy properties); a training loop
    # builds a new one each step, which must see the parameter as the optimizer left it.
    loc, kappa = _distribution(requires_grad=False)
    parameter = torch.nn.Parameter(kappa.clone())
    before = VonMisesFisher(loc, parameter).entropy()
    with torch.no_grad():
        parameter.mul_(3.0)  # what an optimizer step does
    after = VonMisesFisher(loc, parameter).entropy()
    expected = torch.tensor(
        [scipy.stats.vonmises_fisher(row.numpy(), k).entropy() for row, k in zip(loc, parameter.detach().tolist())],
        dtype=torch.float64,
    )
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, rtol=1e-9, atol=0)


def test_inference_mode_tensors_are_not_cached_but_work():
    with torch.inference_mode():
        loc, kappa = _distribution(requires_grad=False)
        q = VonMisesFisher(loc, kappa)
        assert torch.isfinite(q.entropy()).all() and torch.isfinite(q.log_prob(q.sample())).all()


def test_prior_evaluates_its_classes_once_per_call_and_follows_changes(monkeypatch):
    import vmfprior.distributions as distributions  # the prior's selections evaluate through the distribution

    calls = _counting(monkeypatch, distributions)
    prior = VMFPrior.from_weight(torch.randn(10, 5, dtype=torch.float64), 5.0)
    labels = torch.arange(10).repeat(3)
    first = prior(labels).entropy()
    assert calls == [(10,)]  # the C classes, not the 30 labels
    reference = VonMisesFisher(prior.mean_directions[labels], prior.concentration[labels]).entropy()
    assert torch.allclose(first, reference, rtol=0, atol=1e-12)
    state = prior.state_dict()
    state["concentration"] = torch.full((10,), 50.0, dtype=torch.float64)
    prior.load_state_dict(state)  # an in-place copy into the buffer
    changed = prior(labels).entropy()
    expected = VonMisesFisher(prior.mean_directions[labels], torch.full((30,), 50.0, dtype=torch.float64)).entropy()
    assert torch.allclose(changed, expected, rtol=0, atol=1e-12)
    prior.float()  # new buffer tensors
    assert prior(labels).entropy().dtype == torch.float32
    assert calls.count((10,)) == 3 and calls.count((30,)) == 2  # three prior calls; the two references above


def test_sampler_gradient_with_a_passed_mean_equals_the_one_it_evaluates():
    _, kappa = _distribution(requires_grad=False)
    gradients, samples = [], []
    for mean in (None, bessel.mean_resultant_length(5, kappa)):
        leaf = kappa.clone().requires_grad_()
        torch.manual_seed(3)
        w, _ = sample_radial(leaf, 5, mean)
        samples.append(w.detach())
        gradients.append(torch.autograd.grad(w.sum(), leaf)[0])
    assert torch.equal(samples[0], samples[1])
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-12, atol=0)


def test_nan_or_infinite_concentration_never_hangs_the_sampler():
    for dim in (2, 3, 5, 10):
        w, _ = sample_radial(torch.tensor([math.nan, math.inf, 2.0], dtype=torch.float64), dim)
        assert math.isnan(w[0].item()) and (math.isnan(w[1].item()) or w[1].item() == 1.0) and -1 <= w[2].item() <= 1
