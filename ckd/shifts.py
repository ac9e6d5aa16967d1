"""Domain shifts of the student's training images (the paper's Table 3), seeded and deterministic.

A shift is written ``KIND:AMOUNT``:

* ``photometric:S`` -- per image, a brightness factor b, a contrast factor c and (RGB only) a saturation factor
  s, each drawn uniformly from ``[max(0, 1 - S), 1 + S]`` (the ranges of torchvision's ``ColorJitter(S, S, S)``),
  applied in that fixed order with clipping to [0, 1] after each step:
  brightness ``x <- b x``; contrast ``x <- c x + (1 - c) mean(gray(x))`` (the per-image mean gray level);
  saturation ``x <- s x + (1 - s) gray(x)`` with ``gray = 0.299 R + 0.587 G + 0.114 B``. On grayscale images
  (MNIST) only brightness and contrast apply.
* ``downsample:F`` -- nearest-neighbour resizing to ``round(F H) x round(F W)`` and back up to ``H x W``
  (information is lost; the image keeps its size). No randomness.

The factors are drawn once per training image from a CPU ``torch.Generator`` seeded with the run's seed, in
one call per factor over the whole training set in its stored order, so the shifted training set is a fixed
dataset, the same on any device, and the same for every loss trained with that seed (paired comparisons).
The teacher (trained on clean images) sees the same shifted images when KD queries it; test images stay clean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["parse_shift", "apply_shift", "photometric", "jitter", "downsample", "SHIFT_KINDS", "GRAY_WEIGHTS"]

SHIFT_KINDS = ("photometric", "downsample")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights: the gray level of an RGB image (torchvision's rgb_to_grayscale uses the same)."""


def parse_shift(text: str | None) -> tuple[str, float] | None:
    """``"photometric:0.6"`` -> ``("photometric", 0.6)``; None or "none" -> None.

    Raises:
        ValueError: an unknown kind, or an amount outside (0, 1].
    """
    if text is None or str(text).lower() in ("", "none"):
        return None
    kind, separator, amount = str(text).partition(":")
    if kind not in SHIFT_KINDS or not separator:
        raise ValueError(
            f"shift must be photometric:DEGREE or downsample:FACTOR (e.g. photometric:0.6, "
            f"downsample:0.5), got {text!r}"
        )
    try:
        value = float(amount)
    except ValueError:
        raise ValueError(f"shift {text!r}: {amount!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"shift {text!r}: the amount must lie in (0, 1], got {value}")
    return kind, value


def _gray(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) gray level (the image itself when C = 1)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(GRAY_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _factors(count: int, degree: float, generator: torch.Generator) -> torch.Tensor:
    """(count,) factors uniform on [max(0, 1 - degree), 1 + degree]."""
    low, high = max(0.0, 1.0 - degree), 1.0 + degree
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def photometric(images: torch.Tensor, degree: float, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Random brightness, contrast and (RGB) saturation jitter of the given degree, one draw per image.

    Args:
        images: (B, C, H, W) float in [0, 1], C = 1 or 3.
        degree: S; factors are uniform on [max(0, 1 - S), 1 + S].
        generator: a CPU ``torch.Generator`` (the draws do not depend on the images' device).

    Returns:
        ``(shifted (B, C, H, W) in [0, 1], factors)`` with factors a dict of (B,) float64 tensors:
        "brightness", "contrast" and, for RGB, "saturation".
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(images.shape)}")
    count = images.shape[0]
    factors = {"brightness": _factors(count, degree, generator), "contrast": _factors(count, degree, generator)}
    if images.shape[1] == 3:
        factors["saturation"] = _factors(count, degree, generator)
    return jitter(images, factors), factors


def jitter(images: torch.Tensor, factors: dict) -> torch.Tensor:
    """Apply given brightness, contrast and (if present) saturation factors, one per image, in that order.

    Args:
        images: (B, C, H, W) float in [0, 1].
        factors: dict of (B,) tensors "brightness", "contrast" and optionally "saturation" (RGB only).

    Returns:
        (B, C, H, W) in [0, 1].
    """

    def per_image(name):
        return factors[name].to(images.device, images.dtype).view(-1, 1, 1, 1)

    out = (images * per_image("brightness")).clamp(0, 1)
    contrast = per_image("contrast")
    out = (contrast * out + (1 - contrast) * _gray(out).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    if "saturation" in factors:
        saturation = per_image("saturation")
        out = (saturation * out + (1 - saturation) * _gray(out)).clamp(0, 1)
    return out


def downsample(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Nearest-neighbour down to ``round(factor * H) x round(factor * W)``, then nearest back up to ``H x W``.

    Args:
        images: (B, C, H, W) float.
        factor: in (0, 1].

    Returns:
        (B, C, H, W): the same size, with the detail of the smaller image.
    """
    height, width = images.shape[-2:]
    small = (max(1, round(factor * height)), max(1, round(factor * width)))
    reduced = F.interpolate(images, size=small, mode="nearest")
    return F.interpolate(reduced, size=(height, width), mode="nearest")


def apply_shift(
    images: torch.Tensor, shift: tuple[str, float] | None, seed: int, batch_size: int = 4096
) -> torch.Tensor:
    """Shift a whole training set once (see the module docstring).

    Args:
        images: (N, C, H, W) uint8.
        shift: ``parse_shift``'s result, or None (the images come back unchanged).
        seed: seeds the photometric factors.
        batch_size: images processed at once (bounds memory; does not change the result).

    Returns:
        (N, C, H, W) uint8 shifted images (rounded to the nearest level).
    """
    if shift is None:
        return images
    kind, amount = shift
    generator = torch.Generator().manual_seed(int(seed))
    factors = None
    if kind == "photometric":
        # All factors in one draw each, so the result does not depend on batch_size.
        fake = torch.zeros(images.shape[0], images.shape[1], 1, 1)
        _, factors = photometric(fake, amount, generator)
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].float() / 255.0
        if kind == "photometric":
            x = jitter(x, {name: value[start : start + batch_size] for name, value in factors.items()})
        else:
            x = downsample(x, amount)
        chunks.append((x * 255.0).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(chunks) if chunks else images.clone()
