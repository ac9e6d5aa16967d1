"""Shapes and parameter counts of the SNGAN generator and projection discriminator; no host syncs in a step."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gan.latent import build_latent_sampler
from gan.losses import get_loss
from gan.models import Discriminator, Generator


def num_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_reference_parameter_counts():
    # Counted by hand from the architecture (see gan/models.py docstring): linear 128->4*4*256, three up-blocks
    # with two CBNs each, BN + 3x3 conv out; D: optimized block, down block, two plain blocks, linear, embedding.
    assert num_parameters(Generator(latent_dim=128, channels=256)) == 4_304_387
    assert num_parameters(Discriminator(channels=128)) == 1_055_105


def test_shapes_and_ranges_small_widths():
    generator, discriminator = Generator(latent_dim=16, channels=32), Discriminator(channels=32)
    z, labels = torch.randn(5, 16), torch.randint(0, 10, (5,))
    images = generator(z, labels)
    assert images.shape == (5, 3, 32, 32)
    assert images.abs().max() <= 1.0
    assert discriminator(images, labels).shape == (5,)


def test_soft_one_hot_labels_equal_integer_labels():
    torch.manual_seed(0)
    generator, discriminator = Generator(latent_dim=8, channels=16).eval(), Discriminator(channels=16).eval()
    z, labels = torch.randn(4, 8), torch.tensor([0, 3, 3, 9])
    soft = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(generator(z, soft), generator(z, labels))
    images = generator(z, labels)
    torch.testing.assert_close(discriminator(images, soft), discriminator(images, labels))


def test_projection_term_depends_on_label():
    torch.manual_seed(0)
    discriminator = Discriminator(channels=16).eval()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    scores_a = discriminator(images, torch.zeros(3, dtype=torch.long))
    scores_b = discriminator(images, torch.full((3,), 7))
    assert (scores_a - scores_b).abs().min() > 1e-4


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"channels": -1}, {"num_classes": 2.5}])
def test_bad_widths_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Generator(**bad)


def test_bad_latent_shape_raises():
    with pytest.raises(ValueError, match="z must have shape"):
        Generator(latent_dim=8, channels=8)(torch.randn(2, 9), torch.zeros(2, dtype=torch.long))


class HostSyncCounter(TorchDispatchMode):
    """Counts ``aten._local_scalar_dense``: the op behind ``.item()``, ``bool()`` and ``int()`` of a tensor, which
    on a GPU blocks until the device has caught up."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampler", ["gaussian", "sphere"])
def test_training_step_never_waits_for_the_device(sampler):
    torch.manual_seed(0)
    generator, discriminator = Generator(latent_dim=8, channels=8), Discriminator(channels=8)
    latent = build_latent_sampler(sampler, 8)
    loss = get_loss("hinge")
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    with HostSyncCounter() as counter:  # one D step and one G step, as in gan/train.py
        labels = torch.randint(0, 10, (4,))
        with torch.no_grad():
            fake = generator(latent.sample(labels), labels)
        logits = discriminator(torch.cat([real, fake]), torch.cat([labels, labels]))
        loss.discriminator(*logits.split([4, 4])).backward()
        loss.generator(discriminator(generator(latent.sample(labels), labels), labels)).backward()
    assert counter.count == 0


def test_vmf_noise_adds_no_host_sync_to_the_sampler_itself():
    from gan.latent import VMFSampler
    from vmfprior import VMFPrior, VonMisesFisher

    prior = VMFPrior.from_weight(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), 30.0)
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    with HostSyncCounter() as sampler_syncs:
        z = VMFSampler(prior).sample(labels)
    torch.manual_seed(2)
    with HostSyncCounter() as reference_syncs:  # the rejection sampler's own loop: the irreducible part
        reference = (
            VonMisesFisher(prior.mean_directions[labels], prior.concentration[labels], validate_args=False).sample()
            * 8**0.5
        )
    torch.testing.assert_close(z, reference)
    assert sampler_syncs.count == reference_syncs.count


def test_sampler_checks_labels_at_the_entry_point():
    from gan.sampling import GANSampler

    sampler = GANSampler(Generator(latent_dim=8, channels=8), build_latent_sampler("gaussian", 8))
    assert sampler.sample(torch.tensor([0, 9])).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 10\\)"):
        sampler.sample_latent(torch.tensor([10]))
    with pytest.raises(ValueError, match="labels must lie in \\[0, 10\\)"):
        sampler.decode(torch.randn(1, 8), torch.tensor([-1]))
