"""VMFPrior: construction from layers and checkpoints, sampling, densities, mixture, class affinity."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from vmfprior import VMFPrior, VonMisesFisher, mean_resultant_length
from vmfprior.prior import concentration_from_mean_cosine, find_final_layer_key


def _prior(num_classes=4, dim=6, concentration=5.0, seed=0, bias=True):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64)
    b = torch.randn(num_classes, generator=generator, dtype=torch.float64) if bias else None
    return VMFPrior.from_weight(weight, concentration, bias=b), weight, b


def test_from_linear_and_from_weight_agree():
    linear = nn.Linear(6, 4)
    prior = VMFPrior.from_linear(linear, concentration=3.0)
    same = VMFPrior.from_weight(linear.weight, 3.0, bias=linear.bias)
    torch.testing.assert_close(prior.mean_directions, linear.weight / linear.weight.norm(dim=1, keepdim=True))
    torch.testing.assert_close(prior.mean_directions, same.mean_directions)
    torch.testing.assert_close(prior.bias, linear.bias.detach())
    assert prior.num_classes == 4 and prior.dim == 6
    assert torch.equal(prior.concentration, torch.full((4,), 3.0))


def test_from_checkpoint_round_trip(tmp_path):
    classifier = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    classifier.add_module("head", nn.Linear(8, 3))
    path = tmp_path / "classifier.pt"
    torch.save({"model": classifier.state_dict(), "epoch": 3}, path)
    prior = VMFPrior.from_checkpoint(path, concentration=torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(prior.weight, classifier.head.weight.detach())
    torch.testing.assert_close(prior.bias, classifier.head.bias.detach())
    torch.save(classifier.state_dict(), path)  # a bare state dict works too, and key= picks a layer
    prior = VMFPrior.from_checkpoint(path, 2.0, key="0.weight")
    torch.testing.assert_close(prior.weight, classifier[0].weight.detach())


def test_from_checkpoint_errors_list_candidates(tmp_path):
    path = tmp_path / "ambiguous.pt"
    torch.save({"a.weight": torch.randn(3, 4), "b.weight": torch.randn(4, 4)}, path)
    with pytest.raises(ValueError, match=r"a\.weight.*b\.weight"):
        VMFPrior.from_checkpoint(path, 1.0)
    with pytest.raises(ValueError, match="not in the checkpoint"):
        VMFPrior.from_checkpoint(path, 1.0, key="head.weight")
    with pytest.raises(ValueError, match="not found"):
        VMFPrior.from_checkpoint(tmp_path / "missing.pt", 1.0)
    assert find_final_layer_key({"features.weight": torch.ones(2, 2), "fc.weight": torch.ones(2, 2)}) == "fc.weight"


def test_sample_shapes_radius_and_concentration_around_class_means():
    prior, _, _ = _prior(num_classes=3, dim=8, concentration=50.0)
    labels = torch.tensor([0, 1, 2, 2, 1])
    z = prior.sample(labels, radius=math.sqrt(8))
    assert z.shape == (5, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.full((5,), math.sqrt(8), dtype=torch.float64))
    torch.manual_seed(0)
    many = prior.sample(torch.zeros(4000, dtype=torch.long))
    cosine = many @ prior.mean_directions[0]
    expected = prior(torch.zeros(1, dtype=torch.long)).mean @ prior.mean_directions[0]
    assert abs(cosine.mean() - expected.item()) < 5 * cosine.std() / math.sqrt(4000)


def test_log_prob_equals_batched_von_mises_fisher():
    prior, _, _ = _prior()
    labels = torch.tensor([3, 0, 1])
    z = nn.functional.normalize(torch.randn(3, 6, dtype=torch.float64), dim=1)
    expected = VonMisesFisher(prior.mean_directions[labels], prior.concentration[labels]).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z, labels), expected)
    distribution = prior(labels)
    assert isinstance(distribution, VonMisesFisher) and distribution.batch_shape == (3,)


def test_mixture_log_prob_equals_brute_force_sum():
    prior, _, _ = _prior(concentration=torch.tensor([1.0, 4.0, 9.0, 20.0], dtype=torch.float64))
    z = nn.functional.normalize(torch.randn(7, 6, dtype=torch.float64), dim=1)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    brute = torch.zeros(7, dtype=torch.float64)
    for i in range(4):
        component = scipy.stats.vonmises_fisher(prior.mean_directions[i].numpy(), prior.concentration[i].item())
        brute += weights[i] * torch.from_numpy(component.pdf(z.numpy()))
    torch.testing.assert_close(prior.mixture_log_prob(z, weights), brute.log())
    uniform_mix = prior.mixture_log_prob(z)
    torch.testing.assert_close(uniform_mix, torch.logsumexp(prior.class_log_probs(z) - math.log(4), dim=1))


def test_class_affinity_rows_sum_to_one_and_match_independent_monte_carlo():
    prior, weight, bias = _prior(num_classes=3, dim=4, concentration=3.0, seed=1)
    torch.manual_seed(0)
    affinity = prior.class_affinity(num_samples=20_000, activation_norm=2.0)
    assert affinity.shape == (3, 3)
    torch.testing.assert_close(affinity.sum(1), torch.ones(3, dtype=torch.float64))
    rng = np.random.default_rng(0)
    for i in range(3):
        a = 2.0 * scipy.stats.vonmises_fisher(prior.mean_directions[i].numpy(), 3.0).rvs(20_000, random_state=rng)
        probabilities = torch.softmax(torch.from_numpy(a) @ weight.T + bias, dim=1)
        standard_error = probabilities.std(0) / math.sqrt(20_000)
        # both estimates carry Monte Carlo error: compare with the standard error of their difference
        assert torch.all((affinity[i] - probabilities.mean(0)).abs() < 5 * math.sqrt(2) * standard_error)


def test_class_affinity_diagonal_dominates_for_separated_directions():
    weight = 4.0 * torch.eye(5, 8, dtype=torch.float64)
    prior = VMFPrior.from_weight(weight, concentration=20.0)
    affinity = prior.class_affinity(num_samples=500, activation_norm=3.0)
    assert torch.all(affinity.diagonal() > 0.9)
    assert torch.all(affinity.diagonal()[:, None] > affinity + torch.eye(5, dtype=torch.float64) * -1)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: VMFPrior.from_weight(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 1.0), "zero"),
        (lambda: VMFPrior.from_weight(torch.eye(2), -1.0), "concentration"),
        (lambda: VMFPrior.from_weight(torch.eye(2), torch.ones(3)), "concentration"),
        (lambda: VMFPrior.from_weight(torch.ones(3), 1.0), "weight"),
        (lambda: VMFPrior.from_weight(torch.eye(2), 1.0).sample(torch.tensor([2])), "labels"),
        (lambda: VMFPrior.from_weight(torch.eye(2), 1.0).sample(torch.tensor([-1])), "labels"),
        (lambda: VMFPrior.from_weight(torch.eye(2), 1.0).sample(torch.tensor([0.0])), "integer"),
        (lambda: VMFPrior.from_weight(torch.eye(2), 1.0).sample(torch.tensor([0]), radius=0.0), "radius"),
        (lambda: VMFPrior.from_weight(torch.eye(2), 1.0).log_prob(torch.ones(2, 3), torch.tensor([0, 1])), "z"),
        (
            lambda: VMFPrior.from_weight(torch.eye(2), 1.0).class_affinity(num_samples=0, activation_norm=1.0),
            "num_samples",
        ),
    ],
)
def test_bad_input_raises_value_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_prior_moves_with_the_module():
    prior, _, _ = _prior()
    converted = prior.to(torch.float32)
    assert converted.mean_directions.dtype == torch.float32
    assert converted.sample(torch.tensor([0, 1])).dtype == torch.float32


def test_concentration_from_mean_cosine_inverts_the_mean_resultant_length():
    kappa = torch.tensor([0.01, 1.0, 7.5, 300.0, 2e4], dtype=torch.float64)
    for dim in (2, 3, 16):
        torch.testing.assert_close(
            concentration_from_mean_cosine(mean_resultant_length(dim, kappa), dim), kappa, rtol=1e-8, atol=0
        )


def test_fit_concentration_recovers_the_sampling_concentration():
    prior = VMFPrior.from_weight(
        torch.eye(3, 8, dtype=torch.float64) * 2.0, concentration=torch.tensor([5.0, 20.0, 80.0])
    )
    labels = torch.arange(3).repeat_interleave(4000)
    torch.manual_seed(0)
    features = 3.0 * prior.sample(labels)  # the norm does not matter
    per_class = prior.fit_concentration(features, labels, per_class=True)
    # the MLE's relative standard error is about 1/sqrt(n (d-1)/2) for large kappa; 5 of them, generously
    torch.testing.assert_close(per_class, prior.concentration, rtol=5 / math.sqrt(4000 * 3.5), atol=0)
    shared = prior.fit_concentration(features, labels)
    assert 5.0 < shared.item() < 80.0 and shared.shape == ()
    with pytest.raises(ValueError, match="every class"):
        prior.fit_concentration(features[:4000], labels[:4000], per_class=True)


@pytest.mark.parametrize("concentration", [3.0, 30.0])
def test_fit_concentration_recovers_the_sampling_kappa(concentration):
    torch.manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    labels = torch.arange(4).repeat_interleave(5_000)
    samples = VonMisesFisher(directions[labels], torch.full((20_000,), concentration, dtype=torch.float64)).sample()
    features = samples * torch.rand(20_000, 1, dtype=torch.float64) * 5  # the scale of activations is ignored
    kappa = VMFPrior.from_weight(3.0 * directions.float(), 1.0).fit_concentration(features.float(), labels)
    # the estimate spreads by ~1% across seeds at n = 20,000 (checked over seeds 0-2); 5% is about 5 SE
    assert float(kappa) == pytest.approx(concentration, rel=0.05)


def test_log_prob_takes_the_sampling_radius_and_refuses_points_off_that_sphere():
    prior, _, _ = _prior(num_classes=3, dim=4, concentration=2.0)
    labels = torch.tensor([0, 1, 2, 2])
    radius = 2.0
    z = prior.sample(labels, radius=radius)
    log_p = prior.log_prob(z, labels, radius=radius)
    for row in range(4):  # the density on the radius-r sphere: vMF(z / r) / r^(d-1)
        reference = scipy.stats.vonmises_fisher(prior.mean_directions[labels[row]].numpy(), 2.0).logpdf(
            (z[row] / radius).numpy()
        )
        assert log_p[row].item() == pytest.approx(reference - 3 * math.log(radius), rel=1e-10)
    with pytest.raises(ValueError, match="radius"):
        prior.log_prob(z, labels)  # scored as unit vectors they would get a meaningless number
    with pytest.raises(ValueError, match="radius"):
        prior.mixture_log_prob(z)
    # it integrates to one over that sphere: E_uniform[p(z)] * area = 1, within Monte Carlo error
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(20_000, 4, dtype=torch.float64), dim=1)
    ratio = prior.mixture_log_prob(radius * u, radius=radius).exp() * (radius**3 * 2 * math.pi**2)
    assert abs(ratio.mean().item() - 1.0) < 5 * ratio.std().item() / math.sqrt(20_000)


def test_validate_false_reads_nothing_on_the_host():
    from torch.overrides import TorchFunctionMode

    class Recorder(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    prior, _, _ = _prior()
    labels = torch.tensor([3, 0, 1])
    with Recorder() as recorder:
        unchecked = prior(labels, validate=False)
    assert not {"min", "max", "item", "__int__", "__bool__", "tolist"} & set(recorder.names)
    with Recorder() as recorder:
        prior(labels)
    assert {"min", "max"} <= set(recorder.names)  # the recorder sees the checks when they run
    torch.testing.assert_close(unchecked.loc, prior(labels).loc)
    with pytest.raises(IndexError):  # unchecked: an out-of-range label fails as indexing does
        prior(torch.tensor([9]), validate=False)


def test_class_affinity_takes_the_norm_from_the_checkpoint_or_requires_it(tmp_path):
    classifier = nn.Sequential(nn.Linear(5, 6))
    classifier.add_module("head", nn.Linear(6, 3))
    path = tmp_path / "teacher.pt"
    torch.save({"model": classifier.state_dict(), "activation_norm": 2.5}, path)  # as ckd.teacher writes it
    prior = VMFPrior.from_checkpoint(path, 4.0)
    assert prior.activation_norm == 2.5
    torch.manual_seed(0)
    stored = prior.class_affinity(200)
    torch.manual_seed(0)
    torch.testing.assert_close(stored, prior.class_affinity(num_samples=200, activation_norm=2.5))
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="num_samples"):
        old_name = prior.class_affinity(n_samples=200)
    torch.testing.assert_close(old_name, stored)
    torch.save(classifier.state_dict(), path)
    with pytest.raises(ValueError, match="activation_norm"):
        VMFPrior.from_checkpoint(path, 4.0).class_affinity(200)


def test_from_checkpoint_explains_a_whole_pickled_model_and_a_corrupted_file(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4))
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)
    with pytest.raises(ValueError) as caught:
        VMFPrior.from_checkpoint(whole, 1.0)
    message = str(caught.value)
    assert "torch.save(model)" in message and "state_dict()" in message and "corrupted" not in message
    assert "\x1b" not in message and message.endswith(")")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupted") as caught:
        VMFPrior.from_checkpoint(truncated, 1.0)
    assert "\x1b" not in str(caught.value)
