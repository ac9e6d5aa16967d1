"""log_bessel_iv and mean_resultant_length against mpmath (arbitrary precision) and exact identities."""

import math

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

from vmfprior import log_bessel_iv, mean_resultant_length
from vmfprior.bessel import bessel_iv_ratio

mpmath.mp.dps = 40
ORDERS = [0.0, 0.5, 1.0, 2.5, 4.0, 19.5, 20.0, 63.0, 511.0, 2048.0]
ARGUMENTS = [1e-6, 1e-3, 0.1, 1.0, 7.5, 50.0, 400.0, 1e4, 1e6]


def _mp_log_iv(v, x):
    return float(mpmath.log(mpmath.besseli(v, x)))


@pytest.mark.parametrize("v", ORDERS)
def test_log_bessel_iv_matches_mpmath_in_float64(v):
    x = torch.tensor(ARGUMENTS, dtype=torch.float64)
    got = log_bessel_iv(v, x)
    reference = torch.tensor([_mp_log_iv(v, a) for a in ARGUMENTS], dtype=torch.float64)
    # 1e-8 relative in I_v itself is 1e-8 absolute in log I_v, at every point: at x = 1e6, where log I_v is
    # about 1e6 and one float64 ulp is 1.2e-10, the measured error is one ulp.
    assert torch.all((got - reference).abs() <= 1e-8), (got - reference).abs().max()


def test_log_bessel_iv_finite_and_accurate_in_float32_where_scipy_underflows():
    v, x = 511.0, 1.0
    assert scipy.special.ive(v, x) == 0.0  # the linear-space reference has underflowed
    got = log_bessel_iv(v, torch.tensor([x], dtype=torch.float32))
    assert got.dtype == torch.float32
    assert math.isclose(got.item(), _mp_log_iv(v, x), rel_tol=1e-6)
    grid_v, grid_x = torch.meshgrid(torch.tensor(ORDERS), torch.logspace(-6, 6, 200), indexing="ij")
    assert torch.isfinite(log_bessel_iv(grid_v, grid_x.float())).all()


def test_log_bessel_iv_broadcasts_tensor_orders():
    v = torch.tensor([[0.0], [3.5], [100.0]], dtype=torch.float64)
    x = torch.tensor([0.5, 20.0], dtype=torch.float64)
    got = log_bessel_iv(v, x)
    assert got.shape == (3, 2)
    for i, order in enumerate([0.0, 3.5, 100.0]):
        for j, arg in enumerate([0.5, 20.0]):
            assert math.isclose(got[i, j].item(), _mp_log_iv(order, arg), rel_tol=1e-12, abs_tol=1e-12)


def test_log_bessel_iv_gradient_is_the_bessel_ratio_identity():
    v = 3.5
    x = torch.tensor([1e-3, 0.7, 12.0, 900.0], dtype=torch.float64, requires_grad=True)
    log_bessel_iv(v, x).sum().backward()
    expected = [float(mpmath.besseli(v + 1, a) / mpmath.besseli(v, a) + v / a) for a in x.detach().tolist()]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10)
    # and a finite-difference check through autograd's own machinery
    x2 = torch.tensor([0.3, 5.0, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_bessel_iv(2.0, t), (x2,))


def test_log_bessel_iv_special_values_and_domain():
    zero = torch.zeros(3, dtype=torch.float64)
    got = log_bessel_iv(torch.tensor([0.0, 1.0, 2.5], dtype=torch.float64), zero)
    assert got[0].item() == 0.0 and got[1].item() == -math.inf and got[2].item() == -math.inf
    assert torch.isnan(log_bessel_iv(1.0, torch.tensor([-1.0]))).all()
    with pytest.raises(ValueError, match="differentiable in x only"):
        log_bessel_iv(torch.tensor(1.0, requires_grad=True), torch.tensor(2.0))


@pytest.mark.parametrize("d", [2, 3, 5, 10, 128, 1024])
def test_mean_resultant_length_matches_mpmath(d):
    kappas = [1e-6, 1e-4, 1e-2, 1.0, 5.0, 50.0, 1e3, 1e5]
    got = mean_resultant_length(d, torch.tensor(kappas, dtype=torch.float64))
    reference = [float(mpmath.besseli(d / 2, k) / mpmath.besseli(d / 2 - 1, k)) for k in kappas]
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-8)


def test_mean_resultant_length_limits():
    kappa = torch.tensor([1e-7], dtype=torch.float64)
    assert math.isclose(mean_resultant_length(7, kappa).item(), 1e-7 / 7, rel_tol=1e-9)
    big = torch.tensor([1e7], dtype=torch.float64)
    assert math.isclose(1.0 - mean_resultant_length(7, big).item(), 6 / (2 * 1e7), rel_tol=1e-4)
    assert mean_resultant_length(3, torch.zeros(1)).item() == 0.0
    # d = 1 is S^0 = {-1, +1}: A_1 = tanh
    k = torch.tensor([0.3, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(mean_resultant_length(1, k).numpy(), torch.tanh(k).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="d must be"):
        mean_resultant_length(0, k)


def test_mean_resultant_length_gradient_matches_finite_differences():
    kappa = torch.tensor([1e-3, 0.5, 5.0, 80.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: mean_resultant_length(10, k), (kappa,))
    assert torch.autograd.gradcheck(lambda k: bessel_iv_ratio(0.0, k), (kappa,))
    small = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    mean_resultant_length(4, small).sum().backward()
    assert math.isclose(small.grad.item(), 0.25, rel_tol=1e-12)  # dA/dkappa = 1/d at 0


@pytest.mark.parametrize("v", [0.0, 1.5, 4.0, 31.0])
def test_large_batches_take_the_blocked_series_with_the_same_accuracy(v):
    # Above DEBYE_BLOCKS_ABOVE values the fixed-order Debye series is summed in blocks of powers.
    from vmfprior.bessel import DEBYE_BLOCKS_ABOVE, bessel_values

    x = torch.logspace(-6, 6, DEBYE_BLOCKS_ABOVE + 1000, dtype=torch.float64)
    log_value, ratio = bessel_values(v, x)
    picks = torch.linspace(0, len(x) - 1, 12).long()
    reference = torch.tensor([_mp_log_iv(v, x[i].item()) for i in picks], dtype=torch.float64)
    assert torch.all((log_value[picks] - reference).abs() <= 1e-8 * reference.abs().clamp(min=1.0))
    reference_ratio = torch.tensor(
        [float(mpmath.besseli(v + 1, x[i].item()) / mpmath.besseli(v, x[i].item())) for i in picks], dtype=torch.float64
    )
    assert torch.allclose(ratio[picks], reference_ratio, rtol=1e-8, atol=0)
    small_log_value, small_ratio = bessel_values(v, x[:1000])  # the other summation, on the first values
    assert torch.allclose(log_value[:1000], small_log_value, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ratio[:1000], small_ratio, rtol=1e-12, atol=0)
