"""The radial part of von Mises-Fisher sampling: w = mu^T z, exactly, with implicit reparameterization gradients.

For z ~ vMF(mu, kappa) on S^{d-1}, the component w = mu^T z has the density on [-1, 1]

    f(w; kappa) ∝ exp(kappa w) (1 - w^2)^((d - 3) / 2),

and the tangent part is uniform and independent of w. This module draws w:

* d = 3: the exact inverse CDF, w = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa, written with log1p/expm1.
* every other d >= 2: Wood's (1994) rejection sampler with the exact envelope parameter
  b = (d - 1) / (2 kappa + sqrt(4 kappa^2 + (d - 1)^2)) (no large-kappa approximation, which would change the
  distribution), vectorized so that each round redraws only the entries still rejected. Its Beta proposal
  comes from Ulrich's (1984) polar method, and its acceptance test is rewritten without the O(kappa)
  cancellation of the textbook form (see ``_wood_proposals``).

The envelope constants are computed in float64 (float32 on MPS), since in float32 they lose every digit at
small kappa; the proposals run in the distribution's dtype. The sampler returns 1 - w, which keeps its
relative precision where w rounds to 1.

Gradients in kappa use implicit reparameterization (Figurnov et al., 2018): for u = F(w; kappa) held fixed,
dw/dkappa = -(dF/dkappa)(w) / f(w). Differentiating through the accepted proposals instead would be biased,
because whether a proposal is accepted depends on kappa (Naesseth et al., 2017). With
d log f / d kappa = t - A_d(kappa), the normalizer cancels from the ratio:

    dw/dkappa =  integral_w^1  (t - A) f(t)/f(w) dt      (used for w >= A: the integrand is >= 0)
              = -integral_-1^w (t - A) f(t)/f(w) dt      (used for w <  A: the integrand is <= 0)

so neither side suffers cancellation. Each side is integrated with Gauss-Legendre quadrature over the part of
the interval where f(t)/f(w) exceeds exp(-e_folds), bounded from above with Newton steps that the concavity of
log f keeps on the safe side (``_quadrature_span``). The node count and e_folds depend on the precision wanted
(``QUADRATURE``): the per-node sum, which is the whole cost at large batches, runs in float32 for float32
distributions, with log f written per node as one log of a product of two affine functions of s^2 plus one linear
term.
"""

from __future__ import annotations

import math
from functools import cache
from typing import cast

import numpy as np
import torch

from .bessel import _shaped, cached_constant, host_int, mean_resultant_length, work_dtype

# The implicit gradient's quadrature, per dtype it is computed in: Gauss-Legendre nodes, and how many e-folds of
# the integrand f(t)/f(w) the truncated interval keeps (its tail beyond is below exp(-e_folds) relative). float64
# keeps about 1e-10 relative (tests check 1e-8 against mpmath's adaptive quadrature); float32 keeps a few float32
# ulps of the float64 value (tests check it). The slowest convergence is at d = 2 and 4, where (1 +- t)^((d-3)/2)
# has a branch point just beyond the far end of the interval when w is near 1.
QUADRATURE = {torch.float64: (64, 30.0), torch.float32: (24, 16.0)}
# Gauss-Legendre nodes and weights on [-1, 1] for each node count of QUADRATURE, as Python floats (numpy once,
# at import; a compiled graph then sees plain constants).
_LEGENDRE_RULES = {
    count: tuple(tuple(float(v) for v in values) for values in np.polynomial.legendre.leggauss(count))
    for count, _ in QUADRATURE.values()
}
# Above this dimension float32 gradients take the float64 quadrature: the integrand's log carries a factor
# (d - 3) / 2, which multiplies float32 rounding errors.
FLOAT32_QUADRATURE_MAX_DIM = 96
# Newton steps towards the cut where log f(t)/f(w) = -e_folds (see ``_quadrature_span``).
TRUNCATION_NEWTON_STEPS = 2


def _sample_one_minus_w_inverse_cdf_d3(kappa: torch.Tensor) -> torch.Tensor:
    """1 - w by the exact inverse CDF for d = 3: F(w) = (exp(kappa w) - exp(-kappa)) / (exp(kappa) - exp(-kappa))."""
    upper_tail = 1.0 - torch.rand(kappa.shape, dtype=kappa.dtype, device=kappa.device)  # 1 - u, in (0, 1]
    # w = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa, and u + (1 - u) exp(-2 kappa) = 1 + (1 - u) expm1(-2 kappa):
    # log1p keeps small kappa exact.
    return -torch.log1p(upper_tail * torch.expm1(-2.0 * kappa)) / kappa


def _symmetric_beta_centered(shape: float, uniforms: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """T = 2 B - 1 for B ~ Beta(shape, shape), shape >= 1/2, by Ulrich's (1984) polar method (no rejection).

    A point of the unit disk with density ∝ (1 - |p|^2)^(shape - 3/2) has first coordinate T with density
    ∝ (1 - t^2)^(shape - 1), i.e. (1 + T) / 2 ~ Beta(shape, shape). Its squared radius has the CDF
    1 - (1 - q)^(shape - 1/2), so R^2 = 1 - (1 - U)^(1 / (shape - 1/2)), and its angle is uniform.

    Args:
        shape: the Beta parameter.
        uniforms: (2, ...) independent U[0, 1) draws (a tensor, or a pair of tensors).

    Returns:
        T with shape ``uniforms.shape[1:]``.
    """
    angle_uniform, radius_uniform = uniforms.unbind(0) if isinstance(uniforms, torch.Tensor) else uniforms
    # out of place first: in-place operations on the outputs of unbind are replayed wrongly by jit.trace
    angle_cos = torch.mul(angle_uniform, 2.0 * math.pi).cos_()
    if shape == 0.5:  # the arcsine law: the point lies on the circle
        return angle_cos
    # 1 - U has the law of U, so R^2 = 1 - U^(1/(shape - 1/2)) = -expm1(log(U) / (shape - 1/2)), exact for U near
    # 0 and near 1 (U = 0, probability 2^-24 in float32, gives R = 1)
    radius = torch.log(radius_uniform).mul_(1.0 / (shape - 0.5)).expm1_().neg_().sqrt_()
    return angle_cos.mul_(radius)


def _wood_proposals(constants: torch.Tensor, dim: int, per_entry: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_entry`` proposals of Wood's sampler per entry: (1 - w, rejected), shapes (per_entry, N).

    With T = 2 eps - 1 for Wood's eps ~ Beta((d-1)/2, (d-1)/2) and x0 = (1 - b) / (1 + b), Wood's proposal
    w = (1 - (1 + b) eps) / (1 - (1 - b) eps) simplifies to w = (x0 - T) / q with q = 1 - x0 T, so
    1 - w = (1 - x0) (1 + T) / q without cancellation near w = 1; and his test
    kappa w + (d - 1) log(1 - x0 w) - c >= log u,  c = kappa x0 + (d - 1) log(1 - x0^2),
    becomes u <= exp(-kappa (1 - x0^2) T / q - (d - 1) log q), whose terms are O(d) rather than O(kappa):
    the cancellation that makes the textbook form unusable in float32 at large kappa is gone.
    ``constants`` is (3, N): -kappa (1 - x0^2), -x0 and 1 - x0 per entry (``_wood_constants``), in the dtype the
    proposals are computed in. A nan test value counts as accepted, so a nan (or infinite) concentration gives a
    nan sample instead of an endless loop.
    """
    neg_kappa_shrunk, neg_x0, one_minus_x0 = constants.unbind(0)  # (N,) each, broadcast against (per_entry, N)
    uniform_angle, uniform_radius, uniform_test = torch.rand(
        (3, per_entry, constants.shape[1]), dtype=constants.dtype, device=constants.device
    ).unbind(0)
    t = _symmetric_beta_centered((dim - 1) / 2.0, (uniform_angle, uniform_radius))
    neg_x0_t = neg_x0 * t
    q = neg_x0_t + 1.0  # 1 - x0 T, in (0, 2)
    one_minus_w = (t + 1.0).mul_(one_minus_x0).div_(q)
    # log q as log1p(-x0 T): exact when x0 T is tiny (small kappa), where (d - 1) log q would amplify rounding
    log_ratio = torch.add(torch.mul(neg_kappa_shrunk, t).div_(q), neg_x0_t.log1p_(), alpha=1.0 - dim)
    rejected = uniform_test > torch.exp(log_ratio)
    return one_minus_w, rejected


# Round k (k = 0, 1, ...) draws min(2^k p, MAX_PROPOSALS_PER_ENTRY) proposals for each entry still rejected,
# with p = 1 for large batches (few wasted proposals) and p = SMALL_BATCH_PROPOSALS below SMALL_BATCH entries,
# where the cost is the number of rounds (operations and, on GPUs, a host sync each), not their size.
MAX_PROPOSALS_PER_ENTRY = 16
SMALL_BATCH = 4096
SMALL_BATCH_PROPOSALS = 4


def _wood_constants(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """(3, N): -kappa (1 - x0^2), -x0 and 1 - x0 of Wood's envelope, each without cancellation.

    Wood's exact envelope parameter is b = (d - 1) / (2 kappa + s), s = sqrt(4 kappa^2 + (d - 1)^2) (no
    large-kappa approximation), and x0 = (1 - b) / (1 + b). With a = (d - 1) / 2, r = s / 2 = hypot(kappa, a) and
    r^2 - a^2 = kappa^2: x0 = kappa / (r + a) and 1 - x0 = a (r + kappa + a) / ((r + kappa) (r + a)). The signs
    are the proposals' (``_wood_proposals``), which then need no negations.
    """
    half = (dim - 1) / 2.0
    root = torch.hypot(kappa, cached_constant(_scalar, half, kappa.dtype, kappa.device))
    neg_root_plus_half = torch.rsub(root, -half)  # -(r + a)
    root_plus_kappa = root + kappa
    neg_x0 = kappa / neg_root_plus_half
    one_minus_x0 = (root_plus_kappa + half).div_(root_plus_kappa * neg_root_plus_half).mul_(-half)
    neg_kappa_shrunk = torch.mul(kappa, one_minus_x0).mul_(neg_x0 - 1.0)  # -kappa (1 - x0) (1 + x0)
    return torch.stack([neg_kappa_shrunk, neg_x0, one_minus_x0])


@cache
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.full((), value, dtype=dtype, device=device)


def _sample_one_minus_w_wood(kappa: torch.Tensor, dim: int, proposal_dtype: torch.dtype) -> torch.Tensor:
    """1 - w by Wood's (1994) rejection sampler, vectorized over kappa's entries (flat, float64 in and out).

    The envelope constants are computed in float64 and the proposals in ``proposal_dtype`` (float32 for
    float32 distributions: half the memory traffic, and the rewritten test has no cancellation to lose).
    Each round redraws only the entries still rejected, taking the first accepted of their proposals.
    The Beta((d-1)/2, (d-1)/2) variate comes from Ulrich's polar method, which needs no rejection of its own.
    """
    constants = _wood_constants(kappa, dim).to(proposal_dtype)
    one_minus_w: torch.Tensor  # set by the first round
    pending: torch.Tensor | None = None  # indices still rejected (None: every entry, first round)
    per_entry = 1 if kappa.numel() >= SMALL_BATCH else SMALL_BATCH_PROPOSALS
    while True:
        proposal, rejected = _wood_proposals(constants if pending is None else constants[:, pending], dim, per_entry)
        # per entry: 1 if every proposal was rejected, and the index of the first accepted one (torch.min returns
        # the first index of the minimum)
        all_rejected, first = rejected.to(torch.uint8).min(dim=0, keepdim=True)
        chosen = proposal.gather(0, first)[0]
        if pending is None:
            one_minus_w = chosen  # rejected entries hold garbage until a later round overwrites them
            if not all_rejected.any():
                break
            pending = all_rejected[0].nonzero()[:, 0]
        else:
            all_rejected = all_rejected[0].bool()
            accepted = ~all_rejected
            one_minus_w[pending[accepted]] = chosen[accepted]
            pending = pending[all_rejected]
            if pending.numel() == 0:
                break
        per_entry = min(2 * per_entry, MAX_PROPOSALS_PER_ENTRY)
    return one_minus_w.to(kappa.dtype)


# In a compiled graph every round draws this many proposals for every entry: no indexing by data-dependent sets.
GRAPH_PROPOSALS_PER_ENTRY = 4


def _sample_one_minus_w_wood_graph(kappa: torch.Tensor, dim: int, proposal_dtype: torch.dtype) -> torch.Tensor:
    """1 - w by Wood's sampler with a fixed shape at every step, for ``torch.compile(fullgraph=True)``.

    One vectorized round of GRAPH_PROPOSALS_PER_ENTRY proposals per entry, then, only while some entry is still
    rejected, more such rounds inside ``while_loop`` (a loop in the graph: no host synchronisation decides the
    round count, and no graph break). An entry keeps the first proposal it accepts, so every sample is exact,
    as in ``_sample_one_minus_w_wood``; entries already accepted ignore later rounds.
    """
    constants = _wood_constants(kappa, dim).to(proposal_dtype)

    def one_round(one_minus_w: torch.Tensor, accepted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proposal, rejected = _wood_proposals(constants, dim, GRAPH_PROPOSALS_PER_ENTRY)
        first = rejected.to(torch.uint8).argmin(dim=0, keepdim=True)  # index of the first accepted proposal
        chosen = proposal.gather(0, first).squeeze(0)
        newly = ~rejected.all(dim=0) & ~accepted
        return torch.where(newly, chosen, one_minus_w), accepted | newly

    start = torch.zeros(kappa.shape, dtype=proposal_dtype, device=kappa.device)
    state = one_round(start, torch.zeros(kappa.shape, dtype=torch.bool, device=kappa.device))
    one_minus_w, _ = torch._higher_order_ops.while_loop(lambda _, accepted: ~accepted.all(), one_round, state)
    return one_minus_w.to(kappa.dtype)


@cache
def _quadrature_rule(
    num_nodes: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss-Legendre on [0, 1] for the substitution h = span (1 - s^2), cached: 1 - s^2 and s^2, shapes (Q,),
    and (Q, 2) weights: the Jacobian weights 2 s weight_j, and those times 1 - s^2.

    The integral of g over h in [0, span] is span * sum_j g(span (1 - s_j^2)) * 2 s_j weight_j.
    """
    nodes, weights = (torch.tensor(values, dtype=torch.float64) for values in _LEGENDRE_RULES[num_nodes])
    s, weights = (nodes + 1.0) / 2.0, weights / 2.0
    jacobian_weights = 2.0 * s * weights
    both = torch.stack([jacobian_weights, jacobian_weights * (1.0 - s * s)], dim=1)
    return cast(
        "tuple[torch.Tensor, torch.Tensor, torch.Tensor]",
        tuple(values.to(dtype=dtype, device=device) for values in (1.0 - s * s, s * s, both)),
    )


def _dw_dkappa_d3(w: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """dw/dkappa in closed form for d = 3, where F(w) = (exp(kappa w) - exp(-kappa)) / (2 sinh kappa):
    dw/dkappa = [(1 - w) - 2 exp(-kappa (1 + w)) expm1(-kappa (1 - w)) / expm1(-2 kappa)] / kappa, every term
    bounded (no overflow at large kappa)."""
    one_minus_w = 1.0 - w
    tail = torch.exp(-kappa * (1.0 + w)) * torch.expm1(-kappa * one_minus_w) / torch.expm1(-2.0 * kappa)
    return (one_minus_w - 2.0 * tail) / kappa


def _quadrature_span(w, kappa, right, direction, length, far, dim, e_folds):
    """How far from w the integrand f(t)/f(w) stays above exp(-e_folds) (an upper bound), shape (N,).

    For d > 3, log f = phi is strictly concave, with its mode at t* = kappa / (a + sqrt(a^2 + kappa^2)),
    a = (d-3)/2, and the mean A lies below the mode. So walking left from w < A the integrand only falls, and
    walking right from w >= A it rises to max(w, t*) and then falls. In the walk distance h, with 1 -+ t =
    length - h and 1 +- t = far + h,

        g(h) = phi(w + direction h) - phi(w) + e_folds
             = direction kappa h + a log((length - h) (far + h) / (length far)) + e_folds

    is concave and decreasing beyond the peak, where its root is the cut. Its tangent lies above it, so a Newton
    step from any point beyond the peak lands where g <= 0, beyond the root (an upper bound), and further steps
    decrease to the root. The steps start halfway between the peak and the end of [-1, 1]. For d = 3
    log f = kappa t: the right side rises to t = 1, the left falls at rate kappa; for d = 2 (log f convex),
    exp(kappa (t - w)) bounds the left side in the same way.
    """
    if dim <= 3:
        return torch.where(right, length, torch.clamp(e_folds / kappa, max=length))
    a = (dim - 3) / 2.0
    mode = kappa / torch.hypot(kappa, cached_constant(_scalar, a, kappa.dtype, kappa.device)).add_(a)
    zero = cached_constant(_scalar, 0.0, kappa.dtype, kappa.device)
    peak = torch.where(right, (mode - w).clamp_(min=0.0), zero)  # distance from w to the peak of the walk
    h = peak.add_(length).mul_(0.5)
    top = length * (1.0 - 2.0**-20)  # g = -inf at the end itself
    slope_along = direction * kappa
    scale = torch.reciprocal(length * far)
    length_minus_far = length - far
    for _ in range(TRUNCATION_NEWTON_STEPS):
        product = (length - h) * (far + h)
        value = torch.log(product * scale).mul_(a).addcmul_(slope_along, h).add_(e_folds)
        derivative = torch.addcdiv(slope_along, torch.add(length_minus_far, h, alpha=-2.0), product, value=a)
        h = torch.addcdiv(h, value, derivative, value=-1.0).minimum(top)
    # beyond the top, or nan where w rounded to +-1: take the whole side
    return torch.where(h < top, h, length)


def implicit_dw_dkappa(
    w: torch.Tensor, kappa: torch.Tensor, dim: int, mean: torch.Tensor | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """dw/dkappa at fixed CDF value for the w-marginal of vMF on S^{d-1} (see the module docstring).

    Closed form for d = 3; Gauss-Legendre quadrature over the truncated side integral otherwise. The
    per-sample bookkeeping runs in the dtype of ``w``; the sum over the quadrature nodes, which is the cost, in
    ``dtype`` with the node count and truncation of ``QUADRATURE[dtype]``.

    Args:
        w: (N,) samples in (-1, 1), float64 (float32 on MPS).
        kappa: (N,) concentrations, dtype of ``w``.
        dim: ambient dimension d >= 2.
        mean: (N,) A_d(kappa) = E[w] if the caller has it (dtype of ``w``); evaluated here otherwise.
        dtype: float64 or float32, the precision of the result (default: that of ``w``).

    Returns:
        (N,) derivatives, in ``dtype``.
    """
    dtype = w.dtype if dtype is None else dtype
    if dim == 3:
        return _dw_dkappa_d3(w, kappa).to(dtype)
    if mean is None:
        mean = mean_resultant_length(dim, kappa)
    num_nodes, e_folds = QUADRATURE[dtype]
    a = (dim - 3) / 2.0
    right = w >= mean  # integrate over [w, 1]; otherwise over [-1, w]
    direction = torch.where(
        right, cached_constant(_scalar, 1.0, w.dtype, w.device), cached_constant(_scalar, -1.0, w.dtype, w.device)
    )
    along = direction * w
    # w = +-1 has probability zero but can round there in float64 at extreme kappa; keep the logs finite.
    length = torch.rsub(along, 1.0).clamp_(min=torch.finfo(w.dtype).tiny)  # to the end: 1 -+ w
    far = along + 1.0  # to the other end: 1 +- w
    span = _quadrature_span(w, kappa, right, direction, length, far, dim, e_folds)

    # Distance from w: h = span (1 - s^2). Where the span reaches the end of [-1, 1], the distance to it is
    # span s^2, whose Jacobian 2 span s removes the (1 - t^2)^((d-3)/2) endpoint singularity at d = 2.
    # log f(t)/f(w) = direction kappa h + a log[(1 -+ t) / length * (1 +- t) / far], with
    # (1 -+ t) / length = (length - span) / length + (span / length) s^2 (exact where the span reaches the end)
    # and (1 +- t) / far = (1 + span / far) - (span / far) s^2: per node, two fused products, a log and an exp.
    one_minus_s2, s2, weights = cached_constant(_quadrature_rule, num_nodes, dtype, w.device)
    span_over_far, span_along = span / far, direction * span
    # integral of (t - A) f(t)/f(w) over the walk = span [(w - A) sums_0 + direction span sums_1] (sums below),
    # and dw/dkappa is direction times it: coefficients direction span (w - A) and span^2.
    near, slope, far_base, far_slope, along = (
        torch.stack(  # (N, 1) each
            [(length - span) / length, span / length, 1.0 + span_over_far, -span_over_far, kappa * span_along]
        )
        .to(dtype)
        .unsqueeze(-1)
        .unbind(0)
    )
    coefficients = torch.stack([(w - mean) * span_along, span * span], dim=1).to(dtype)  # (N, 2)
    log_ratio = torch.addcmul(near, slope, s2)  # (N, Q)
    log_ratio = log_ratio.mul_(torch.addcmul(far_base, far_slope, s2)).log_().mul_(a)
    log_ratio = log_ratio.addcmul_(along, one_minus_s2)
    sums = log_ratio.exp_() @ weights  # (N, 2): sum of f(t)/f(w) and of (h / span) f(t)/f(w), with weights
    return sums.mul_(coefficients).sum(dim=1)


def _quadrature_dtype(result_dtype: torch.dtype, work: torch.dtype, dim: int) -> torch.dtype:
    """The dtype of the implicit gradient's quadrature: float32 for float32 (or lower) results at moderate d."""
    if result_dtype != torch.float64 and dim <= FLOAT32_QUADRATURE_MAX_DIM:
        return torch.float32
    return work


class _ImplicitDerivative(torch.autograd.Function):
    """dw/dkappa of ``implicit_dw_dkappa``, attached to the graph of (w, kappa) so that a second backward is refused.

    Its own derivatives (what d^2 z / d kappa^2 would need) are not implemented: rather than a gradient that
    silently lacks them, a second backward through it raises.
    """

    @staticmethod
    def forward(ctx, w, kappa, derivative):
        return derivative.to(dtype=w.dtype, copy=True)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(
            "VonMisesFisher.rsample is differentiable once in the concentration (implicit reparameterization): "
            "second derivatives of samples in the concentration are not implemented. Second derivatives in loc, "
            "and of log_prob, entropy and the KLs in both parameters, are."
        )


class _RadialSample(torch.autograd.Function):
    """(w, sqrt(1 - w^2)) with w = mu^T z drawn exactly; backward: implicit reparameterization in kappa.

    The backward is written with the outputs themselves (attached to the graph), so a second backward sees the
    dependence of the gradient on w; the implicit derivative dw/dkappa refuses a second backward (see
    ``_ImplicitDerivative``).
    """

    @staticmethod
    def forward(
        ctx, kappa: torch.Tensor, dim: int, mean: torch.Tensor | None, kappa_work: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dim = host_int(dim)  # a Python int also under jit.trace (its sizes are tensors there)
        working = work_dtype(kappa.device)
        work = kappa.detach().to(working) if kappa_work is None else kappa_work
        work = work if work.dim() == 1 else work.reshape(-1)
        if dim == 3:
            one_minus_w = _sample_one_minus_w_inverse_cdf_d3(work)
        else:
            proposal_dtype = working if kappa.dtype == torch.float64 else torch.float32
            sampler = _sample_one_minus_w_wood_graph if torch.compiler.is_compiling() else _sample_one_minus_w_wood
            one_minus_w = sampler(work, dim, proposal_dtype)
        one_minus_w = _shaped(one_minus_w, kappa.shape)
        w = 1.0 - one_minus_w
        tangent_length = torch.sqrt(one_minus_w * (2.0 - one_minus_w))  # sqrt(1 - w^2) without cancellation
        ctx.dim, ctx.mean, ctx.kappa_dtype = dim, mean, kappa.dtype  # mean: a detached tensor or None
        w_out = w.to(kappa.dtype, copy=True)
        tangent_out = tangent_length.to(kappa.dtype, copy=True)
        ctx.save_for_backward(kappa, work, w, w_out, tangent_out)
        return w_out, tangent_out

    @staticmethod
    def backward(ctx, grad_w: torch.Tensor, grad_tangent_length: torch.Tensor):
        kappa, kappa_work, w_work, w, tangent_length = ctx.saved_tensors  # *_work: in the work dtype, kappa_work flat
        mean = None if ctx.mean is None else ctx.mean.to(w_work.dtype)
        derivative = implicit_dw_dkappa(
            _flat(w_work),
            kappa_work,
            ctx.dim,
            None if mean is None else _flat(mean),
            dtype=_quadrature_dtype(ctx.kappa_dtype, w_work.dtype, ctx.dim),
        )
        derivative = _shaped(derivative, w.shape)
        if torch.is_grad_enabled():  # create_graph: keep the dependence on w and refuse d^2 w / d kappa^2
            derivative = _ImplicitDerivative.apply(w, kappa, derivative)
        # d sqrt(1 - w^2) / dw = -w / sqrt(1 - w^2); w = +-1 has probability zero but must not give nan.
        chain = torch.addcdiv(
            grad_w, grad_tangent_length * w, tangent_length.clamp(min=torch.finfo(w.dtype).tiny), value=-1.0
        )
        return chain.mul_(derivative.to(w.dtype)), None, None, None


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dim() == 1 else tensor.reshape(-1)


def gradient_needs_mean(dim: int) -> bool:
    """Whether the kappa-gradient of ``sample_radial`` uses A_d(kappa) (all d but 3, which has a closed form)."""
    return dim != 3


def sample_radial(
    kappa: torch.Tensor, dim: int, mean: torch.Tensor | None = None, kappa_work: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw w = mu^T z for z ~ vMF(mu, kappa) on S^{dim-1}, one per entry of ``kappa``, and sqrt(1 - w^2).

    Both are computed from 1 - w in float64 (float32 on MPS) before the cast to ``kappa``'s dtype, so the
    tangent length keeps its digits where w rounds to 1.

    Args:
        kappa: concentrations of any shape (entries > 0); gradients flow to it by implicit reparameterization.
        dim: ambient dimension d >= 2.
        mean: A_d(kappa) shaped like ``kappa``, if the caller has it: saves a Bessel evaluation in backward.
        kappa_work: ``kappa`` in float64 (float32 on MPS), if the caller has it: saves a cast.

    Returns:
        (w, sqrt(1 - w^2)), each with the shape and dtype of ``kappa``.
    """
    if mean is not None:
        mean = mean.detach() if mean.requires_grad else mean
        if mean.shape != kappa.shape:
            raise ValueError(f"mean must have kappa's shape {tuple(kappa.shape)}, got {tuple(mean.shape)}")
    if kappa_work is not None:
        if kappa_work.shape != kappa.shape or kappa_work.dtype != work_dtype(kappa.device):
            raise ValueError(f"kappa_work must have kappa's shape {tuple(kappa.shape)} and the work dtype")
        kappa_work = kappa_work.detach() if kappa_work.requires_grad else kappa_work
    return _RadialSample.apply(kappa, dim, mean, kappa_work)
