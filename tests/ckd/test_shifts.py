"""The shifts of the student's training images: deterministic under a seed, and doing what they claim."""

import numpy as np
import pytest
import torch

from ckd.shifts import apply_shift, downsample, jitter, parse_shift, photometric


def test_parse_shift():
    assert parse_shift(None) is None and parse_shift("none") is None
    assert parse_shift("photometric:0.6") == ("photometric", 0.6)
    assert parse_shift("downsample:0.25") == ("downsample", 0.25)
    for bad in ("blur:0.5", "photometric", "downsample:0", "downsample:1.5", "photometric:x", "photometric:nan"):
        with pytest.raises(ValueError):
            parse_shift(bad)


@pytest.mark.parametrize("factor,block", [(0.5, 2), (0.25, 4)])
def test_downsampling_is_constant_on_blocks_and_keeps_the_top_left_pixel(factor, block):
    images = torch.rand(3, 2, 28, 28)
    out = downsample(images, factor)
    assert out.shape == images.shape
    # Independent: keep every block-th pixel and repeat it over its block.
    expected = images.numpy()[:, :, ::block, ::block].repeat(block, axis=2).repeat(block, axis=3)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert not torch.equal(out, images)


def test_downsampling_by_three_quarters_keeps_21_distinct_rows():
    images = torch.rand(2, 1, 28, 28)
    out = downsample(images, 0.75)  # 28 -> 21 -> 28: 7 rows and 7 columns are duplicates of a neighbour
    rows = {tuple(row.tolist()) for row in out[0, 0]}
    cols = {tuple(col.tolist()) for col in out[0, 0].T}
    assert len(rows) == 21 and len(cols) == 21
    # Every output pixel is one of the input's pixels of the same image.
    assert set(out[0, 0].flatten().tolist()) <= set(images[0, 0].flatten().tolist())


def _flat_images(count, seed=0):
    """Images with values in [0.2, 0.3]: no clipping for factors up to 1.8."""
    generator = torch.Generator().manual_seed(seed)
    return 0.2 + 0.1 * torch.rand(count, 1, 28, 28, generator=generator, dtype=torch.float64)


def test_photometric_changes_brightness_and_contrast_within_the_stated_range():
    images = _flat_images(400)
    degree = 0.8
    out, factors = photometric(images, degree, torch.Generator().manual_seed(0))
    assert set(factors) == {"brightness", "contrast"}  # grayscale: no saturation
    # Contrast keeps the mean, so the mean ratio is the brightness factor; the std ratio is brightness x contrast.
    brightness = out.mean(dim=(1, 2, 3)) / images.mean(dim=(1, 2, 3))
    contrast = out.std(dim=(1, 2, 3)) / (brightness * images.std(dim=(1, 2, 3)))
    torch.testing.assert_close(brightness, factors["brightness"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(contrast, factors["contrast"], rtol=1e-9, atol=1e-9)
    for value in (brightness, contrast):
        assert value.min() >= 1 - degree - 1e-9 and value.max() <= 1 + degree + 1e-9
        assert value.min() < 1 - 0.9 * degree and value.max() > 1 + 0.9 * degree  # the whole range is used
    # A smaller degree keeps to its smaller range.
    out, _ = photometric(images, 0.2, torch.Generator().manual_seed(0))
    ratio = out.mean(dim=(1, 2, 3)) / images.mean(dim=(1, 2, 3))
    assert ratio.min() >= 0.8 - 1e-9 and ratio.max() <= 1.2 + 1e-9 and ratio.max() - ratio.min() > 0.3


def test_photometric_on_rgb_also_changes_saturation():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 8, 8, generator=generator, dtype=torch.float64) * 0.5 + 0.2
    _, factors = photometric(images, 0.5, torch.Generator().manual_seed(0))
    assert set(factors) == {"brightness", "contrast", "saturation"}
    ones = torch.ones(4, dtype=torch.float64)
    gray = jitter(images, {"brightness": ones, "contrast": ones, "saturation": torch.zeros(4, dtype=torch.float64)})
    # Saturation 0 leaves the gray level in every channel.
    expected = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    for channel in range(3):
        torch.testing.assert_close(gray[:, channel], expected)
    same = jitter(images, {"brightness": ones, "contrast": ones, "saturation": ones})
    torch.testing.assert_close(same, images)


def test_apply_shift_is_deterministic_under_its_seed_and_independent_of_batching():
    images = (torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    shift = parse_shift("photometric:0.6")
    first = apply_shift(images, shift, seed=7)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, apply_shift(images, shift, seed=7, batch_size=8))
    assert not torch.equal(first, apply_shift(images, shift, seed=8))
    assert not torch.equal(first, images)
    assert apply_shift(images, None, seed=7) is images
    down = apply_shift(images, parse_shift("downsample:0.5"), seed=0)
    assert torch.equal(down, apply_shift(images, parse_shift("downsample:0.5"), seed=1))  # no randomness
    np.testing.assert_array_equal(down.numpy(), images.numpy()[:, :, ::2, ::2].repeat(2, 2).repeat(2, 3))
