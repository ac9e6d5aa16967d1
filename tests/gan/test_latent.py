"""Latent samplers: norms, concentration around the class mean direction, errors."""

import math

import pytest
import torch

from gan.latent import SAMPLERS, build_latent_sampler
from vmfprior import mean_resultant_length

DIM = 16


@pytest.fixture
def head_checkpoint(tmp_path):
    """A classifier checkpoint whose final layer has known, non-unit rows (C=10, d=16)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(10, DIM, generator=generator) * 3.0
    path = tmp_path / "classifier.pt"
    torch.save(
        {
            "model": {"blocks.0.weight": torch.randn(DIM, DIM), "head.weight": weight, "head.bias": torch.zeros(10)},
            "config": {},
        },
        path,
    )
    return path, weight / weight.norm(dim=1, keepdim=True)


def test_gaussian_moments():
    torch.manual_seed(0)
    z = build_latent_sampler("gaussian", DIM).sample(torch.zeros(20_000, dtype=torch.long))
    assert z.shape == (20_000, DIM)
    # mean 0 (SE 1/sqrt(n) per coordinate), variance 1 (SE sqrt(2/n))
    assert z.mean(0).abs().max() < 5 / math.sqrt(20_000)
    assert (z.var(0) - 1).abs().max() < 5 * math.sqrt(2 / 20_000)


def test_sphere_norms_and_isotropy():
    torch.manual_seed(0)
    sampler = build_latent_sampler("sphere", DIM)
    z = sampler.sample(torch.randint(0, 10, (20_000,)))
    torch.testing.assert_close(z.norm(dim=1), torch.full((20_000,), math.sqrt(DIM)))
    assert sampler.spherical and not sampler.class_conditional
    # uniform on the sphere of radius sqrt(d): each coordinate has mean 0 and variance 1 (|z|^2 = d)
    assert z.mean(0).abs().max() < 5 / math.sqrt(20_000)


@pytest.mark.parametrize("concentration", [5.0, 40.0])
def test_vmf_norms_and_concentration(head_checkpoint, concentration):
    path, mean_directions = head_checkpoint
    torch.manual_seed(0)
    sampler = build_latent_sampler("vmf", DIM, num_classes=10, prior_checkpoint=path, concentration=concentration)
    labels = torch.arange(10).repeat_interleave(2_000)
    z = sampler.sample(labels)
    assert z.shape == (20_000, DIM) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.full((20_000,), math.sqrt(DIM)), rtol=1e-5, atol=1e-5)
    cosines = (z / math.sqrt(DIM) * mean_directions[labels]).sum(dim=1)  # (B,)
    expected = mean_resultant_length(DIM, torch.tensor(concentration, dtype=torch.float64)).item()
    standard_error = cosines.std().item() / math.sqrt(len(cosines))
    assert abs(cosines.mean().item() - expected) < 4 * standard_error
    # and the samples really follow their own class: the cosine to another class's direction is lower
    other = (z / math.sqrt(DIM) * mean_directions[(labels + 1) % 10]).sum(dim=1)
    assert cosines.mean() > other.mean() + 0.1


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError) as error:
        build_latent_sampler("uniform", DIM)
    for name in SAMPLERS:
        assert name in str(error.value)


def test_vmf_argument_errors(head_checkpoint, tmp_path):
    path, _ = head_checkpoint
    with pytest.raises(ValueError, match="prior_checkpoint"):
        build_latent_sampler("vmf", DIM, concentration=1.0)
    with pytest.raises(ValueError, match="is not a file"):
        build_latent_sampler("vmf", DIM, prior_checkpoint=tmp_path / "missing.pt", concentration=1.0)
    with pytest.raises(ValueError, match="concentration"):
        build_latent_sampler("vmf", DIM, prior_checkpoint=path, concentration=0.0)
    with pytest.raises(ValueError, match="latent_dim 32 does not match"):
        build_latent_sampler("vmf", 32, prior_checkpoint=path, concentration=1.0)
    with pytest.raises(ValueError, match="num_classes 5"):
        build_latent_sampler("vmf", DIM, num_classes=5, prior_checkpoint=path, concentration=1.0)


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="labels must be"):
        build_latent_sampler("gaussian", DIM).sample(torch.zeros(3, 10))


def test_vmf_orthogonal_centres_each_class_on_an_orthonormal_direction():
    from gan.latent import build_latent_sampler
    from vmfprior import mean_resultant_length

    dim, classes, kappa, draws = 16, 4, 30.0, 4000
    sampler = build_latent_sampler("vmf-orthogonal", dim, classes, concentration=kappa)
    again = build_latent_sampler("vmf-orthogonal", dim, classes, concentration=kappa)
    assert torch.equal(sampler.prior.mean_directions, again.prior.mean_directions)  # one fixed head for every run
    torch.manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(draws)
    z = sampler.sample(labels)
    assert torch.allclose(z.norm(dim=1), torch.full((len(z),), dim**0.5), atol=1e-4)
    means = torch.stack([z[labels == c].mean(0) for c in range(classes)]) / dim**0.5  # (C, d)
    expected = float(mean_resultant_length(dim, torch.tensor(kappa, dtype=torch.float64)))  # E[mu^T u]
    directions = sampler.prior.mean_directions
    torch.testing.assert_close(directions @ directions.T, torch.eye(classes), atol=1e-5, rtol=0)
    along = (means * directions).sum(1)
    # per draw mu^T u has sd < sqrt(1 - A^2); 5 standard errors
    assert torch.allclose(along, torch.full((classes,), expected), atol=5 * (1 - expected**2) ** 0.5 / draws**0.5)
    with pytest.raises(ValueError, match="concentration"):
        build_latent_sampler("vmf-orthogonal", dim, classes)


def test_vmf_sampler_uses_the_priors_sync_free_sample_when_it_has_one():
    from gan.latent import VMFSampler

    class Prior:
        dim, num_classes = 4, 3
        mean_directions = torch.eye(3, 4)
        concentration = torch.full((3,), 5.0)
        calls = []

        def sample(self, labels, radius=1.0, validate=True):
            self.calls.append(validate)
            return torch.full((labels.shape[0], 4), radius)

    prior = Prior()
    z = VMFSampler(prior).sample(torch.tensor([0, 2]))
    assert prior.calls == [False] and torch.allclose(z, torch.full((2, 4), 2.0))  # radius sqrt(4), no host check
