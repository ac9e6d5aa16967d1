"""Spectral norm, conditional batch norm and label handling."""
import pytest
import torch

from gan.layers import ConditionalBatchNorm2d, label_probabilities, sn_conv2d, sn_linear


def top_singular_value(module: torch.nn.Module) -> float:
    weight = module.weight.detach()
    return torch.linalg.svdvals(weight.reshape(weight.shape[0], -1).double())[0].item()


@pytest.mark.parametrize("make", [lambda: sn_conv2d(8, 16, 3), lambda: sn_conv2d(16, 4, 1), lambda: sn_linear(24, 10)])
def test_spectral_norm_top_singular_value_is_one(make):
    torch.manual_seed(0)
    layer = make()
    # The raw weight's top singular value is far from 1, so the test fails if normalization is missing.
    raw = layer.parametrizations.weight.original.detach()
    raw_sigma = torch.linalg.svdvals(raw.reshape(raw.shape[0], -1).double())[0].item()
    assert abs(raw_sigma - 1.0) > 0.1
    x = torch.randn(2, 8, 5, 5) if isinstance(layer, torch.nn.Conv2d) and layer.in_channels == 8 else None
    layer.train()
    for _ in range(50):  # one power iteration per training-mode access of .weight
        _ = layer.weight
    layer.eval()
    assert abs(top_singular_value(layer) - 1.0) < 1e-3
    if x is not None:
        assert layer(x).shape == (2, 16, 5, 5)


def test_conditional_batch_norm_depends_on_label():
    torch.manual_seed(0)
    norm = ConditionalBatchNorm2d(4, num_classes=3)
    with torch.no_grad():
        norm.gamma.copy_(torch.tensor([[1.0] * 4, [2.0] * 4, [0.5] * 4]))
        norm.beta.copy_(torch.tensor([[0.0] * 4, [1.0] * 4, [-1.0] * 4]))
    norm.eval()  # running stats at init: mean 0, var 1, so BN(x) = x / sqrt(1 + eps)
    x = torch.randn(2, 4, 3, 3)
    normalized = x / (1 + norm.batch_norm.eps) ** 0.5
    out = norm(x, torch.tensor([1, 2]))
    torch.testing.assert_close(out[0], 2.0 * normalized[0] + 1.0)
    torch.testing.assert_close(out[1], 0.5 * normalized[1] - 1.0)
    # A soft label blends the per-class gains linearly.
    soft = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(norm(x, soft), 1.25 * normalized + 0.0)


def test_label_probabilities():
    torch.testing.assert_close(label_probabilities(torch.tensor([2, 0]), 3),
                               torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    soft = torch.tensor([[0.2, 0.8, 0.0]])
    torch.testing.assert_close(label_probabilities(soft, 3), soft)
    with pytest.raises(ValueError, match="labels must lie"):
        label_probabilities(torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="soft labels"):
        label_probabilities(torch.rand(2, 4), 3)
    with pytest.raises(ValueError, match="labels must be"):
        label_probabilities(torch.rand(2), 3)
