"""The reflection step of vMF sampling (M = -s H_u, u = e1 + s mu, s = sign(mu_1)) and its hand-written backward."""

import torch

from vmfprior.reflection import reflect_to_mean_direction


def _inputs(sample_shape, batch, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = sample_shape + (batch,)
    w = torch.rand(shape, generator=generator, dtype=torch.float64) * 1.8 - 0.9
    tangent_length = torch.sqrt(1 - w * w)
    normal = torch.randn(shape + (dim,), generator=generator, dtype=torch.float64)
    normal[..., 0] = 0.0
    loc = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    return w, tangent_length, normal, normal.norm(dim=-1), loc


def test_matches_the_explicit_reflection_matrix_and_stays_on_the_sphere():
    w, tangent_length, normal, normal_length, loc = _inputs((), 6, 5)
    loc[:3, 0] = -loc[:3, 0].abs()  # both sides of mu_1 = 0: s = -1 is the textbook e1 - mu reflection
    loc[3:, 0] = loc[3:, 0].abs()
    z = reflect_to_mean_direction(w, tangent_length, normal, normal_length, loc)
    e1 = torch.zeros(5, dtype=torch.float64)
    e1[0] = 1.0
    for i in range(6):
        sign = 1.0 if loc[i, 0] >= 0 else -1.0
        u = e1 + sign * loc[i]
        rotation = -sign * (torch.eye(5, dtype=torch.float64) - 2 * torch.outer(u, u) / (u @ u))
        z0 = w[i] * e1 + tangent_length[i] * normal[i] / normal_length[i]
        assert torch.allclose(z[i], rotation @ z0, atol=1e-14)
        assert torch.allclose(rotation @ e1, loc[i], atol=1e-14)
        assert torch.allclose(rotation @ rotation.T, torch.eye(5, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(z.norm(dim=-1), torch.ones(6, dtype=torch.float64), atol=1e-14)


def test_mean_direction_e1_keeps_the_component_and_flips_the_tangent():
    # At mu = e1: u = 2 e1, M = -(I - 2 e1 e1^T) = diag(1, -1, ..., -1), so M z0 = w e1 - c g.
    w, tangent_length, normal, normal_length, _ = _inputs((), 4, 3)
    loc = torch.zeros(4, 3, dtype=torch.float64)
    loc[:, 0] = 1.0
    z = reflect_to_mean_direction(w, tangent_length, normal, normal_length, loc)
    z0 = -tangent_length[:, None] * normal / normal_length[:, None]
    z0[:, 0] += w
    assert torch.allclose(z, z0, rtol=0, atol=1e-15)


def test_backward_matches_finite_differences_with_sample_dimensions():
    for dim in (2, 3, 7, 12):
        w, tangent_length, normal, normal_length, loc = _inputs((3,), 4, dim, seed=dim)
        w.requires_grad_(), tangent_length.requires_grad_(), loc.requires_grad_()

        def function(a, b, m, normal=normal, normal_length=normal_length):
            return reflect_to_mean_direction(a, b, normal, normal_length, m)

        assert torch.autograd.gradcheck(function, (w, tangent_length, loc))
        assert torch.autograd.gradgradcheck(function, (w, tangent_length, loc))
