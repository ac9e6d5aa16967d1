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

import torch

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
    """M z0 of the module docstring in plain torch operations (what autograd differentiates to every order)."""
    scale = tangent_length / normal_length  # c
    first = loc[..., 0]
    sign = 1.0 - 2.0 * (first < 0).to(loc.dtype)  # s = sign(mu_1), +1 at 0; a constant for autograd
    u_first = 1.0 + sign * first  # 1 + |mu_1| (written so that its derivative is s also at mu_1 = 0)
    u_norm_sq = u_first * u_first + row_dot(loc[..., 1:], loc[..., 1:])  # |u|^2 >= 1
    signed_scale = sign * scale  # s c
    loc_dot_normal = row_dot(normal, loc)
    gamma = 2.0 * (w * u_first + signed_scale * loc_dot_normal) / u_norm_sq
    z = torch.addcmul(gamma.unsqueeze(-1) * loc, signed_scale.unsqueeze(-1), normal, value=-1.0)
    first_column = z[..., :1] + (sign * (gamma - w)).unsqueeze(-1)
    return torch.cat([first_column, z[..., 1:]], dim=-1), (sign, u_first, u_norm_sq, signed_scale, loc_dot_normal, gamma)


class _Reflect(torch.autograd.Function):
    """``_reflect`` with a first-order backward written out (a few fused passes instead of autograd's chain of
    small operations, which at VAE batch sizes is the cost), and autograd's own derivatives of ``_reflect`` when
    a graph of the gradient is asked for (``create_graph=True``), so second derivatives are exact.

    With upstream gradient dz, t = 2 (dz.mu + s dz_1) / |u|^2 (the gradient reaching gamma's numerator) and
    mu_rest = mu with its first coordinate zeroed:
        dL/dw  = t u_1 - s dz_1
        dL/dc  = s (t mu.g - dz.g)
        dL/dmu = gamma dz + t s c g - t gamma mu_rest + t s (w - gamma u_1) e_1
    (from d gamma / d mu = [2 s (w e_1 + c g) - gamma (2 s u_1 e_1 + 2 mu_rest)] / |u|^2). The tests check both
    orders against finite differences (gradcheck, gradgradcheck).
    """

    @staticmethod
    def forward(ctx, w, tangent_length, normal, normal_length, loc):
        z, saved = _reflect(w, tangent_length, normal, normal_length, loc)
        ctx.save_for_backward(w, tangent_length, normal, normal_length, loc, *saved)
        return z

    @staticmethod
    def backward(ctx, grad_z):
        w, tangent_length, normal, normal_length, loc, sign, u_first, u_norm_sq, signed_scale, loc_dot_normal, gamma = (
            ctx.saved_tensors
        )
        if torch.is_grad_enabled():  # create_graph: differentiate the plain operations, to every order
            inputs = [w, tangent_length, loc]
            needed = [ctx.needs_input_grad[0] and w.requires_grad, ctx.needs_input_grad[1] and tangent_length.requires_grad,
                      ctx.needs_input_grad[4] and loc.requires_grad]
            z, _ = _reflect(w, tangent_length, normal, normal_length, loc)
            grads = iter(torch.autograd.grad(z, [x for x, n in zip(inputs, needed) if n], grad_z, create_graph=True,
                                             allow_unused=True))
            result = [next(grads) if n else None for n in needed]
            return result[0], result[1], None, None, result[2]
        # z = gamma mu - s c g + s (gamma - w) e_1, gamma = 2 (w u_1 + s c mu.g) / |u|^2, u_1 = 1 + s mu_1
        grad_first = grad_z[..., 0]
        grad_gamma = row_dot(grad_z, loc) + sign * grad_first
        t = 2.0 * grad_gamma / u_norm_sq  # d/d(numerator of gamma)
        grad_w = t * u_first - sign * grad_first
        grad_signed_scale = t * loc_dot_normal - row_dot(grad_z, normal)
        grad_tangent_length = sign * grad_signed_scale / normal_length
        grad_loc = None
        if ctx.needs_input_grad[4]:
            # gamma dz + t s c g + (gamma'): d gamma / d mu = [2 (w s e_1 + s c g) - gamma * 2 (u_1 s e_1 + mu_{2:})] / |u|^2
            # so dL/dmu = gamma dz + t (s c g) - t gamma mu_rest + e_1 t s (w - gamma u_1)
            grad_loc = (grad_z * gamma.unsqueeze(-1)).addcmul_((t * signed_scale).unsqueeze(-1), normal)
            grad_loc = grad_loc.addcmul_((t * gamma).neg_().unsqueeze(-1), loc)
            # the first column: -t gamma mu_1 above was for the rest; replace by t s (w - gamma u_1)
            grad_loc[..., 0] += t * (gamma * loc[..., 0] + sign * (w - gamma * u_first))
            grad_loc = grad_loc.sum_to_size(loc.shape)  # loc broadcast over the sample dimensions
        return grad_w.sum_to_size(w.shape), grad_tangent_length.sum_to_size(tangent_length.shape), None, None, grad_loc


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
