"""Whole-graph compilation of a latent step, and jit.trace / torch.export of the closed forms."""

import math
import warnings

import pytest
import torch
from torch.distributions import kl_divergence

import vmfprior.wood_sampler as wood_sampler
from vmfprior import HypersphericalUniform, VonMisesFisher, mean_resultant_length


def _latent_step(loc_raw, kappa_raw, target):
    """What a VAE's latent does per step: build q, rsample, KL to the uniform; returns (loss, z)."""
    loc = torch.nn.functional.normalize(loc_raw, dim=-1)
    kappa = torch.nn.functional.softplus(kappa_raw) + 0.5
    q = VonMisesFisher(loc, kappa, validate_args=False)
    z = q.rsample()
    kl = kl_divergence(q, HypersphericalUniform(loc.shape[-1], dtype=loc.dtype))
    return ((z - target) ** 2).sum() + kl.sum(), z


def _inputs(dim, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, dim, generator=generator, requires_grad=True),
        torch.randn(batch, generator=generator, requires_grad=True),
        torch.randn(batch, dim, generator=generator),
    )


def _run(function, inputs, seed):
    torch.manual_seed(seed)
    loss, z = function(*inputs)
    loss.backward()
    return loss.detach(), z.detach(), inputs[0].grad.clone(), inputs[1].grad.clone()


@pytest.mark.parametrize("dim", [5, pytest.param(3, marks=pytest.mark.slow), pytest.param(64, marks=pytest.mark.slow)])
def test_compiled_latent_step_has_one_graph_and_eager_values(dim, monkeypatch):
    torch._dynamo.reset()
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # the compiled graph draws like eager
    compiled = torch.compile(_latent_step, fullgraph=True)  # fullgraph: any graph break raises
    got = _run(compiled, _inputs(dim, 16, 0), seed=7)
    # Eager with the sampler the graph uses (fixed-shape rounds and a while_loop fallback), same random stream.
    monkeypatch.setattr(wood_sampler, "_sample_one_minus_w_wood", wood_sampler._sample_one_minus_w_wood_graph)
    expected = _run(_latent_step, _inputs(dim, 16, 0), seed=7)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    # The compiled sampler is exact: E[mu^T z] = A_d(kappa), over many calls (the while_loop fallback included:
    # at kappa ~ 0.5 a good share of the entries needs more than the first round).
    loc_raw, kappa_raw, target = _inputs(dim, 16, 1)
    alignments = []
    for _ in range(150):
        _, z = compiled(loc_raw, kappa_raw, target)
        alignments.append((z * torch.nn.functional.normalize(loc_raw, dim=-1)).sum(-1).detach())
    alignments = torch.stack(alignments).double()  # (calls, 16)
    kappa = (torch.nn.functional.softplus(kappa_raw) + 0.5).detach().double()
    error = (alignments.mean(0) - mean_resultant_length(dim, kappa)) / (alignments.std(0) / math.sqrt(150))
    assert error.abs().max() < 4.5  # 16 entries, each within 4.5 standard errors


def _closed_forms(dim):
    def log_prob(loc, kappa, other):
        return VonMisesFisher(loc, kappa, validate_args=False).log_prob(other)

    def mean(loc, kappa, other):
        return VonMisesFisher(loc, kappa, validate_args=False).mean

    def entropy(loc, kappa, other):
        return VonMisesFisher(loc, kappa, validate_args=False).entropy()

    def kl_uniform(loc, kappa, other):
        return kl_divergence(
            VonMisesFisher(loc, kappa, validate_args=False), HypersphericalUniform(dim, dtype=loc.dtype)
        )

    def kl_vmf(loc, kappa, other):
        return kl_divergence(
            VonMisesFisher(loc, kappa, validate_args=False),
            VonMisesFisher(other, kappa.flip(0) * 2, validate_args=False),
        )

    return [log_prob, mean, entropy, kl_uniform, kl_vmf]


def _closed_form_inputs(dim, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    normalize = torch.nn.functional.normalize
    return (
        normalize(torch.randn(6, dim, generator=generator, dtype=dtype), dim=-1),
        torch.exp(torch.randn(6, generator=generator, dtype=dtype) * 3),
        normalize(torch.randn(6, dim, generator=generator, dtype=dtype), dim=-1),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [3, 12])
def test_trace_and_export_of_the_closed_forms_equal_eager_on_new_inputs(dim, dtype):
    for function in _closed_forms(dim):
        example, fresh = _closed_form_inputs(dim, dtype, 0), _closed_form_inputs(dim, dtype, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit.trace's deprecation notice
            traced = torch.jit.trace(function, example)
        torch.testing.assert_close(traced(*fresh), function(*fresh), rtol=1e-6, atol=1e-6)

        class Wrapper(torch.nn.Module):
            def forward(self, *arguments):
                return function(*arguments)  # noqa: B023 -- traced and exported within this iteration

        exported = torch.export.export(Wrapper(), example).module()
        torch.testing.assert_close(exported(*fresh), function(*fresh), rtol=1e-6, atol=1e-6)


def test_trace_with_parameters_that_require_grad():
    example, fresh = _closed_form_inputs(5, torch.float64, 0), _closed_form_inputs(5, torch.float64, 1)
    for function in _closed_forms(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # check_trace off: a graph with autograd functions in it is not identical across re-traces; the values
            # on fresh inputs, checked next, are what matters
            traced = torch.jit.trace(function, tuple(t.clone().requires_grad_() for t in example), check_trace=False)
        torch.testing.assert_close(traced(*fresh), function(*fresh), rtol=1e-9, atol=1e-9)
