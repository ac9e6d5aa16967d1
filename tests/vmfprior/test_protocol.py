"""The torch.distributions protocol, property by property, over every distribution the library returns.

Each entry of EXAMPLES builds a distribution from a dict of parameter tensors; every test below runs on every
entry (or on every pair in KL_PAIRS), so a new example is tested everywhere by adding it to the list. Monte Carlo
checks use a few thousand samples and tolerances of a few standard errors of their own estimate.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, biject_to, kl_divergence, transform_to

import vmfprior.svae as svae
from vmfprior import HypersphericalUniform, VMFPrior, VonMisesFisher

NUM_SAMPLES = 4000
STANDARD_ERRORS = 5.0  # a two-sided 5-SE band fails a correct estimate with probability < 1e-6 per comparison


def _unit(shape, dtype, generator):
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


@dataclass
class Example:
    """A distribution under test: ``build(params, validate)`` from ``params(seed)``, a dict of tensors."""

    name: str
    build: Callable[[dict, bool], torch.distributions.Distribution]
    params: Callable[[int], dict]
    # parameter dicts that validation must refuse with a ValueError (built from a valid dict)
    bad_params: Callable[[dict], list] = field(default=lambda params: [])
    # entropy's shape when it deliberately differs from batch_shape (s-vae's uniform returns (1,))
    entropy_shape: tuple | None = None
    # whether the distribution checks log_prob's argument (the prior's are built unvalidated: see VMFPrior.forward)
    validates_values: bool = True
    # run jit.trace and torch.export on it (one example per class: a failed export costs seconds)
    compiled: bool = False


def _vmf_example(name, dim, batch, concentration, dtype, cls=VonMisesFisher, trailing_one=False, compiled=False):
    def params(seed):
        generator = torch.Generator().manual_seed(seed)
        loc = _unit(batch + (dim,), dtype, generator)
        scale = concentration * (0.5 + torch.rand(batch, generator=generator, dtype=torch.float64))
        scale = scale.to(dtype)
        return {"loc": loc, "concentration": scale.unsqueeze(-1) if trailing_one else scale}

    def bad(params):
        return [
            dict(params, loc=2.0 * params["loc"]),
            dict(params, concentration=-params["concentration"]),
            dict(params, concentration=params["concentration"] * math.inf),
        ]

    return Example(
        name,
        lambda p, validate: cls(p["loc"], p["concentration"], validate_args=validate),
        params,
        bad,
        compiled=compiled,
    )


def _uniform_example(name, dim, batch, dtype, compiled=False):
    return Example(
        name,
        lambda p, validate: HypersphericalUniform(dim, batch, dtype=dtype, validate_args=validate),
        lambda seed: {},
        compiled=compiled,
    )


_PRIOR = VMFPrior.from_weight(
    torch.randn(4, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64),
    torch.tensor([0.5, 3.0, 20.0, 300.0], dtype=torch.float64),
)


def _prior_example(name, batch):
    def params(seed):
        return {"labels": torch.randint(0, _PRIOR.num_classes, (batch,), generator=torch.Generator().manual_seed(seed))}

    def bad(params):
        return [dict(params, labels=params["labels"] + _PRIOR.num_classes)]

    return Example(
        name,
        lambda p, validate: _PRIOR(p["labels"], validate=validate),
        params,
        bad,
        validates_values=False,
        compiled=True,
    )


EXAMPLES = [
    _vmf_example("vmf-d3-scalar", 3, (), 2.0, torch.float64),
    _vmf_example("vmf-d2-batch2x3", 2, (2, 3), 4.0, torch.float64),
    _vmf_example("vmf-d5-float32", 5, (3,), 10.0, torch.float32, compiled=True),
    _vmf_example("vmf-d10-kappa1e3", 10, (2,), 1e3, torch.float64),
    _vmf_example("vmf-d4-kappa1e-3", 4, (3,), 1e-3, torch.float64),
    _uniform_example("uniform-d3-batch2", 3, (2,), torch.float64, compiled=True),
    _uniform_example("uniform-d6-float32", 6, (), torch.float32),
    _prior_example("prior-labels5", 5),
    _vmf_example("svae-vmf-d4", 4, (3,), 5.0, torch.float64, cls=svae.VonMisesFisher, trailing_one=True, compiled=True),
    Example(
        "svae-uniform-s3",
        lambda p, validate: svae.HypersphericalUniform(3, validate_args=validate),
        lambda seed: {},
        entropy_shape=(1,),
        compiled=True,
    ),
]
BY_NAME = {example.name: example for example in EXAMPLES}

# (p, q) for KL(p || q): every registered pair of the library's types, the s-vae types and the prior's output.
KL_PAIRS = [
    ("vmf-d3-scalar", "vmf-d3-scalar"),
    ("vmf-d5-float32", "vmf-d5-float32"),
    ("vmf-d10-kappa1e3", "vmf-d10-kappa1e3"),
    ("vmf-d4-kappa1e-3", "svae-uniform-s3"),
    ("vmf-d3-scalar", "uniform-d3-batch2"),
    ("uniform-d3-batch2", "vmf-d3-scalar"),
    ("uniform-d3-batch2", "uniform-d3-batch2"),
    ("uniform-d6-float32", "prior-labels5"),
    ("prior-labels5", "prior-labels5"),
    ("svae-vmf-d4", "svae-uniform-s3"),
    ("svae-vmf-d4", "svae-vmf-d4"),
    ("svae-uniform-s3", "svae-vmf-d4"),
    ("svae-uniform-s3", "svae-uniform-s3"),
]


# jit.trace / torch.export of everything that evaluates Bessel terms: the custom autograd Function of
def _example_params(test_methods=None):
    return [pytest.param(example, id=example.name) for example in EXAMPLES]


def _build(example, seed=0, validate=True):
    return example.build(example.params(seed), validate)


def _dtype(distribution):
    return distribution.sample().dtype


def _close(actual, expected, rtol=1e-6, atol=1e-6):
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


# ---- shapes, support, parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize("example", _example_params())
def test_shapes(example):
    distribution = _build(example)
    batch, event = distribution.batch_shape, distribution.event_shape
    assert len(event) == 1
    assert distribution.sample().shape == batch + event
    assert distribution.sample((2, 3)).shape == (2, 3) + batch + event
    if distribution.has_rsample:
        assert distribution.rsample((2,)).shape == (2,) + batch + event
    assert distribution.log_prob(distribution.sample((2,))).shape == (2,) + batch
    assert distribution.entropy().shape == (example.entropy_shape or batch)
    assert distribution.mean.shape == batch + event


@pytest.mark.parametrize("example", _example_params())
def test_samples_lie_in_the_support(example):
    distribution = _build(example)
    samples = distribution.sample((50,))
    assert distribution.support.check(samples).all()
    assert not distribution.support.check(2.0 * samples).any()


@pytest.mark.parametrize("example", _example_params())
def test_parameters_satisfy_their_constraints(example):
    distribution = _build(example)
    for name, constraint in distribution.arg_constraints.items():
        assert constraint.check(getattr(distribution, name)).all(), name


@pytest.mark.parametrize("example", _example_params())
def test_validation_refuses_bad_parameters_and_values(example):
    params = example.params(0)
    for bad in example.bad_params(params):
        with pytest.raises(ValueError):
            example.build(bad, True)
    if example.validates_values:
        distribution = example.build(params, True)
        with pytest.raises(ValueError, match="value"):
            distribution.log_prob(2.0 * distribution.sample())


# ---- expand, Independent, MixtureSameFamily -------------------------------------------------------------------


@pytest.mark.parametrize("example", _example_params())
def test_expand(example):
    distribution = _build(example)
    new_batch = (2,) + distribution.batch_shape
    expanded = distribution.expand(new_batch)
    assert type(expanded) is type(distribution)
    assert expanded.batch_shape == new_batch and expanded.event_shape == distribution.event_shape
    assert expanded.sample((3,)).shape == (3,) + new_batch + distribution.event_shape
    points = expanded.sample()
    _close(expanded.log_prob(points), distribution.log_prob(points), rtol=1e-5, atol=1e-5)
    _close(expanded.mean, distribution.mean.expand(expanded.mean.shape))
    if example.entropy_shape is None:
        _close(expanded.entropy(), distribution.entropy().expand(new_batch))


@pytest.mark.parametrize("example", _example_params())
def test_independent(example):
    distribution = _build(example)
    if len(distribution.batch_shape) == 0:
        distribution = distribution.expand((3,))
    joint = Independent(distribution, 1)
    assert joint.batch_shape == distribution.batch_shape[:-1]
    assert joint.event_shape == distribution.batch_shape[-1:] + distribution.event_shape
    points = joint.sample((4,))
    _close(joint.log_prob(points), distribution.log_prob(points).sum(-1))
    if example.entropy_shape is None:
        _close(joint.entropy(), distribution.entropy().sum(-1))
        _close(kl_divergence(joint, joint), kl_divergence(distribution, distribution).sum(-1))


@pytest.mark.parametrize("example", _example_params())
def test_mixture_same_family(example):
    torch.manual_seed(0)
    components = _build(example)
    if len(components.batch_shape) == 0:
        components = components.expand((3,))
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(components.batch_shape, generator=generator, dtype=torch.float64).to(_dtype(components))
    mixture = MixtureSameFamily(Categorical(logits=logits), components)
    samples = mixture.sample((NUM_SAMPLES,))
    assert samples.shape == (NUM_SAMPLES,) + mixture.batch_shape + components.event_shape
    assert components.support.check(samples).all()
    points = samples[:5]
    weights = torch.log_softmax(logits, dim=-1)
    expected = torch.logsumexp(components.log_prob(points.unsqueeze(-2)) + weights, dim=-1)
    _close(mixture.log_prob(points), expected, rtol=1e-5, atol=1e-5)
    # the mixture's sampler draws components with the right weights: its sample mean is the weighted mean
    mean = samples.double().mean(0)
    standard_error = samples.double().std(0) / math.sqrt(NUM_SAMPLES)
    expected_mean = (weights.double().exp().unsqueeze(-1) * components.mean.double()).sum(-2)
    assert ((mean - expected_mean).abs() <= STANDARD_ERRORS * standard_error + 1e-12).all()


# ---- entropy and KL against Monte Carlo -----------------------------------------------------------------------


@pytest.mark.parametrize("example", _example_params())
def test_entropy_matches_monte_carlo(example):
    torch.manual_seed(0)
    distribution = _build(example)
    samples = distribution.sample((NUM_SAMPLES,))
    negative_log = -distribution.log_prob(samples).double()
    estimate, standard_error = negative_log.mean(0), negative_log.std(0) / math.sqrt(NUM_SAMPLES)
    entropy = distribution.entropy().double().reshape(estimate.shape)
    tolerance = STANDARD_ERRORS * standard_error + 1e-5 * (1 + entropy.abs())  # float32 log_prob rounding
    assert ((entropy - estimate).abs() <= tolerance).all(), (entropy, estimate, standard_error)


def _kl_params():
    return [pytest.param(BY_NAME[p], BY_NAME[q], id=f"{p}||{q}") for p, q in KL_PAIRS]


@pytest.mark.parametrize("p_example, q_example", _kl_params())
def test_kl_matches_monte_carlo(p_example, q_example):
    torch.manual_seed(0)
    p, q = _build(p_example, seed=0), _build(q_example, seed=1)
    kl = kl_divergence(p, q).double()
    p = p.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))  # samples that q's batch can score
    samples = p.sample((NUM_SAMPLES,))
    difference = (p.log_prob(samples) - q.log_prob(samples)).double()
    estimate, standard_error = difference.mean(0), difference.std(0) / math.sqrt(NUM_SAMPLES)
    assert kl.shape == estimate.shape
    tolerance = STANDARD_ERRORS * standard_error + 1e-5 * (1 + kl.abs())
    assert ((kl - estimate).abs() <= tolerance).all(), (kl, estimate, standard_error)
    assert (kl >= -1e-6).all()
    _close(kl_divergence(p, p).double(), torch.zeros_like(kl_divergence(p, p).double()), atol=1e-5)


# ---- biject_to / transform_to ---------------------------------------------------------------------------------


@pytest.mark.parametrize("registry", [biject_to, transform_to], ids=["biject_to", "transform_to"])
@pytest.mark.parametrize("example", _example_params())
def test_constraint_registries_round_trip(example, registry):
    distribution = _build(example)
    constrained = {"support": (distribution.support, distribution.sample((5,)))}
    for name, constraint in distribution.arg_constraints.items():
        constrained[name] = (constraint, getattr(distribution, name))
    for name, (constraint, value) in constrained.items():
        transform = registry(constraint)
        # a float32 point is on the sphere to float32 rounding only, and the round trip lands on the sphere
        tolerance = 1e-6 if value.dtype == torch.float32 else 1e-9
        value = value.double()
        unconstrained = transform.inv(value)
        if name == "support" and transform.bijective:
            # the stereographic round trip moves a point that is e off the sphere along the line through the pole
            # -e_1, by up to 2 e / |y + e_1| (a few float32 samples in 1e4 land near enough to the pole for that to
            # exceed the tolerance): allow it, with the point's own distance from the sphere
            off = (value.norm(dim=-1, keepdim=True) - 1.0).abs()
            pole = value.clone()
            pole[..., 0] += 1.0
            allowed = tolerance + 4.0 * off / pole.norm(dim=-1, keepdim=True)
            assert ((transform(unconstrained) - value).abs() <= allowed + tolerance * value.abs()).all()
        else:
            _close(transform(unconstrained), value, rtol=tolerance, atol=tolerance)
        assert constraint.check(transform(torch.randn_like(unconstrained, dtype=torch.float64))).all(), name
        if transform.bijective:
            _close(transform.inv(transform(unconstrained)), unconstrained, rtol=1e-7, atol=1e-9)
            jacobian = transform.log_abs_det_jacobian(unconstrained, value)
            assert jacobian.shape == value.shape[: value.dim() - constraint.event_dim], name
            assert torch.isfinite(jacobian).all()


# ---- jit.trace and torch.export -------------------------------------------------------------------------------

_METHODS = ["log_prob", "entropy", "mean"]


def _evaluator(example, method):
    """f(*parameter tensors, points) -> the method's value, built from scratch with validation off."""
    names = sorted(example.params(0))

    def evaluate(*args):
        distribution = example.build(dict(zip(names, args[:-1])), False)
        if method == "log_prob":
            return distribution.log_prob(args[-1])
        if method == "entropy":
            return distribution.entropy()
        return distribution.mean

    return names, evaluate


def _inputs(example, seed):
    names = sorted(example.params(seed))
    params = example.params(seed)
    torch.manual_seed(seed)
    points = _build(example, seed).sample((2,))
    return tuple(params[name] for name in names) + (points,)


def _trace_cases():
    return [
        pytest.param(example, method, id=f"{example.name}-{method}")
        for example in EXAMPLES
        if example.compiled
        for method in _METHODS
    ]


@pytest.mark.parametrize("example, method", _trace_cases())
def test_jit_trace_gives_eager_values_on_new_inputs(example, method):
    _, evaluate = _evaluator(example, method)
    traced = torch.jit.trace(evaluate, _inputs(example, 0), check_trace=False)
    new_inputs = _inputs(example, 1)
    _close(traced(*new_inputs), evaluate(*new_inputs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("example, method", _trace_cases())
def test_torch_export_gives_eager_values_on_new_inputs(example, method):
    _, evaluate = _evaluator(example, method)

    class Wrapped(torch.nn.Module):
        def forward(self, *args):
            return evaluate(*args)

    exported = torch.export.export(Wrapped(), _inputs(example, 0))
    new_inputs = _inputs(example, 1)
    _close(exported.module()(*new_inputs), evaluate(*new_inputs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "example", [pytest.param(example, id=example.name) for example in EXAMPLES if example.compiled]
)
def test_jit_trace_of_sample_replays_the_draws(example):
    names, _ = _evaluator(example, "mean")
    inputs = _inputs(example, 0)[:-1]

    def draw(*args):
        return example.build(dict(zip(names, args)), False).sample((3,))

    with torch.random.fork_rng():
        torch.manual_seed(5)
        traced = torch.jit.trace(draw, inputs, check_trace=False) if inputs else None
        torch.manual_seed(5)
        eager = draw(*inputs)
        torch.manual_seed(5)
        replayed = traced(*inputs) if traced is not None else draw()
    _close(replayed, eager, rtol=0, atol=0)


@pytest.mark.parametrize(
    "p_example, q_example",
    [
        pytest.param(BY_NAME[p], BY_NAME[q], id=f"{p}||{q}")
        for p, q in KL_PAIRS
        if BY_NAME[p].compiled and BY_NAME[q].compiled
    ],
)
def test_kl_traces_and_exports(p_example, q_example):
    p_names, q_names = sorted(p_example.params(0)), sorted(q_example.params(0))

    def kl(*args):
        p = p_example.build(dict(zip(p_names, args[: len(p_names)])), False)
        q = q_example.build(dict(zip(q_names, args[len(p_names) :])), False)
        return kl_divergence(p, q)

    def inputs(seed):
        p_params, q_params = p_example.params(seed), q_example.params(seed + 1)
        return tuple(p_params[n] for n in p_names) + tuple(q_params[n] for n in q_names)

    if not inputs(0):
        pytest.skip("no tensor parameters to trace")

    class Wrapped(torch.nn.Module):
        def forward(self, *args):
            return kl(*args)

    traced = torch.jit.trace(kl, inputs(0), check_trace=False)
    exported = torch.export.export(Wrapped(), inputs(0))
    _close(traced(*inputs(2)), kl(*inputs(2)))
    _close(exported.module()(*inputs(2)), kl(*inputs(2)))


# ---- pickle and deepcopy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", _example_params())
def test_pickle_and_deepcopy_with_parameters_that_require_grad(example):
    params = {
        name: value.clone().requires_grad_() if value.is_floating_point() else value
        for name, value in example.params(0).items()
    }
    distribution = example.build(params, True)
    points = distribution.sample((3,)).detach()
    expected = distribution.log_prob(points)
    for copied in (copy.deepcopy(distribution), pickle.loads(pickle.dumps(distribution))):
        assert type(copied) is type(distribution) and copied.batch_shape == distribution.batch_shape
        _close(copied.log_prob(points).detach(), expected.detach(), rtol=0, atol=0)
        if any(
            value.requires_grad for value in params.values()
        ):  # the copy has leaves of its own: gradients reach them
            leaves = [t for t in vars(copied).values() if isinstance(t, torch.Tensor) and t.is_leaf and t.requires_grad]
            assert leaves and not any(t is v for t in leaves for v in params.values())
            copied.rsample().sum().backward()
            assert all(t.grad is not None for t in leaves)
