"""The radial part of von Mises-Fisher sampling: w = mu^T z, exactly, with implicit reparameterization gradients.

For z ~ vMF(mu, kappa) on S^{d-1}, the component w = mu^T z has the density on [-1, 1]

    f(w; kappa) ∝ exp(kappa w) (1 - w^2)^((d - 3) / 2),

and the tangent part is uniform and independent of w. This module draws w:

* d = 3: the exact inverse CDF, w = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa, written with log1p/expm1.
* every other d >= 2: Wood's (1994) rejection sampler with the exact envelope parameter
  b = (d - 1) / (2 kappa + sqrt(4 kappa^2 + (d - 1)^2)) (no large-kappa approximation, which would change the
  distribution), vectorized so that each round redraws only the entries still rejected.

All of it runs in float64 (float32 on MPS): in float32 the envelope constants lose every digit at small kappa.

Gradients in kappa use implicit reparameterization (Figurnov et al., 2018): for u = F(w; kappa) held fixed,
dw/dkappa = -(dF/dkappa)(w) / f(w). Differentiating through the accepted proposals instead would be biased,
because whether a proposal is accepted depends on kappa (Naesseth et al., 2017). With
d log f / d kappa = t - A_d(kappa), the normalizer cancels from the ratio:

    dw/dkappa =  integral_w^1  (t - A) f(t)/f(w) dt      (used for w >= A: the integrand is >= 0)
              = -integral_-1^w (t - A) f(t)/f(w) dt      (used for w <  A: the integrand is <= 0)

so neither side suffers cancellation. Each side is integrated with Gauss-Legendre quadrature over the part of
the interval where f(t)/f(w) exceeds exp(-QUADRATURE_DECADES_E), bounded with the concavity of log f.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .bessel import mean_resultant_length

# Gauss-Legendre nodes for the implicit gradient; the integrand spans at most QUADRATURE_E_FOLDS e-folds on the
# truncated interval, which this many nodes integrate to about 1e-12 relative (checked against scipy.quad).
QUADRATURE_NODES = 64
QUADRATURE_E_FOLDS = 40.0


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _uniform_open_left(size, like: torch.Tensor) -> torch.Tensor:
    """Uniform draws in (0, 1] (so their log is finite), generated in float32 and promoted to ``like``'s dtype.

    Random bits are drawn in float32 because float64 generation costs several times more; the arithmetic that
    needs float64 (envelope constants at small kappa, 1 - w near 1) is done after promotion.
    """
    return (1.0 - torch.rand(size, device=like.device)).to(like.dtype)


def _sample_w_inverse_cdf_d3(kappa: torch.Tensor) -> torch.Tensor:
    """Exact inverse CDF of w for d = 3: F(w) = (exp(kappa w) - exp(-kappa)) / (exp(kappa) - exp(-kappa))."""
    upper_tail = _uniform_open_left(kappa.numel(), kappa).reshape(kappa.shape)  # 1 - u
    # u + (1 - u) exp(-2 kappa) = 1 + (1 - u) expm1(-2 kappa); log1p keeps small kappa exact.
    return 1.0 + torch.log1p(upper_tail * torch.expm1(-2.0 * kappa)) / kappa


def _gamma_proposals(shape: float, size: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One round of Marsaglia & Tsang's (2000) Gamma(shape, 1) sampler: (draws, accepted mask) of ``size``.

    Vectorized by hand (in place where possible) because torch's gamma kernel would otherwise dominate the
    sampler's cost. shape < 1 uses Gamma(shape) = Gamma(shape + 1) U^(1/shape).
    Rejected entries hold garbage and must be redrawn.
    """
    boosted = shape < 1.0
    offset = (shape + 1.0 if boosted else shape) - 1.0 / 3.0
    scale = 1.0 / math.sqrt(9.0 * offset)
    normal = torch.randn(size, device=like.device).to(like.dtype)
    cube = normal.mul(scale).add_(1.0).pow_(3)
    # log of a non-positive cube is nan, and nan comparisons are False: those entries are rejected.
    bound = torch.log(cube).sub_(cube).add_(1.0).mul_(offset).addcmul_(normal, normal, value=0.5)
    accepted = _uniform_open_left(size, like).log_() < bound
    draws = cube.mul_(offset)
    if boosted:
        draws.mul_(_uniform_open_left(size, like).pow_(1.0 / shape))
    return draws, accepted


def _wood_proposals(
    kappa: torch.Tensor, b: torch.Tensor, x0: torch.Tensor, c: torch.Tensor, dim: int, per_entry: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_entry`` proposals of Wood's sampler for each entry: (proposals, accepted), shapes (N, per_entry).

    The Beta((d-1)/2, (d-1)/2) variate is a ratio of two Gamma draws whose own rejection steps are folded in:
    a proposal counts as accepted only when both Gamma draws and Wood's test accept.
    """
    dim_minus_one = float(dim - 1)
    size = (kappa.numel(), per_entry)
    kappa, b, x0, c = kappa[:, None], b[:, None], x0[:, None], c[:, None]
    gamma_a, accepted_a = _gamma_proposals(dim_minus_one / 2.0, size, kappa)
    gamma_b, accepted_b = _gamma_proposals(dim_minus_one / 2.0, size, kappa)
    epsilon = gamma_a.div_(gamma_a + gamma_b)  # ~ Beta((d-1)/2, (d-1)/2)
    numerator = (1.0 + b).mul(epsilon).neg_().add_(1.0)  # 1 - (1 + b) eps
    proposal = numerator.div_((1.0 - b).mul(epsilon).neg_().add_(1.0))  # / (1 - (1 - b) eps)
    # Accept when kappa w + (d - 1) log(1 - x0 w) - c >= log u.
    log_ratio = (x0 * proposal).neg_().log1p_().mul_(dim_minus_one).addcmul_(kappa, proposal).sub_(c)
    accepted = _uniform_open_left(size, kappa).log_() <= log_ratio
    accepted &= accepted_a
    accepted &= accepted_b
    return proposal, accepted


# After the first round (one proposal per entry), entries still rejected get this many proposals at once, so
# that the loop ends in about two rounds whatever the acceptance rate (each round costs a host sync on GPUs).
RETRY_PROPOSALS = 16


def _sample_w_wood(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """Wood (1994) rejection sampler for w, vectorized over kappa's entries (flat, float64).

    Each round redraws only the entries still rejected, taking the first accepted of their proposals.
    """
    dim_minus_one = float(dim - 1)
    b = dim_minus_one / (2.0 * kappa + torch.sqrt(4.0 * kappa * kappa + dim_minus_one**2))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + dim_minus_one * torch.log1p(-x0 * x0)

    proposal, accepted = _wood_proposals(kappa, b, x0, c, dim, per_entry=1)
    w = proposal.squeeze(1)
    pending = (~accepted.squeeze(1)).nonzero().squeeze(-1)
    while pending.numel() > 0:
        proposal, accepted = _wood_proposals(
            kappa[pending], b[pending], x0[pending], c[pending], dim, per_entry=RETRY_PROPOSALS
        )
        any_accepted = accepted.any(dim=1)
        first = accepted.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first accepted proposal
        w[pending[any_accepted]] = proposal.gather(1, first).squeeze(1)[any_accepted]
        pending = pending[~any_accepted]
    return w


@lru_cache(maxsize=None)
def _gauss_legendre_unit(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss-Legendre quadrature on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    return (nodes + 1.0) / 2.0, weights / 2.0


def _log_density_unnormalized(t: torch.Tensor, kappa: torch.Tensor, half_power: float) -> torch.Tensor:
    """phi(t) = kappa t + ((d - 3)/2) log(1 - t^2), the log of f up to its normalizer."""
    return kappa * t + half_power * torch.log1p(-t * t)


def implicit_dw_dkappa(w: torch.Tensor, kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """dw/dkappa at fixed CDF value for the w-marginal of vMF on S^{d-1} (see the module docstring).

    Args:
        w: (N,) samples in (-1, 1), float64.
        kappa: (N,) concentrations, float64.
        dim: ambient dimension d >= 2.

    Returns:
        (N,) derivatives, float64.
    """
    half_power = (dim - 3) / 2.0
    mean = mean_resultant_length(dim, kappa)
    right = w >= mean  # integrate over [w, 1]; otherwise over [-1, w]
    direction = torch.where(right, 1.0, -1.0).to(w.dtype)
    # w = +-1 has probability zero but can round there in float64 at extreme kappa; keep the logs finite.
    length = torch.where(right, 1.0 - w, 1.0 + w).clamp(min=torch.finfo(w.dtype).tiny)

    # Truncate where f(t)/f(w) < exp(-E). log f is concave for d >= 3 with |phi''(t)| = (d-3)(1+t^2)/(1-t^2)^2,
    # even in t and increasing in |t|, and its mode is t* = kappa / (a + sqrt(a^2 + kappa^2)), a = (d-3)/2.
    if dim == 3:  # log f = kappa t: rises to t = 1 on the right, falls at rate kappa on the left.
        span = torch.where(right, length, torch.minimum(length, QUADRATURE_E_FOLDS / kappa))
    elif dim > 3:
        a = half_power
        mode = kappa / (a + torch.sqrt(a * a + kappa * kappa))
        slope = kappa - 2.0 * a * w / (1.0 - w * w)  # phi'(w)
        # Going away from w: the integrand is monotone when the walk moves away from the mode; on the right
        # side with w below the mode it first rises to the mode and then falls.
        peak = torch.where(right, torch.maximum(w, mode), w)
        descent = torch.clamp(-direction * slope, min=0.0)  # slope of phi along the walk, where it falls
        slope_bound = torch.where(peak == w, QUADRATURE_E_FOLDS / descent, torch.full_like(w, math.inf))
        # Smallest curvature on the walk beyond the peak: at the peak if the walk moves away from 0, else at 0.
        moving_out = (direction * peak) >= 0
        curvature_at = torch.where(moving_out, peak, torch.zeros_like(peak))
        curvature = (dim - 3) * (1.0 + curvature_at**2) / (1.0 - curvature_at**2) ** 2
        rise = _log_density_unnormalized(peak, kappa, half_power) - _log_density_unnormalized(w, kappa, half_power)
        curvature_bound = (peak - w).abs() + torch.sqrt(2.0 * (QUADRATURE_E_FOLDS + rise) / curvature)
        span = torch.minimum(length, torch.minimum(slope_bound, curvature_bound))
    else:  # d = 2: (1 - t^2)^(-1/2) is integrable but not log-concave; exp(kappa (t - w)) bounds the left side.
        span = torch.where(right, length, torch.minimum(length, QUADRATURE_E_FOLDS / kappa))

    nodes, weights = _gauss_legendre_unit(QUADRATURE_NODES)
    nodes = torch.as_tensor(nodes, dtype=w.dtype, device=w.device)
    weights = torch.as_tensor(weights, dtype=w.dtype, device=w.device)
    # Distance from w: h = span (1 - s^2). Where the span reaches the end of [-1, 1], the distance to it is
    # span s^2, whose Jacobian 2 span s removes the (1 - t^2)^((d-3)/2) endpoint singularity at d = 2.
    s = nodes[None, :]
    h = span[:, None] * (1.0 - s * s)  # (N, Q)
    t = w[:, None] + direction[:, None] * h
    distance_to_end = (length - span)[:, None] + span[:, None] * s * s  # 1 -+ t, exactly
    log_ratio = (
        kappa[:, None] * (t - w[:, None])
        + half_power * (torch.log(distance_to_end) + torch.log1p(direction[:, None] * t) - torch.log(length)[:, None]
                        - torch.log1p(direction * w)[:, None])
    )
    integrand = (t - mean[:, None]) * torch.exp(log_ratio) * 2.0 * span[:, None] * s
    integral = (integrand * weights).sum(dim=1)
    return direction * integral


class _RadialSample(torch.autograd.Function):
    """w = mu^T z drawn exactly; backward uses the implicit reparameterization gradient in kappa."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, dim: int) -> torch.Tensor:
        work = kappa.detach().to(_work_dtype(kappa.device)).reshape(-1)
        w = _sample_w_inverse_cdf_d3(work) if dim == 3 else _sample_w_wood(work, dim)
        w = w.reshape(kappa.shape)
        ctx.dim = dim
        ctx.save_for_backward(kappa, w)
        return w

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_w: torch.Tensor):
        kappa, w = ctx.saved_tensors
        derivative = implicit_dw_dkappa(w.reshape(-1), kappa.detach().to(w.dtype).reshape(-1), ctx.dim)
        return (grad_w * derivative.reshape(w.shape)).to(kappa.dtype), None


def sample_radial(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """Draw w = mu^T z for z ~ vMF(mu, kappa) on S^{dim-1}, one per entry of ``kappa``.

    Args:
        kappa: concentrations of any shape (entries > 0); gradients flow to it by implicit reparameterization.
        dim: ambient dimension d >= 2.

    Returns:
        w with the shape of ``kappa``, in float64 (float32 on MPS) so that 1 - w keeps its digits near w = 1.
    """
    return _RadialSample.apply(kappa, dim)
