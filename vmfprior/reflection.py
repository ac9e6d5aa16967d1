"""The last step of von Mises-Fisher sampling: rotate a sample drawn around e_1 to the mean direction mu.

A sample around e_1 is z0 = w e_1 + c g, with g isotropic in the plane orthogonal to e_1 (g_1 = 0) and
c = sqrt(1 - w^2) / |g|. Any orthogonal map M with M e_1 = mu takes it to a sample around mu.

The textbook map is the Householder reflection with v = e_1 - mu (Davidson et al., 2018). It forms 1 - mu_1,
which cancels catastrophically as mu -> e_1 (a float32 mu 1e-8 away from e_1 gives points 0.9 off the sphere),
and its derivative in mu is singular there: at mu = e_1 exactly every per-sample loc-gradient is 0, and at an
angle t from e_1 the gradient's spread grows like 1/t. Here the reflection is taken along the better of the two
vectors u = e_1 + s mu, s = sign(mu_1) (s = 1 at mu_1 = 0):

    H_u = I - 2 u u^T / |u|^2,   u_1 = 1 + |mu_1| >= 1,   |u|^2 = u_1^2 + |mu_{2:}|^2 >= 1.

For a unit mu, |u|^2 = 2 u_1, so H_u e_1 = e_1 - u = -s mu, and M = -s H_u is orthogonal with M e_1 = mu.
Expanded, with gamma = 2 u.z0 / |u|^2 = 2 (w u_1 + s c mu.g) / |u|^2,

    M z0 = gamma mu - s c g + s (gamma - w) e_1.

Nothing cancels (u_1 >= 1 and |u|^2 >= 1 for every unit mu, e_1 and -e_1 included), and M is a smooth
function of mu on each half-sphere, so its derivative in mu is bounded everywhere. For mu_1 < 0 this is exactly
the textbook reflection. The switch at mu_1 = 0 changes which rotation is used, not the distribution of M z0
(g is isotropic and independent of w), so samples stay exact and the gradient stays unbiased on both sides.

The map is written with plain torch operations: autograd differentiates it to every order (Hessian-vector
products in mu are correct), and it traces, exports and compiles without a custom function.
"""

from __future__ import annotations

from functools import cache

import torch

from .bessel import cached_constant

__all__ = ["reflect_to_mean_direction", "row_dot"]

# Rows at most this long take the matrix-vector route in row_dot (the CPU crossover is recorded in BENCHMARKS.md).
SHORT_ROW = 8


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products along the last dimension, broadcasting: (..., d), (..., d) -> (...).

    For short rows (d <= SHORT_ROW) this is a product with a ones vector (a BLAS matrix-vector product):
    torch's reductions over a short last dimension are slower on CPUs (BENCHMARKS.md). Longer rows use ``vecdot``.
    Mixed floating dtypes follow torch's promotion (float32 with float64 gives float64).
    """
    if a.dtype != b.dtype:  # follow torch's type promotion (vecdot itself refuses mixed dtypes)
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    if max(a.shape[-1], b.shape[-1]) > SHORT_ROW:
        return torch.linalg.vecdot(a, b)
    product = a * b
    return product @ torch.ones(product.shape[-1], dtype=product.dtype, device=product.device)


def _reflect(w, tangent_length, normal, normal_length, loc):
    """M z0 of the module docstring in plain torch operations (what autograd differentiates to every order), with
    h = |u|^2 / 2 = (1 + 2 |mu_1| + |mu|^2) / 2 (every term >= 0, for any mu) and gamma = (w u_1 + s c mu.g) / h:
    the operations of ``_reflect_forward``, so that autograd's first derivatives round as ``_Reflect.backward``'s."""
    first = loc[..., 0]
    sign = 1.0 - 2.0 * (first < 0).to(loc.dtype)  # s = sign(mu_1), +1 at 0; a constant for autograd
    u_first = 1.0 + sign * first  # 1 + |mu_1| (written so that its derivative is s also at mu_1 = 0)
    half_norm_sq = torch.add(u_first, row_dot(loc, loc), alpha=0.5) - 0.5
    signed_scale = tangent_length / normal_length * sign  # s c
    gamma = torch.addcmul(w * u_first, signed_scale, row_dot(normal, loc)) / half_norm_sq
    z = torch.addcmul(gamma.unsqueeze(-1) * loc, signed_scale.unsqueeze(-1), normal, value=-1.0)
    first_column = z[..., :1] + ((gamma - w) * sign).unsqueeze(-1)
    return torch.cat([first_column, z[..., 1:]], dim=-1)


@cache
def _signs(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """+1 and -1 as 0-dim tensors (a selection between tensors costs no scalar-to-tensor conversions)."""
    return torch.ones((), dtype=dtype, device=device), torch.full((), -1.0, dtype=dtype, device=device)


def _reflect_forward(w, tangent_length, normal, normal_length, loc):
    """The values of ``_reflect`` in fewer operations (no graph is recorded inside ``_Reflect.forward``).

    With h = |u|^2 / 2 = (1 + 2 |mu_1| + |mu|^2) / 2 (every term >= 0, for any mu), gamma = (w u_1 + s c mu.g) / h,
    and the e_1 term is added to the first column in place.
    """
    first = loc[..., 0]
    plus, minus = cached_constant(_signs, loc.dtype, loc.device)
    sign = torch.where(first < 0, minus, plus)  # s = sign(mu_1), +1 at 0
    u_first = torch.addcmul(plus, sign, first)  # 1 + s mu_1 = 1 + |mu_1|
    half_norm_sq = torch.add(u_first, row_dot(loc, loc), alpha=0.5).sub_(0.5)  # |u|^2 / 2 >= 1/2
    signed_scale = torch.div(tangent_length, normal_length).mul_(sign)  # s c
    loc_dot_normal = row_dot(normal, loc)
    gamma = torch.addcmul(w * u_first, signed_scale, loc_dot_normal).div_(half_norm_sq)
    z = torch.addcmul(gamma.unsqueeze(-1) * loc, signed_scale.unsqueeze(-1), normal, value=-1.0)
    z.select(-1, 0).add_((gamma - w).mul_(sign))
    return z, (sign, u_first, half_norm_sq, signed_scale, loc_dot_normal, gamma)


class _Reflect(torch.autograd.Function):
    """``_reflect`` with a first-order backward written out (a few fused passes instead of autograd's chain of
    small operations, which at VAE batch sizes is the cost), and autograd's own derivatives of ``_reflect`` when
    a graph of the gradient is asked for (``create_graph=True``), so second derivatives are exact.

    With upstream gradient dz, h = |u|^2 / 2 = (1 + 2 |mu_1| + |mu|^2) / 2 and t = (dz.mu + s dz_1) / h (the
    gradient reaching gamma's numerator w u_1 + s c mu.g):
        dL/dw  = t u_1 - s dz_1
        dL/dc  = s (t mu.g - dz.g)
        dL/dmu = gamma dz + t s c g - t gamma mu + t s (w - gamma) e_1
    (from d gamma / d mu = [s w e_1 + s c g - gamma (s e_1 + mu)] / h, as dh/dmu = s e_1 + mu for any mu). The
    tests check both orders against finite differences (gradcheck, gradgradcheck).
    """

    @staticmethod
    def forward(ctx, w, tangent_length, normal, normal_length, loc):
        z, saved = _reflect_forward(w, tangent_length, normal, normal_length, loc)
        ctx.save_for_backward(w, tangent_length, normal, normal_length, loc, *saved)
        return z

    @staticmethod
    def backward(ctx, grad_z):
        (
            w,
            tangent_length,
            normal,
            normal_length,
            loc,
            sign,
            u_first,
            half_norm_sq,
            signed_scale,
            loc_dot_normal,
            gamma,
        ) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain operations, to every order
            inputs = [w, tangent_length, loc]
            needed = [
                ctx.needs_input_grad[0] and w.requires_grad,
                ctx.needs_input_grad[1] and tangent_length.requires_grad,
                ctx.needs_input_grad[4] and loc.requires_grad,
            ]
            z = _reflect(w, tangent_length, normal, normal_length, loc)
            grads = iter(
                torch.autograd.grad(
                    z, [x for x, n in zip(inputs, needed) if n], grad_z, create_graph=True, allow_unused=True
                )
            )
            result = [next(grads) if n else None for n in needed]
            return result[0], result[1], None, None, result[2]
        # z = gamma mu - s c g + s (gamma - w) e_1, gamma = (w u_1 + s c mu.g) / h, u_1 = 1 + s mu_1, h = |u|^2 / 2
        grad_first = grad_z[..., 0]
        signed_grad_first = sign * grad_first
        t = torch.add(row_dot(grad_z, loc), signed_grad_first).div_(half_norm_sq)  # d/d(numerator of gamma)
        grad_w = torch.mul(t, u_first).sub_(signed_grad_first)
        grad_tangent_length = None
        if ctx.needs_input_grad[1]:
            grad_signed_scale = torch.mul(t, loc_dot_normal).sub_(row_dot(grad_z, normal))
            grad_tangent_length = grad_signed_scale.mul_(sign).div_(normal_length).sum_to_size(tangent_length.shape)
        grad_loc = None
        if ctx.needs_input_grad[4]:
            # d gamma / d mu = [s w e_1 + s c g - gamma (s e_1 + mu)] / h (from dh/dmu = s e_1 + mu), so
            # dL/dmu = gamma dz + t s c g - t gamma mu + t s (w - gamma) e_1
            grad_loc = (grad_z * gamma.unsqueeze(-1)).addcmul_((t * signed_scale).unsqueeze(-1), normal)
            grad_loc = grad_loc.addcmul_((t * gamma).unsqueeze(-1), loc, value=-1.0)
            grad_loc.select(-1, 0).add_(torch.sub(w, gamma).mul_(sign).mul_(t))
            grad_loc = grad_loc.sum_to_size(loc.shape)  # loc broadcast over the sample dimensions
        return grad_w.sum_to_size(w.shape), grad_tangent_length, None, None, grad_loc


def reflect_to_mean_direction(
    w: torch.Tensor, tangent_length: torch.Tensor, normal: torch.Tensor, normal_length: torch.Tensor, loc: torch.Tensor
) -> torch.Tensor:
    """Map the sample w e_1 + sqrt(1 - w^2) g / |g| around e_1 to the same sample around ``loc``.

    Args:
        w: (...) components along the mean direction.
        tangent_length: (...) sqrt(1 - w^2).
        normal: (..., d) directions with ``normal[..., 0] == 0`` (any length).
        normal_length: (...) their norms.
        loc: (..., d) unit mean directions, broadcastable against ``normal``.

    Returns:
        (..., d) points on the sphere; differentiable in ``w``, ``tangent_length`` and ``loc``.
    """
    return _Reflect.apply(w, tangent_length, normal, normal_length, loc)
