"""The KD and CKD losses against hand and independent computations; the CKD targets against quadrature."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from ckd.losses import ckd_loss, distillation_loss, kd_loss, soft_cross_entropy
from ckd.train import teacher_affinity


def test_kd_loss_matches_a_hand_computation():
    # Teacher logits (4, 0), student (0, 0), T = 4: p_T = softmax(1, 0), p_S = (1/2, 1/2), so H = log 2 and the
    # loss is T^2 log 2 whatever p_T is.
    teacher = torch.tensor([[4.0, 0.0]])
    assert kd_loss(torch.zeros(1, 2), teacher).item() == pytest.approx(16 * math.log(2), rel=1e-6)
    # Student (0, 4): p_S^T = (1, e) / (1 + e); with p_T = (e, 1) / (1 + e):
    # H = -(e log(1/(1+e)) + log(e/(1+e))) / (1+e) = log(1+e) - 1/(1+e).
    e = math.e
    expected = 16 * (math.log(1 + e) - 1 / (1 + e))
    assert kd_loss(torch.tensor([[0.0, 4.0]]), teacher).item() == pytest.approx(expected, rel=1e-6)
    # The batch mean of the two.
    both = kd_loss(torch.tensor([[0.0, 0.0], [0.0, 4.0]]), teacher.repeat(2, 1)).item()
    assert both == pytest.approx((16 * math.log(2) + expected) / 2, rel=1e-6)


def test_kd_gradient_is_t_times_the_difference_of_softened_probabilities():
    # d/ds [T^2 H(softmax(t/T), softmax(s/T))] = T (softmax(s/T) - softmax(t/T)): why T^2 keeps the scale.
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 3
    kd_loss(student, teacher, temperature=4.0).backward()
    expected = 4.0 * (torch.softmax(student.detach() / 4, 1) - torch.softmax(teacher / 4, 1)) / 5
    torch.testing.assert_close(student.grad, expected, rtol=1e-10, atol=1e-12)


def test_ckd_loss_is_the_cross_entropy_against_the_affinity_row_of_the_label():
    rng = np.random.default_rng(1)
    affinity = rng.random((6, 6)) + np.eye(6) * 5
    affinity /= affinity.sum(axis=1, keepdims=True)
    logits = rng.normal(size=(9, 6)) * 2
    labels = rng.integers(0, 6, size=9)
    expected = 0.0
    for b in range(9):  # plain-Python log-softmax and cross-entropy
        log_norm = math.log(sum(math.exp(v) for v in logits[b]))
        expected -= sum(affinity[labels[b], k] * (logits[b, k] - log_norm) for k in range(6))
    expected /= 9
    got = ckd_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(affinity)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # With one-hot rows it is the ordinary cross-entropy.
    onehot = torch.eye(6, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert ckd_loss(torch.tensor(logits), torch.tensor(labels), onehot).item() == pytest.approx(ce, rel=1e-12)
    assert abs(got - ce) > 0.05  # the soft rows matter


def test_combined_losses_weigh_their_terms():
    generator = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    labels = torch.tensor([0, 1, 4, 2])
    affinity = torch.softmax(torch.randn(5, 5, generator=generator) + 3 * torch.eye(5), 1)
    ce = torch.nn.functional.cross_entropy(student, labels)
    soft = kd_loss(student, teacher, 4.0)
    torch.testing.assert_close(distillation_loss("label", student, labels), ce)
    torch.testing.assert_close(distillation_loss("kd", student, labels, teacher, kd_weight=0.9), 0.1 * ce + 0.9 * soft)
    torch.testing.assert_close(
        distillation_loss("ckd", student, labels, affinity=affinity), soft_cross_entropy(affinity[labels], student)
    )
    torch.testing.assert_close(
        distillation_loss("ckd+kd", student, labels, teacher, affinity, kd_weight=0.9),
        0.1 * ckd_loss(student, labels, affinity) + 0.9 * soft,
    )
    with pytest.raises(ValueError, match="teacher's logits"):
        distillation_loss("kd", student, labels)
    with pytest.raises(ValueError, match="affinity"):
        distillation_loss("ckd", student, labels, teacher)
    with pytest.raises(ValueError, match="loss must be one of"):
        distillation_loss("mse", student, labels)


def _affinity_by_quadrature(weight, bias, kappa, norm):
    """Eq. 7 on the circle: p(y | i) = int vMF(theta; theta_i, kappa) softmax(W r u(theta) + b)_y dtheta."""
    weight, bias = weight.astype(np.float64), bias.astype(np.float64)
    means = np.arctan2(weight[:, 1], weight[:, 0])
    classes = weight.shape[0]
    result = np.zeros((classes, classes))
    for i in range(classes):
        for y in range(classes):

            def integrand(theta, i=i, y=y):
                logits = norm * (weight @ np.array([math.cos(theta), math.sin(theta)])) + bias
                logits -= logits.max()
                soft = np.exp(logits) / np.exp(logits).sum()
                # vMF density on the circle w.r.t. arc length, with i0e for stability: exp(k(cos - 1)) / (2 pi i0e(k))
                return math.exp(kappa * (math.cos(theta - means[i]) - 1)) / (2 * math.pi * special.i0e(kappa)) * soft[y]

            result[i, y] = integrate.quad(integrand, means[i] - math.pi, means[i] + math.pi, limit=200)[0]
    return result


def test_ckd_targets_match_eq7_by_quadrature():
    torch.manual_seed(3)
    head = torch.nn.Linear(2, 5)
    teacher = torch.nn.Module()
    teacher.head = head
    weight, bias = head.weight.detach().numpy(), head.bias.detach().numpy()
    expected_by_setting = []
    for kappa, norm in ((3.0, 4.0), (20.0, 10.0)):
        expected = _affinity_by_quadrature(weight, bias, kappa, norm)
        expected_by_setting.append(expected)
        got = teacher_affinity(teacher, kappa, norm, num_samples=40_000).double().numpy()
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
        # Monte Carlo: each entry's standard error is at most 0.5 / sqrt(40000) = 0.0025.
        np.testing.assert_allclose(got, expected, atol=0.0125)
    # The two settings give visibly different targets: the comparison above could fail.
    assert np.abs(expected_by_setting[0] - expected_by_setting[1]).max() > 0.1


def test_ckd_targets_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(4)
    teacher = torch.nn.Module()
    teacher.head = torch.nn.Linear(3, 4)
    state = torch.get_rng_state()
    first = teacher_affinity(teacher, 5.0, 2.0, num_samples=500)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(teacher_affinity(teacher, 5.0, 2.0, num_samples=500), first, rtol=0, atol=0)
    assert not torch.equal(teacher_affinity(teacher, 5.0, 2.0, num_samples=500, seed=1), first)


def test_label_smoothing_matches_a_hand_computation():
    # Three classes, eps = 0.3: targets (0.7, 0.15, 0.15) for label 0. Logits (1, 3, 0):
    # log-softmax = logits - log(e + e^3 + 1); loss = -sum_k t_k log p_k.
    from ckd.losses import off_diagonal_mass, smoothing_loss, smoothing_targets

    log_norm = math.log(math.e + math.e**3 + 1)
    expected = -(0.7 * (1 - log_norm) + 0.15 * (3 - log_norm) + 0.15 * (0 - log_norm))
    got = smoothing_loss(torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64), torch.tensor([0]), 0.3).item()
    assert got == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(smoothing_targets(torch.tensor([2]), 3, 0.3), torch.tensor([[0.15, 0.15, 0.7]]))
    # eps = 0 is the ordinary cross-entropy; the default torch smoothing (eps / C on every class) is not ours.
    logits = torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64)
    assert smoothing_loss(logits, torch.tensor([0]), 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([0])).item(), rel=1e-12
    )
    torch_style = torch.nn.functional.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.3).item()
    assert abs(torch_style - expected) > 1e-3
    value = distillation_loss("label-smoothing", logits, torch.tensor([0]), smoothing=0.3).item()
    assert value == pytest.approx(expected)
    with pytest.raises(ValueError, match="epsilon"):
        distillation_loss("label-smoothing", logits, torch.tensor([0]))
    # The matched eps: 1 - mean diagonal of an affinity.
    affinity = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    assert off_diagonal_mass(affinity) == pytest.approx(0.2)
