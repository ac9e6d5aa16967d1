"""Shapes and parameter counts of the SNGAN generator and projection discriminator."""
import pytest
import torch

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
