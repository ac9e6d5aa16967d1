"""The EMA generator: averaged weights, and batch-norm statistics of its own (not the live generator's)."""

import copy
import math

import pytest
import torch

from gan.ema import ExponentialMovingAverage, recompute_batch_norm_statistics
from gan.latent import build_latent_sampler
from gan.models import Generator

BATCH = 32


def test_update_is_an_exponential_average():
    torch.manual_seed(0)
    live = Generator(latent_dim=4, channels=4)
    start = [p.detach().clone() for p in live.parameters()]
    ema = ExponentialMovingAverage(live, decay=0.75)
    with torch.no_grad():
        for parameter in live.parameters():
            parameter.add_(1.0)
    ema.update(live)
    for average, initial in zip(ema.module.parameters(), start):
        torch.testing.assert_close(average, 0.75 * initial + 0.25 * (initial + 1.0))


def _batch_statistics(generator, norm, num_batches, seed):
    """Per-channel mean over batches of the batch means and of the unbiased batch variances of ``norm``'s input,
    with their standard errors: an independent estimate of the statistics the recomputation should find."""
    means, variances = [], []

    def record(module, inputs):
        means.append(inputs[0].mean(dim=(0, 2, 3)))  # (F,)
        variances.append(inputs[0].transpose(0, 1).flatten(1).var(dim=1))  # (F,), unbiased

    hook = norm.register_forward_pre_hook(record)
    latent = build_latent_sampler("gaussian", generator.latent_dim)
    generator.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        for _ in range(num_batches):
            labels = torch.randint(0, 10, (BATCH,))
            generator(latent.sample(labels), labels)
    hook.remove()
    means, variances = torch.stack(means), torch.stack(variances)
    root = math.sqrt(num_batches)
    return means.mean(0), means.std(0) / root, variances.mean(0), variances.std(0) / root


def test_recomputed_statistics_belong_to_the_averaged_weights():
    torch.manual_seed(0)
    live = Generator(latent_dim=8, channels=8)
    ema = ExponentialMovingAverage(live, decay=0.5)
    with torch.no_grad():  # move the live weights far from the average, then give them their own statistics
        for parameter in live.parameters():
            parameter.mul_(2.0).add_(0.3)
    live.train()
    for _ in range(20):
        live(torch.randn(BATCH, 8), torch.randint(0, 10, (BATCH,)))
    ema.update(live)  # the parameters are averaged, the BN buffers copied from the live generator
    norm = ema.module.output_norm
    copied_mean = norm.running_mean.clone()
    recompute_batch_norm_statistics(
        ema.module, build_latent_sampler("gaussian", 8), num_samples=64 * BATCH, batch_size=BATCH, seed=0
    )
    assert not ema.module.training  # mode restored
    reference = copy.deepcopy(ema.module)
    mean, mean_error, variance, variance_error = _batch_statistics(reference, reference.output_norm, 64, seed=1)
    tolerance = 5 * math.sqrt(2) * mean_error  # two independent 64-batch estimates
    assert ((norm.running_mean - mean).abs() < tolerance).all()
    assert ((norm.running_var - variance).abs() < 5 * math.sqrt(2) * variance_error).all()
    assert ((copied_mean - mean).abs() > tolerance).any()  # the copied statistics were wrong for these weights


def test_recomputation_is_reproducible_and_leaves_the_random_stream():
    generator = Generator(latent_dim=8, channels=8)
    latent = build_latent_sampler("gaussian", 8)
    torch.manual_seed(5)
    recompute_batch_norm_statistics(generator, latent, num_samples=64, batch_size=BATCH, seed=3)
    first = copy.deepcopy(generator.state_dict())
    after = torch.rand(3)
    torch.manual_seed(5)
    recompute_batch_norm_statistics(generator, latent, num_samples=64, batch_size=BATCH, seed=3)
    assert torch.equal(torch.rand(3), after)
    for key, value in generator.state_dict().items():
        assert torch.equal(value, first[key]), key
    assert generator.output_norm.momentum == pytest.approx(0.1)  # restored after the cumulative average
