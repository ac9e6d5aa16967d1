"""The last step of von Mises-Fisher sampling: rotate a sample drawn around e_1 to the mean direction mu.

A sample around e_1 is z0 = w e_1 + c g, with g isotropic in the plane orthogonal to e_1 (g_1 = 0) and
c = sqrt(1 - w^2) / |g|. The Householder reflection H = I - 2 v v^T / |v|^2 with v = e_1 - mu maps e_1 to mu
(Davidson et al., 2018). Expanded,

    H z0 = c g + gamma mu + (w - gamma) e_1,   gamma = 2 v.z0 / |v|^2 = 2 (w (1 - mu_1) - c mu.g) / |v|^2,

which touches each (..., d) array only a few times and never materializes v. Where mu = e_1 the reflection is
the identity (gamma = 0).

The backward pass is written out by hand: autograd would record every small operation above, and at the
batch sizes of VAE training the number of operations, not their size, is the cost. With upstream gradient
dz and t = (dz.mu - dz_1) 2 / |v|^2 (the gradient reaching gamma, times d gamma / d numerator):

    dL/dw     = dz_1 + t (1 - mu_1)
    dL/dc     = dz.g - t mu.g
    dL/dmu    = gamma (dz - t mu) - t c g + t (gamma - w) e_1

(using d|v|^2/dmu = -2 v). ``tests/vmfprior/test_reflection.py`` checks this against finite differences.
"""

from __future__ import annotations

import torch

__all__ = ["reflect_to_mean_direction", "row_dot"]

# Rows at most this long take the matrix-vector route in row_dot (measured crossover on CPU: d ~ 10).
SHORT_ROW = 8


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products along the last dimension, broadcasting: (..., d), (..., d) -> (...).

    For short rows (d <= SHORT_ROW) this is a product with a ones vector (a BLAS matrix-vector product):
    torch's reductions over a short last dimension are several times slower, which dominated sampling at
    d <= 10. Longer rows use ``vecdot``, which is faster there.
    """
    if max(a.shape[-1], b.shape[-1]) > SHORT_ROW:
        return torch.linalg.vecdot(a, b)
    product = a * b
    return product @ torch.ones(product.shape[-1], dtype=product.dtype, device=product.device)


class _ReflectToMeanDirection(torch.autograd.Function):
    """H(mu) (w e_1 + c g) with the hand-written backward of the module docstring."""

    @staticmethod
    def forward(ctx, w, tangent_length, normal, normal_length, loc):
        scale = tangent_length / normal_length  # c
        one_minus_first = 1.0 - loc[..., 0]
        distance_sq = one_minus_first * one_minus_first + row_dot(loc[..., 1:], loc[..., 1:])  # |v|^2
        # 2 / |v|^2, finite where mu = e_1, where it multiplies exact zeros (1 - mu_1 = 0 and mu.g = g_1 = 0)
        two_over_distance_sq = 2.0 / distance_sq.clamp(min=torch.finfo(distance_sq.dtype).tiny)
        loc_dot_normal = row_dot(normal, loc)
        gamma = (w * one_minus_first - scale * loc_dot_normal) * two_over_distance_sq
        z = torch.addcmul(gamma.unsqueeze(-1) * loc, scale.unsqueeze(-1), normal)
        z[..., 0] += w - gamma
        ctx.save_for_backward(w, scale, normal, normal_length, loc, one_minus_first, two_over_distance_sq,
                              loc_dot_normal, gamma)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z):
        w, scale, normal, normal_length, loc, one_minus_first, two_over_distance_sq, loc_dot_normal, gamma = (
            ctx.saved_tensors
        )
        grad_first = grad_z[..., 0]
        t = (row_dot(grad_z, loc) - grad_first) * two_over_distance_sq
        grad_w = torch.addcmul(grad_first, t, one_minus_first)
        grad_tangent_length = (row_dot(grad_z, normal) - t * loc_dot_normal) / normal_length
        grad_loc = None
        if ctx.needs_input_grad[4]:
            # gamma dz - (gamma t) mu - (t c) g: three passes over the (..., d) arrays
            grad_loc = (grad_z * gamma.unsqueeze(-1)).addcmul_((gamma * t).neg_().unsqueeze(-1), loc)
            grad_loc = grad_loc.addcmul_((t * scale).neg_().unsqueeze(-1), normal)
            grad_loc[..., 0] += t * (gamma - w)
            grad_loc = grad_loc.sum_to_size(loc.shape)  # loc broadcast over the sample dimensions
        return grad_w, grad_tangent_length, None, None, grad_loc


def reflect_to_mean_direction(
    w: torch.Tensor, tangent_length: torch.Tensor, normal: torch.Tensor, normal_length: torch.Tensor, loc: torch.Tensor
) -> torch.Tensor:
    """Map the sample w e_1 + sqrt(1 - w^2) g / |g| around e_1 to the same sample around ``loc``.

    Args:
        w: (...) components along the mean direction.
        tangent_length: (...) sqrt(1 - w^2).
        normal: (..., d) directions with ``normal[..., 0] == 0`` (any length; not differentiated).
        normal_length: (...) their norms (not differentiated).
        loc: (..., d) unit mean directions, broadcastable against ``normal``.

    Returns:
        (..., d) points on the sphere; differentiable in ``w``, ``tangent_length`` and ``loc``.
    """
    return _ReflectToMeanDirection.apply(w, tangent_length, normal, normal_length, loc)
