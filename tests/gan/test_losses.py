"""Loss values on known logits, checked exactly (two-sided)."""

import math

import pytest
import torch

from gan.losses import get_loss

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-3.0, 0.0, 1.5, 0.25])


def test_hinge_values():
    loss = get_loss("hinge")
    # relu(1 - real) = [0, 0.5, 2] -> mean 2.5/3; relu(1 + fake) = [0, 1, 2.5, 1.25] -> mean 4.75/4
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(2.5 / 3 + 4.75 / 4, abs=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(-(-3.0 + 0.0 + 1.5 + 0.25) / 4, abs=1e-6)


def test_nonsaturating_values():
    loss = get_loss("nonsaturating")
    softplus = lambda t: math.log1p(math.exp(t))  # noqa: E731 - reference written independently of torch
    expected_d = sum(softplus(-r) for r in REAL.tolist()) / 3 + sum(softplus(f) for f in FAKE.tolist()) / 4
    expected_g = sum(softplus(-f) for f in FAKE.tolist()) / 4
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(expected_d, abs=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx(expected_g, abs=1e-6)


def test_nonsaturating_is_stable_for_large_logits():
    loss = get_loss("nonsaturating")
    value = loss.discriminator(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert value.item() == pytest.approx(400.0, rel=1e-6)


def test_unknown_loss_raises():
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("wasserstein")
