"""Tests for eval/grids.py: slerp/lerp geometry, PNG grids, and the CLI dispatch (with a fake sampler)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from eval.grids import class_interpolation_grid, class_sample_grid, lerp, save_image_grid, slerp
from tests.eval.fakes import FakeSampler

pytestmark = pytest.mark.usefixtures("single_thread")


def _angles_between_steps(path):
    """(steps, d) -> (steps - 1,) angles between consecutive points, in float64."""
    unit = path.double() / path.double().norm(dim=-1, keepdim=True)
    cos = (unit[1:] * unit[:-1]).sum(-1).clamp(-1, 1)
    return torch.arccos(cos)


def _textbook_slerp(a, b, steps):
    """Independent reference: sin((1-t)θ)/sinθ a + sin(tθ)/sinθ b, for equal-norm a, b at a moderate angle."""
    a, b = a.double(), b.double()
    theta = torch.arccos((a @ b) / (a.norm() * b.norm()))
    t = torch.linspace(0, 1, steps, dtype=torch.float64).unsqueeze(-1)
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)


def test_slerp_matches_textbook_formula_and_keeps_radius():
    gen = torch.Generator().manual_seed(0)
    d = 16
    a = torch.randn(d, generator=gen)
    b = torch.randn(d, generator=gen)
    a, b = math.sqrt(d) * a / a.norm(), math.sqrt(d) * b / b.norm()
    path = slerp(a, b, 9)
    assert path.shape == (9, d)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path.double(), _textbook_slerp(a, b, 9), rtol=0, atol=1e-5)
    torch.testing.assert_close(path.norm(dim=-1), torch.full((9,), math.sqrt(d)), rtol=0, atol=1e-5)


def test_slerp_constant_angular_speed():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    total = torch.arccos((a @ b) / (a.norm() * b.norm()))
    steps = 11
    angles = _angles_between_steps(slerp(a, b, steps))
    # two-sided: each step is exactly total/(steps-1), neither more nor less
    torch.testing.assert_close(
        angles, torch.full((steps - 1,), float(total) / (steps - 1), dtype=torch.float64), rtol=0, atol=1e-9
    )


def test_slerp_batched_shapes_and_radius_interpolates_linearly():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, 6, generator=gen)
    b = 2.0 * torch.randn(3, 4, 6, generator=gen)
    path = slerp(a, b, 5)
    assert path.shape == (3, 4, 5, 6)
    t = torch.linspace(0, 1, 5)
    expected = (1 - t) * a.norm(dim=-1, keepdim=True) + t * b.norm(dim=-1, keepdim=True)  # (3, 4, 5)
    torch.testing.assert_close(path.norm(dim=-1), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(path[1, 2], slerp(a[1, 2], b[1, 2], 5))


def test_slerp_nearly_parallel_endpoints_are_stable():
    a = torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([3.0, 3e-9, 0.0, 0.0], dtype=torch.float64)
    path = slerp(a, b, 7)
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path.norm(dim=-1), torch.full((7,), 3.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(path[:, 1], torch.linspace(0, 3e-9, 7, dtype=torch.float64), rtol=1e-6, atol=1e-18)
    constant = slerp(a, a.clone(), 4)
    torch.testing.assert_close(constant, a.expand(4, 4), rtol=0, atol=0)


def test_slerp_antipodal_endpoints_follow_a_half_great_circle():
    a = torch.tensor([1.0, 2.0, -2.0])  # norm 3
    path = slerp(a, -a, 5)
    assert torch.isfinite(path).all()
    assert torch.equal(path[-1], -a)
    torch.testing.assert_close(path.norm(dim=-1), torch.full((5,), 3.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        _angles_between_steps(path), torch.full((4,), math.pi / 4, dtype=torch.float64), rtol=0, atol=1e-6
    )
    assert abs(float(path[2] @ a)) < 1e-5  # the midpoint is orthogonal to both endpoints


def test_slerp_and_lerp_reject_bad_arguments():
    a = torch.ones(4)
    with pytest.raises(ValueError, match="steps"):
        slerp(a, a, 1)
    with pytest.raises(ValueError, match="same shape"):
        slerp(a, torch.ones(5), 3)
    with pytest.raises(ValueError, match="nonzero"):
        slerp(a, torch.zeros(4), 3)
    with pytest.raises(ValueError, match="steps"):
        lerp(a, a, 0)


def test_lerp_endpoints_and_midpoint():
    a = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[4.0, -2.0], [1.0, 3.0]])
    path = lerp(a, b, 3)
    assert path.shape == (2, 3, 2)
    assert torch.equal(path[:, 0], a) and torch.equal(path[:, -1], b)
    torch.testing.assert_close(path[:, 1], torch.tensor([[2.0, 0.0], [1.0, 2.0]]))


def test_save_image_grid_writes_png_with_expected_layout(tmp_path):
    images = torch.zeros(6, 3, 4, 5)
    images[1] = 1.0
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=3)
    png = np.asarray(Image.open(path))
    padding = 2
    assert png.shape == (2 * (4 + padding) + padding, 3 * (5 + padding) + padding, 3)
    # image 1 sits in row 0, column 1; its top-left pixel is white, image 0's is black
    assert png[padding, padding + (5 + padding)].tolist() == [255, 255, 255]
    assert png[padding, padding].tolist() == [0, 0, 0]


def test_save_image_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="images"):
        save_image_grid(torch.zeros(3, 8, 8), tmp_path / "x.png", nrow=2)
    with pytest.raises(ValueError, match="channels"):
        save_image_grid(torch.zeros(2, 2, 8, 8), tmp_path / "x.png", nrow=2)
    with pytest.raises(ValueError, match="nrow"):
        save_image_grid(torch.zeros(2, 3, 8, 8), tmp_path / "x.png", nrow=0)


def test_class_sample_grid_has_one_row_per_class(tmp_path):
    sampler = FakeSampler(num_classes=3, latent_dim=4)
    images = class_sample_grid(sampler, tmp_path / "samples.png", per_class=4)
    assert images.shape == (12, 3, 8, 8)
    brightness = images.mean(dim=(1, 2, 3)).view(3, 4)  # (class row, column)
    torch.testing.assert_close(brightness, torch.tensor([1 / 3, 2 / 3, 1.0]).unsqueeze(1).expand(3, 4))
    assert (tmp_path / "samples.png").is_file()


def test_spherical_interpolation_stays_on_sphere_and_blends_labels(tmp_path):
    sampler = FakeSampler(num_classes=3, latent_dim=4, spherical=True)
    images = class_interpolation_grid(sampler, tmp_path / "interp.png", pairs=[(0, 2), (1, 0)], steps=5)
    assert images.shape == (10, 3, 8, 8)
    latents = sampler.decoded[-1].view(2, 5, 4)
    torch.testing.assert_close(latents.norm(dim=-1), torch.full((2, 5), 2.0), rtol=0, atol=1e-5)
    # great circle from e_0 to e_2: the midpoint is sqrt(2)(e_0 + e_2), not the chord midpoint (e_0 + e_2)
    torch.testing.assert_close(latents[0, 2], torch.tensor([math.sqrt(2), 0.0, math.sqrt(2), 0.0]), rtol=0, atol=1e-5)
    brightness = images.mean(dim=(1, 2, 3)).view(2, 5)
    torch.testing.assert_close(brightness[0], torch.linspace(1 / 3, 1.0, 5))
    torch.testing.assert_close(brightness[1], torch.linspace(2 / 3, 1 / 3, 5))


def test_gaussian_interpolation_is_linear(tmp_path):
    sampler = FakeSampler(num_classes=3, latent_dim=4, spherical=False)
    class_interpolation_grid(sampler, tmp_path / "interp.png", pairs=[(0, 1)], steps=3)
    torch.testing.assert_close(sampler.decoded[-1][1], torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_interpolation_rejects_bad_pairs(tmp_path):
    sampler = FakeSampler(num_classes=3)
    with pytest.raises(ValueError, match="pairs"):
        class_interpolation_grid(sampler, tmp_path / "x.png", pairs=[(0, 3)])
    with pytest.raises(ValueError, match="pairs"):
        class_interpolation_grid(sampler, tmp_path / "x.png", pairs=[])
