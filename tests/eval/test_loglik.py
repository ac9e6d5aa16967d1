"""Tests for eval.loglik: IWAE against exact log-likelihoods by quadrature on S^2, label marginalization
against a brute-force sum over labels, streaming over chunks, and input checks.

The references never use the model's own prior code: the vMF prior density comes from
``scipy.stats.vonmises_fisher``, the uniform one is 1 / (4 pi), and each label is decoded by its own call.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import vonmises_fisher

from eval.loglik import evaluate_test_set, importance_weighted_log_likelihood
from vae.models import HypersphericalVAE
from vmfprior import VMFPrior

INPUT_DIM = 12
QUADRATURE_POINTS = 40_000
PRIOR_CONCENTRATION = 5.0


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


def _tiny_model(kind, seed=0, encoder_sees_label=False):
    """A d=3 model with 12 'pixels' so exact log p(x) by quadrature on S^2 is cheap."""
    torch.manual_seed(seed)
    prior = VMFPrior.from_weight(torch.randn(10, 3), PRIOR_CONCENTRATION) if kind == "hvae-l" else None
    model = HypersphericalVAE(
        kind, 3, class_prior=prior, input_dim=INPUT_DIM, hidden=(16, 8), encoder_sees_label=encoder_sees_label
    )
    return model.eval()


def _data(size=4, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(size, INPUT_DIM, generator=generator) < 0.4).float()
    y = torch.randint(0, 10, (size,), generator=generator)
    return x, y


def _fibonacci_sphere(count):
    """Nearly uniform points on S^2 (Fibonacci lattice): equal-weight quadrature nodes."""
    index = torch.arange(count, dtype=torch.float64) + 0.5
    height = 1.0 - 2.0 * index / count
    radius = torch.sqrt(1.0 - height**2)
    angle = index * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), height], dim=-1).float()


def _log_prior(model, z, label):
    """log p(z | y = label) for z (..., 3), independently of the model's code: scipy's vMF or 1/(4 pi)."""
    if model.kind != "hvae-l":
        return torch.full(z.shape[:-1], -math.log(4 * math.pi), dtype=torch.float64)
    direction = model.class_prior.mean_directions[label].double().numpy()
    values = vonmises_fisher(direction, PRIOR_CONCENTRATION).logpdf(z.double().reshape(-1, 3).numpy())
    return torch.from_numpy(values).view(z.shape[:-1])


@torch.no_grad()
def _log_joint_per_label(model, x, z):
    """log p(x, y = c, z) for every label c, (S, B, C) float64: one decoder call and one scipy density per label."""
    columns = []
    for label in range(10):
        label_probs = F.one_hot(torch.full((x.shape[0],), label), 10).float()
        log_lik = model.log_likelihood(x, z, label_probs if model.kind == "hvae-c" else None).double()
        columns.append(log_lik + _log_prior(model, z, label) - math.log(10))
    return torch.stack(columns, -1)


@torch.no_grad()
def _exact(model, x, y):
    """log p(x) and, for the label-aware models, log p(x, y): integral over S^2 = area * mean over uniform nodes."""
    nodes = _fibonacci_sphere(QUADRATURE_POINTS).unsqueeze(1).expand(QUADRATURE_POINTS, x.shape[0], 3)
    log_area = math.log(4 * math.pi)
    log_mean = lambda values: torch.logsumexp(values, 0) - math.log(QUADRATURE_POINTS)  # noqa: E731
    if model.kind == "hvae":
        return {"log_px": log_mean(model.log_likelihood(x, nodes).double() + _log_prior(model, nodes, 0)) + log_area}
    log_pxy_all = log_mean(_log_joint_per_label(model, x, nodes)) + log_area  # (B, C)
    log_pxy = log_pxy_all.gather(-1, y.view(-1, 1)).squeeze(-1)
    return {"log_px": torch.logsumexp(log_pxy_all, -1), "log_pxy": log_pxy, "log_px_given_y": log_pxy + math.log(10)}


@torch.no_grad()
def _log_weights(model, x, y, num_samples):
    """Log importance weights (S, B) per estimate name, for the Monte Carlo tolerance only."""
    q = model.proposal(x, y)
    z = q.sample((num_samples,))
    return {name: value - q.log_prob(z) for name, value in model.log_joint(x, y, z).items()}


@pytest.mark.parametrize("kind", ["hvae", "hvae-c", "hvae-l"])
def test_iwae_converges_to_the_exact_log_likelihood(kind):
    model = _tiny_model(kind)
    x, y = _data()
    exact = _exact(model, x, y)
    assert set(exact) == ({"log_px"} if kind == "hvae" else {"log_px", "log_pxy", "log_px_given_y"})
    torch.manual_seed(0)
    num_samples = 4000
    estimate = importance_weighted_log_likelihood(model, x, y, num_samples=num_samples, chunk_size=1000)
    assert set(estimate) == set(exact)
    # Tolerance from the spread of the importance weights: SE(log mean w) ~ std(w) / (mean(w) sqrt(K)).
    weights = _log_weights(model, x, y, num_samples)
    for name, value in estimate.items():
        relative_std = torch.exp(weights[name].double() - torch.logsumexp(weights[name].double(), 0)).std(0)
        relative_std = relative_std * num_samples  # std(w) / mean(w)
        tolerance = 6 * relative_std / math.sqrt(num_samples) + 2e-3
        assert value.shape == (4,)
        assert ((value - exact[name]).abs() < tolerance).all(), (name, value, exact[name], tolerance)


@pytest.mark.parametrize("kind", ["hvae-c", "hvae-l"])
def test_a_label_conditioned_proposal_sums_labels_out_with_one_proposal_each(kind):
    model = _tiny_model(kind, encoder_sees_label=True)
    assert model.proposal_uses_label
    x, y = _data()
    exact = _exact(model, x, y)  # the model's likelihood does not depend on the encoder
    torch.manual_seed(0)
    num_samples = 4000
    estimate = importance_weighted_log_likelihood(model, x, y, num_samples=num_samples, chunk_size=1000)
    assert set(estimate) == set(exact)
    worst = torch.zeros(x.shape[0], dtype=torch.float64)  # std(w) / mean(w), worst over the labels' proposals
    with torch.no_grad():
        for label in range(10):
            labels = torch.full_like(y, label)
            q = model.proposal(x, labels)
            z = q.sample((num_samples,))
            log_w = (model.log_joint(x, labels, z, marginal=False)["log_pxy"] - q.log_prob(z)).double()
            worst = torch.maximum(worst, torch.exp(log_w - torch.logsumexp(log_w, 0)).std(0) * num_samples)
    tolerance = 6 * worst / math.sqrt(num_samples) + 2e-3
    for name, value in estimate.items():
        assert ((value - exact[name]).abs() < tolerance).all(), (name, value, exact[name], tolerance)


@pytest.mark.parametrize("kind", ["hvae", "hvae-l"])
def test_elbo_below_iwae_and_iwae_increases_with_num_samples(kind):
    model = _tiny_model(kind)
    x, y = _data(size=8)
    exact = _exact(model, x, y)["log_px" if kind == "hvae" else "log_pxy"].mean()
    repeats = 150
    key = "log_px" if kind == "hvae" else "log_pxy"
    # Independent repeats as extra batch rows: row r * B + b is example b, repeat r.
    x_rep, y_rep = x.repeat(repeats, 1), y.repeat(repeats)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = model.elbo(x_rep, y_rep).elbo.double().view(repeats, -1)  # (R, B)
        means = {}
        for num_samples in (1, 10, 100):
            draws = importance_weighted_log_likelihood(model, x_rep, y_rep, num_samples)[key].view(repeats, -1).mean(1)
            means[num_samples] = (draws.mean(), draws.std() / math.sqrt(repeats))
    elbo_mean, elbo_se = elbo.mean(1).mean(), elbo.mean(1).std() / math.sqrt(repeats)
    # K = 1 IWAE has the ELBO's expectation (the closed-form KL only lowers the variance).
    assert abs(means[1][0] - elbo_mean) < 4 * (means[1][1] + elbo_se)
    assert means[1][0] + 3 * means[1][1] < means[10][0] - 3 * means[10][1]
    assert means[10][0] < means[100][0] + 3 * means[100][1]
    assert means[100][0] <= exact + 3 * means[100][1]
    assert elbo_mean < exact


@pytest.mark.parametrize("kind", ["hvae-c", "hvae-l"])
def test_label_marginalization_equals_brute_force_sum(kind):
    model = _tiny_model(kind)
    x, y = _data(size=5)
    with torch.no_grad():
        z = model.proposal(x, y).sample((7,))  # (S, B, 3)
        joint = model.log_joint(x, y, z)
    per_label = _log_joint_per_label(model, x, z)  # (S, B, C), independent of the model's prior code
    chosen = per_label.gather(-1, y.view(1, -1, 1).expand(7, 5, 1)).squeeze(-1)
    torch.testing.assert_close(joint["log_px"].double(), torch.logsumexp(per_label, -1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(joint["log_pxy"].double(), chosen, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(joint["log_px_given_y"].double(), chosen + math.log(10), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("chunk_size", [1, 3, 10])
def test_streaming_over_chunks_matches_one_logsumexp(chunk_size):
    model = _tiny_model("hvae-l")
    x, y = _data()
    num_samples = 10
    torch.manual_seed(5)
    estimate = importance_weighted_log_likelihood(model, x, y, num_samples, chunk_size=chunk_size)
    torch.manual_seed(5)
    with torch.no_grad():
        q = model.proposal(x, y)
        chunks = []
        for start in range(0, num_samples, chunk_size):
            z = q.sample((min(chunk_size, num_samples - start),))
            chunks.append(model.log_joint(x, y, z)["log_px"] - q.log_prob(z))
    reference = torch.logsumexp(torch.cat(chunks).double(), 0) - math.log(num_samples)
    torch.testing.assert_close(estimate["log_px"], reference)


def test_evaluate_test_set_averages_batches():
    model = _tiny_model("hvae-c")
    x, y = _data(size=10)
    torch.manual_seed(2)
    result = evaluate_test_set(model, x, y, num_samples=20, batch_size=4, chunk_size=8)
    torch.manual_seed(2)
    sums = {"log_px": 0.0, "log_pxy": 0.0, "log_px_given_y": 0.0, "elbo": 0.0}
    for start in range(0, 10, 4):
        batch_x, batch_y = x[start : start + 4], y[start : start + 4]
        estimate = importance_weighted_log_likelihood(model, batch_x, batch_y, 20, 8)
        with torch.no_grad():
            estimate["elbo"] = model.elbo(batch_x, batch_y).elbo
        for name in sums:
            sums[name] += float(estimate[name].sum())
    assert result["num_examples"] == 10 and result["num_samples"] == 20
    for name in sums:
        assert result[name] == pytest.approx(sums[name] / 10, rel=1e-6)
    assert result["log_px"] > result["log_pxy"]  # summing labels out can only add probability mass


def test_bad_arguments():
    model = _tiny_model("hvae")
    x, y = _data()
    with pytest.raises(ValueError, match="num_samples"):
        importance_weighted_log_likelihood(model, x, y, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        importance_weighted_log_likelihood(model, x, y, num_samples=3, chunk_size=0)
    with pytest.raises(ValueError, match="disagree"):
        evaluate_test_set(model, x, y[:2])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_test_set(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="required"):
        importance_weighted_log_likelihood(_tiny_model("hvae-l"), x, None, num_samples=3)
