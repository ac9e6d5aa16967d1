"""Building blocks of the 32x32 ResNet SNGAN: spectral-norm layers, conditional batch norm, residual blocks.

Spectral normalization (Miyato et al. 2018) divides a weight by an estimate of its largest singular value,
refined by one power iteration per training-mode forward pass (``torch.nn.utils.parametrizations``).
Conditional batch norm (de Vries et al. 2017; Miyato & Koyama 2018) normalizes without affine parameters,
then scales and shifts with per-class gains. Here the gains are a matrix product with class *probabilities*,
so integer labels (one-hot) and soft labels (blends of classes, for interpolations) share one code path.

Labels are range-checked once per batch where they enter (:func:`check_labels`, called by the sampling API and by
gan/train.py on the data); the modules here trust them, because a check inside every layer costs one
device-to-host synchronization per layer on a GPU.

With several processes, the generator's batch norms are replaced by :class:`SyncBatchNorm2d`
(:func:`convert_sync_batch_norm`), so their statistics cover the global batch as on one GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.config import UPSAMPLE_MODES  # 2x up-sampling of the generator blocks: nearest (chainer) or bilinear

__all__ = [
    "check_labels",
    "label_probabilities",
    "SyncBatchNorm2d",
    "convert_sync_batch_norm",
    "UPSAMPLE_MODES",
    "xavier_init",
    "sn_conv2d",
    "sn_linear",
    "ConditionalBatchNorm2d",
    "GeneratorBlock",
    "DiscriminatorBlock",
    "OptimizedDiscriminatorBlock",
]

RESIDUAL_INIT_GAIN = math.sqrt(2.0)
"""Xavier gain of the 3x3 convs inside residual branches (ReLU before them), as in the SNGAN reference code."""
SHORTCUT_INIT_GAIN = 1.0
"""Xavier gain of the 1x1 shortcut convs and of the input/output layers (no nonlinearity in between)."""


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless ``labels`` is a (B,) integer tensor with values in [0, num_classes).

    One device-to-host synchronization (a single reduction), so call it once per batch at an entry point.
    """
    if not torch.is_tensor(labels) or labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a (B,) integer tensor, got {getattr(labels, 'dtype', type(labels))} "
            f"of shape {tuple(getattr(labels, 'shape', ()))}"
        )
    if labels.numel() and not bool(((labels >= 0) & (labels < num_classes)).all()):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def label_probabilities(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn integer labels or soft labels into a (B, C) matrix of class probabilities.

    Args:
        labels: (B,) integer class indices, or (B, C) floating class probabilities (rows need not be one-hot).
        num_classes: C.
        dtype: floating dtype of the result.

    Returns:
        (B, C) float tensor: one-hot rows for integer labels, the soft labels themselves otherwise.

    Integer labels are trusted (see :func:`check_labels`): the comparison with ``arange(C)`` never synchronizes
    with the host, unlike ``F.one_hot``, which checks the range on the CPU; an out-of-range label gives a zero row.
    """
    if labels.dim() == 1 and not labels.is_floating_point():
        classes = torch.arange(num_classes, device=labels.device)
        return (labels[:, None] == classes).to(dtype)
    if labels.dim() == 2 and labels.is_floating_point():
        if labels.shape[1] != num_classes:
            raise ValueError(f"soft labels must have shape (B, {num_classes}), got {tuple(labels.shape)}")
        return labels.to(dtype)
    raise ValueError(
        f"labels must be (B,) integer indices or (B, {num_classes}) float probabilities, "
        f"got shape {tuple(labels.shape)} dtype {labels.dtype}"
    )


def xavier_init(module: nn.Module, gain: float) -> nn.Module:
    """Xavier-uniform init of ``module.weight`` with ``gain``, zero bias; returns the module."""
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def sn_conv2d(in_channels: int, out_channels: int, kernel_size: int = 3, gain: float = RESIDUAL_INIT_GAIN) -> nn.Module:
    """A stride-1, 'same'-padded Conv2d with spectral normalization on its weight.

    Args:
        in_channels, out_channels, kernel_size: as for ``nn.Conv2d`` (odd kernel sizes keep H, W).
        gain: Xavier-uniform initialization gain.

    Returns:
        the parametrized ``nn.Conv2d``; its ``weight`` is the normalized weight ``W / sigma(W)``.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return spectral_norm(xavier_init(conv, gain))


def sn_linear(in_features: int, out_features: int, gain: float = SHORTCUT_INIT_GAIN, bias: bool = True) -> nn.Module:
    """A Linear layer with spectral normalization on its weight (Xavier-uniform init with ``gain``)."""
    return spectral_norm(xavier_init(nn.Linear(in_features, out_features, bias=bias), gain))


class _AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over processes. Every process uses the sum, so the gradient with respect to each
    process's term is the sum of all processes' gradients: the backward pass is the same all-reduce."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        torch.distributed.all_reduce(total)
        return total


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the batches of all processes (any device, gloo or NCCL).

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one all-reduces the per-channel sums, sums of squares
    and counts in one collective whose backward all-reduces the gradients, so the gradient equals that of one
    batch norm over the concatenated global batch. Without an initialized
    process group of more than one process, or in eval mode, it is a plain BatchNorm2d. Parameters and buffers
    have the names of BatchNorm2d, so state dicts load into either class.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, F, H, W), B may differ between processes. Returns: (B, F, H, W)."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not (self.training and distributed and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        values = x.float()
        count = torch.tensor([values.numel() / values.shape[1]], device=x.device, dtype=torch.float32)
        local = torch.cat([values.sum(dim=(0, 2, 3)), values.square().sum(dim=(0, 2, 3)), count])  # (2F + 1,)
        total = _AllReduceSum.apply(local)  # summed over processes, differentiable
        features = x.shape[1]
        count = total[-1]
        mean = total[:features] / count  # (F,)
        variance = (total[features : 2 * features] / count - mean.square()).clamp_min(0.0)  # biased, as BN normalizes
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * count / (count - 1).clamp_min(1.0)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        out = (values - mean[None, :, None, None]) * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def convert_sync_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`SyncBatchNorm2d` with the same state.

    Args:
        module: e.g. a generator; changed in place.

    Returns:
        the same module (a lone BatchNorm2d comes back converted).
    """
    if type(module) is nn.BatchNorm2d:
        converted = SyncBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        converted.load_state_dict(module.state_dict())
        tensors = [*module.parameters(), *module.buffers()]
        return (converted.to(tensors[0].device) if tensors else converted).train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batch_norm(child))
    return module


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift depend on the class: ``gamma(y) * BN(x) + beta(y)``.

    ``gamma(y) = p(y) @ gamma_table`` with ``p(y)`` the (B, C) class probabilities, so a soft label gives the
    matching blend of the per-class gains.

    Args:
        num_features: channels of the input.
        num_classes: C.
    """

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.batch_norm = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Parameter(torch.ones(num_classes, num_features))  # (C, F): identity at init
        self.beta = nn.Parameter(torch.zeros(num_classes, num_features))  # (C, F)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: x (B, F, H, W); labels (B,) long or (B, C) float. Returns: (B, F, H, W)."""
        probs = label_probabilities(labels, self.num_classes, self.gamma.dtype)  # (B, C)
        gamma = (probs @ self.gamma)[:, :, None, None]  # (B, F, 1, 1)
        beta = (probs @ self.beta)[:, :, None, None]
        return gamma * self.batch_norm(x) + beta


class GeneratorBlock(nn.Module):
    """Pre-activation up-sampling residual block: CBN-ReLU-up-conv-CBN-ReLU-conv, plus up-1x1-conv shortcut.

    Plain (not spectral-normalized) convolutions, as in the SNGAN generator.

    Args:
        in_channels, out_channels: channel counts.
        num_classes: C for the conditional batch norms.
        upsample: "nearest" (chainer SNGAN) or "bilinear" (Mimicry), see :data:`UPSAMPLE_MODES`.
    """

    def __init__(self, in_channels: int, out_channels: int, num_classes: int, upsample: str = "nearest"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
        self.upsample = upsample
        self.norm1 = ConditionalBatchNorm2d(in_channels, num_classes)
        self.conv1 = xavier_init(nn.Conv2d(in_channels, out_channels, 3, padding=1), RESIDUAL_INIT_GAIN)
        self.norm2 = ConditionalBatchNorm2d(out_channels, num_classes)
        self.conv2 = xavier_init(nn.Conv2d(out_channels, out_channels, 3, padding=1), RESIDUAL_INIT_GAIN)
        self.shortcut = xavier_init(nn.Conv2d(in_channels, out_channels, 1), SHORTCUT_INIT_GAIN)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in, H, W); labels (B,) or (B, C). Returns: (B, out, 2H, 2W)."""
        h = F.relu(self.norm1(x, labels))
        h = self.conv1(self._up(h))
        h = self.conv2(F.relu(self.norm2(h, labels)))
        return h + self.shortcut(self._up(x))

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class DiscriminatorBlock(nn.Module):
    """Pre-activation residual block of the discriminator: ReLU-conv-ReLU-conv [-avgpool], spectral norm.

    The shortcut is a 1x1 conv (then avgpool) when channels change or the block down-samples, else identity.

    Args:
        in_channels, out_channels: channel counts.
        downsample: halve H and W with 2x2 average pooling.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = sn_conv2d(in_channels, out_channels)
        self.conv2 = sn_conv2d(out_channels, out_channels)
        needs_projection = downsample or in_channels != out_channels
        self.shortcut = sn_conv2d(in_channels, out_channels, 1, SHORTCUT_INIT_GAIN) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in, H, W). Returns: (B, out, H/2, W/2) if downsample else (B, out, H, W)."""
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return h + skip


class OptimizedDiscriminatorBlock(nn.Module):
    """First discriminator block on raw images: conv-ReLU-conv-avgpool, shortcut avgpool-1x1-conv (no ReLU first).

    Args:
        in_channels: image channels.
        out_channels: feature channels.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = sn_conv2d(in_channels, out_channels)
        self.conv2 = sn_conv2d(out_channels, out_channels)
        self.shortcut = sn_conv2d(in_channels, out_channels, 1, SHORTCUT_INIT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, in, H, W). Returns: (B, out, H/2, W/2)."""
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))
