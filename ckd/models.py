"""The networks of the CKD experiments: small MNIST conv nets with a d-dimensional penultimate layer, and WRN-d-k.

Every model has ``features(images in [0, 1]) -> (B, d)`` (the penultimate activations ``a``) and a final layer
``head`` (``logits = head(a) = W a + b``), so ``VMFPrior.from_linear(model.head, kappa)`` is its vMF model.

Architecture names (``build_model``):

* ``mnist-conv`` -- the teacher of the paper's Figure 2 at CPU size: four 3x3 conv layers, each followed by
  batch norm and ReLU (16, 16, 32, 32 kernels; 2x2 max-pooling after the second and the fourth), a linear map of
  the flattened 7x7x32 maps to a d-dimensional penultimate layer (no nonlinearity: the activations may point
  anywhere on the sphere), then ``Linear(d, C)``. d = ``feature_dim`` of :func:`build_model`:
  :data:`MNIST_FEATURE_DIM` (64) by default, 2 for the paper's Figure 2. At d = 2 a biased head cannot be
  described by the directional vMF model (see ``-nobias`` and ``-cosine``); at d = 64 it can.
* ``mnist-conv-half`` -- the student: the same with half the kernels (8, 8, 16, 16).
* ``mnist-conv-W`` -- the same with W, W, 2W, 2W kernels (any positive W).
* a ``-nobias`` suffix (``mnist-conv-nobias``) -- the final layer without bias, ``logits = W a``. With a 2-D
  penultimate layer and a bias, a net can park classes near the origin (small |a|, small |w_i|, large b_i),
  where the direction of a says nothing; the directional vMF model (and so Eq. 7) cannot describe such classes.
  Without the bias every class must own a sector of the circle.
* a ``-cosine`` suffix -- the final layer without bias and with unit-norm rows, ``logits_i = (w_i/|w_i|) . a``
  (the rows are normalized in every forward pass; ``head.weight`` returns the normalized rows, so
  ``VMFPrior.from_linear(model.head, kappa)`` sees the layer the model uses). Without a bias but with unequal
  row norms, a class whose |w_i| is small loses its own direction w_i/|w_i| to a neighbour with a larger norm,
  and Eq. 7 then gives its affinity row to that neighbour; with equal norms class i always wins at w_i/|w_i|.
* ``wrn-D-K`` -- ``common.wrn.WideResNet(D, K)`` for 32x32 RGB images (WRN-40-2 teacher, WRN-16-2 student).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from common.wrn import WideResNet

__all__ = [
    "MNISTConvNet",
    "build_model",
    "check_architecture",
    "feature_dim_of",
    "MNIST_TEACHER_WIDTH",
    "MNIST_FEATURE_DIM",
    "UnitRows",
]

MNIST_TEACHER_WIDTH = 16
"""Kernels of the first two conv layers of ``mnist-conv`` (the last two have twice as many)."""
MNIST_FEATURE_DIM = 64
"""The penultimate dimension d of the mnist-conv nets unless ``feature_dim`` says otherwise."""
_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
_MNIST = re.compile(r"^mnist-conv(?:-(half|\d+))?(-nobias|-cosine)?$")


class UnitRows(nn.Module):
    """A parametrization that scales every row of a weight matrix to unit length."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """(C, d) -> (C, d) with unit rows."""
        return nn.functional.normalize(weight, dim=1)


class MNISTConvNet(nn.Module):
    """Four conv layers (conv-BN-ReLU), a d-dimensional penultimate layer and a linear head, for 28x28 images.

    Args:
        width: kernels of the first two conv layers (the last two have ``2 * width``).
        feature_dim: penultimate dimension d (2 for the paper's Figure 2, 64 for the experiments).
        num_classes: C.
        image_channels: input channels (1 for MNIST).
        head: "linear" (W a + b), "nobias" (W a) or "cosine" (rows of W normalized, no bias).
    """

    def __init__(
        self,
        width: int = MNIST_TEACHER_WIDTH,
        feature_dim: int = 2,
        num_classes: int = 10,
        image_channels: int = 1,
        head: str = "linear",
    ):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        wide = 2 * width

        def conv(in_channels, out_channels):
            return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(image_channels, width),
            *conv(width, width),
            nn.MaxPool2d(2),
            *conv(width, wide),
            *conv(wide, wide),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(wide * 7 * 7, feature_dim),
        )
        self.feature_dim = feature_dim
        if head not in ("linear", "nobias", "cosine"):
            raise ValueError(f"head must be linear, nobias or cosine, got {head!r}")
        self.head = nn.Linear(feature_dim, num_classes, bias=head == "linear")
        if head == "cosine":
            nn.utils.parametrize.register_parametrization(self.head, "weight", UnitRows())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations. Args: images (B, 1, 28, 28) in [0, 1]. Returns: (B, d)."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits. Args: images (B, 1, 28, 28) in [0, 1]. Returns: (B, C)."""
        return self.head(self.features(images))


def check_architecture(name: str, image_shape: tuple[int, int, int]) -> None:
    """Raise ``ValueError`` if ``name`` is not an architecture or does not fit images of ``image_shape`` (C, H, W)."""
    if _MNIST.match(str(name)):
        if tuple(image_shape[1:]) != (28, 28):
            raise ValueError(
                f"architecture {name!r} is for 28x28 images; the data has {image_shape[1]}x{image_shape[2]}"
            )
        return
    match = _WRN.match(str(name))
    if match:
        depth = int(match.group(1))
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"{name!r}: a WRN's depth must be 6n + 4 (10, 16, 22, 28, 40, ...), got {depth}")
        if tuple(image_shape) != (3, 32, 32):
            raise ValueError(f"architecture {name!r} is for 32x32 RGB images; the data has shape {tuple(image_shape)}")
        return
    raise ValueError(
        f"unknown architecture {name!r}: use mnist-conv, mnist-conv-half, mnist-conv-W (each with an "
        "optional -nobias or -cosine suffix) or wrn-D-K "
        "(e.g. wrn-40-2, wrn-16-2)"
    )


def feature_dim_of(state_dict: dict) -> int:
    """The penultimate dimension d of a saved model: the input width of its ``head`` layer."""
    for key in ("head.weight", "head.parametrizations.weight.original"):
        if key in state_dict:
            return int(state_dict[key].shape[1])
    raise ValueError("the saved model has no final layer named 'head'")


def build_model(
    name: str, num_classes: int, image_shape: tuple[int, int, int], feature_dim: int | None = None
) -> nn.Module:
    """A fresh model by name (see the module docstring).

    Args:
        name: architecture name.
        num_classes: C.
        image_shape: (C_in, H, W) of the images.
        feature_dim: the penultimate dimension d of an mnist-conv net (None: :data:`MNIST_FEATURE_DIM`); a WRN
            has its own (64 k), and any other value for it is refused.

    Returns:
        the model, with ``features`` and ``head``.
    """
    check_architecture(name, image_shape)
    if feature_dim is not None and (not isinstance(feature_dim, int) or feature_dim < 2):
        raise ValueError(f"--feature-dim must be an integer >= 2, got {feature_dim!r}")
    match = _MNIST.match(name)
    if match:
        size = match.group(1)
        width = MNIST_TEACHER_WIDTH if size is None else MNIST_TEACHER_WIDTH // 2 if size == "half" else int(size)
        head = "linear" if match.group(2) is None else match.group(2)[1:]
        dim = MNIST_FEATURE_DIM if feature_dim is None else feature_dim
        return MNISTConvNet(width, dim, num_classes, image_shape[0], head=head)
    depth, width = map(int, _WRN.match(name).groups())
    model = WideResNet(depth, width, num_classes, "linear", image_channels=image_shape[0])
    if feature_dim is not None and feature_dim != model.feature_dim:
        raise ValueError(
            f"--feature-dim {feature_dim}: {name}'s penultimate dimension is {model.feature_dim}; "
            "leave --feature-dim unset for a WRN"
        )
    return model
