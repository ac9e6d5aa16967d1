"""WRN classifier: architecture, augmentation, and a checkpoint the vMF prior and eval.features can read."""
import pytest
import torch
import torch.nn.functional as F

from common.wrn import WideResNet, augment
from gan.classifier import load_classifier, main
from vmfprior import VMFPrior


def test_wrn_40_2_shapes_and_size():
    model = WideResNet(depth=40, width=2)
    assert model.feature_dim == 128  # the prior's d for SNGAN-vMF
    assert sum(p.numel() for p in model.parameters()) == 2_243_546  # WRN-40-2 with a linear head: ~2.2M
    small = WideResNet(depth=10, width=1).eval()
    images = torch.rand(3, 3, 32, 32)
    assert small.features(images).shape == (3, 64)
    torch.testing.assert_close(small(images), small.head(small.features(images)))


@pytest.mark.parametrize("depth", [12, 3])
def test_bad_depth_raises(depth):
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        WideResNet(depth=depth)


def test_augment_returns_crops_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    out = augment(images)
    padded = F.pad(images, [4] * 4, mode="reflect")
    for index in range(6):
        candidates = [padded[index, :, top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
        candidates += [crop.flip(-1) for crop in candidates]
        assert any(torch.equal(out[index], crop) for crop in candidates)


def test_train_saves_a_checkpoint_the_prior_reads(fake_cifar, tmp_path):
    result = main(["--preset", "tiny", "--data", str(fake_cifar), "--out", str(tmp_path), "--max-steps", "2",
                   "--batch-size", "8"])
    assert result["steps"] == 2 and 0.0 <= result["test_accuracy"] <= 1.0
    prior = VMFPrior.from_checkpoint(result["checkpoint"], concentration=10.0)
    model = load_classifier(result["checkpoint"])
    assert (prior.num_classes, prior.dim) == (10, 64)
    weight = model.head.weight.detach()
    torch.testing.assert_close(prior.mean_directions, weight / weight.norm(dim=1, keepdim=True))
    assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 64)


