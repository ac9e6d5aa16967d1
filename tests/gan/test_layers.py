"""Spectral norm, conditional batch norm, synchronized batch norm (one process) and label handling."""

import pytest
import torch

from gan.layers import (
    ConditionalBatchNorm2d,
    GeneratorBlock,
    SyncBatchNorm2d,
    check_labels,
    convert_sync_batch_norm,
    label_probabilities,
    sn_conv2d,
    sn_linear,
)


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
    torch.testing.assert_close(
        label_probabilities(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    )
    soft = torch.tensor([[0.2, 0.8, 0.0]])
    torch.testing.assert_close(label_probabilities(soft, 3), soft)
    # trusted: an out-of-range label is not checked here (check_labels does it at the entry point)
    torch.testing.assert_close(label_probabilities(torch.tensor([3]), 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="soft labels"):
        label_probabilities(torch.rand(2, 4), 3)
    with pytest.raises(ValueError, match="labels must be"):
        label_probabilities(torch.rand(2), 3)


def test_check_labels():
    check_labels(torch.tensor([0, 2, 1]), 3)
    check_labels(torch.zeros(0, dtype=torch.long), 3)
    for bad in (torch.tensor([3]), torch.tensor([0, -1])):
        with pytest.raises(ValueError, match="labels must lie in \\[0, 3\\)"):
            check_labels(bad, 3)
    with pytest.raises(ValueError, match="integer tensor"):
        check_labels(torch.tensor([0.0, 1.0]), 3)


def test_sync_batch_norm_without_process_group_is_batch_norm():
    torch.manual_seed(0)
    reference = torch.nn.BatchNorm2d(5, momentum=0.3)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 2.0)
        reference.bias.uniform_(-1.0, 1.0)
    synced = convert_sync_batch_norm(torch.nn.Sequential(reference.__class__(5))).__getitem__(0)
    assert isinstance(synced, SyncBatchNorm2d)
    synced.load_state_dict(reference.state_dict())
    synced.momentum = 0.3
    x = torch.randn(6, 5, 4, 4) * 3 + 1
    x_ref, x_sync = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(6, 5, 4, 4)
    (reference(x_ref) * weights).sum().backward()
    (synced(x_sync) * weights).sum().backward()
    torch.testing.assert_close(x_sync.grad, x_ref.grad)
    torch.testing.assert_close(synced.weight.grad, reference.weight.grad)
    torch.testing.assert_close(synced.running_var, reference.running_var)
    synced.eval(), reference.eval()
    torch.testing.assert_close(synced(x), reference(x))


def test_generator_block_upsampling_modes():
    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])  # (1, 1, 2, 2): f(i, j) = 8 i + 4 j
    nearest = GeneratorBlock(1, 1, 3, upsample="nearest")._up(x)
    bilinear = GeneratorBlock(1, 1, 3, upsample="bilinear")._up(x)
    torch.testing.assert_close(
        nearest[0, 0], torch.tensor([[0.0, 0, 4, 4], [0, 0, 4, 4], [8, 8, 12, 12], [8, 8, 12, 12]])
    )
    # bilinear with half-pixel centres: output k samples (k + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to
    # the edge, so a linear f gives 8 * [0, 0.25, 0.75, 1] down the rows plus 4 * [0, 0.25, 0.75, 1] across
    rows, cols = torch.tensor([0.0, 2, 6, 8]), torch.tensor([0.0, 1, 3, 4])
    torch.testing.assert_close(bilinear[0, 0], rows[:, None] + cols[None, :])
    with pytest.raises(ValueError, match="upsample must be one of"):
        GeneratorBlock(4, 4, 3, upsample="bicubic")
