"""Architectures and the Figure 2 helpers."""

import math

import pytest
import torch

from ckd.experiment import run_name
from ckd.figures import cyclic_order, same_cyclic_order
from ckd.models import build_model, check_architecture
from ckd.train import teacher_affinity


def test_architectures():
    teacher, student = build_model("mnist-conv", 10, (1, 28, 28)), build_model("mnist-conv-half", 10, (1, 28, 28))
    assert [m.out_channels for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 16, 32, 32]
    assert [m.out_channels for m in student.modules() if isinstance(m, torch.nn.Conv2d)] == [8, 8, 16, 16]
    assert teacher.features(torch.rand(3, 1, 28, 28)).shape == (3, 64)
    assert build_model("mnist-conv", 10, (1, 28, 28), feature_dim=2).features(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    wrn = build_model("wrn-10-1", 100, (3, 32, 32))
    assert wrn.feature_dim == 64 and wrn(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert build_model("mnist-conv-nobias", 10, (1, 28, 28)).head.bias is None
    for name, shape, message in (
        ("wrn-16-2", (1, 28, 28), "32x32 RGB"),
        ("wrn-15-2", (3, 32, 32), "6n \\+ 4"),
        ("mnist-conv", (3, 32, 32), "28x28"),
        ("vgg", (3, 32, 32), "unknown"),
    ):
        with pytest.raises(ValueError, match=message):
            check_architecture(name, shape)


def test_cosine_head_uses_unit_rows_and_wins_its_own_affinity_row():
    torch.manual_seed(0)
    model = build_model("mnist-conv-cosine", 10, (1, 28, 28))
    with torch.no_grad():  # unequal raw norms: the forward pass must not see them
        model.head.parametrizations.weight.original.mul_(torch.linspace(0.2, 3, 10)[:, None])
    torch.testing.assert_close(model.head.weight.norm(dim=1), torch.ones(10))
    x = torch.rand(4, 1, 28, 28)
    features = model.features(x)
    raw = model.head.parametrizations.weight.original
    torch.testing.assert_close(model(x), features @ (raw / raw.norm(dim=1, keepdim=True)).T)
    copy = build_model("mnist-conv-cosine", 10, (1, 28, 28))
    copy.load_state_dict(model.state_dict())
    torch.testing.assert_close(copy(x), model(x))
    # With equal row norms and no bias, class i has the largest logit at w_i/|w_i| (cos 0 = 1 beats every other
    # cosine), so at a concentration high enough to stay there, Eq. 7's rows peak at the class itself ...
    assert torch.equal(teacher_affinity(model, 1e4, 20.0, 500).argmax(dim=1), torch.arange(10))
    # ... which fails with the same directions and unequal norms: a short w_i loses its own direction.
    plain = build_model("mnist-conv-nobias", 10, (1, 28, 28))
    with torch.no_grad():
        plain.head.weight.copy_(raw)
    assert not torch.equal(teacher_affinity(plain, 1e4, 20.0, 500).argmax(dim=1), torch.arange(10))


def test_run_names():
    assert run_name("wrn-16-2", "photometric:0.6", "ckd+kd", 2) == "wrn-16-2_photometric-0.6_ckd-kd_s2"
    assert run_name("mnist-conv-half", None, "label-smoothing", 0) == "mnist-conv-half_clean_label-smoothing_s0"


def test_cyclic_order():
    angles = torch.tensor([0.0, 2.0, 1.0, -2.0])
    weight = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [0.3], [2.0], [1.0]])
    assert cyclic_order(weight) == [0, 2, 1, 3]
    assert same_cyclic_order([0, 2, 1, 3], [1, 3, 0, 2])  # rotated
    assert same_cyclic_order([0, 2, 1, 3], [0, 3, 1, 2])  # reversed
    assert not same_cyclic_order([0, 2, 1, 3], [0, 1, 2, 3])


def test_figure2_command_on_a_tiny_teacher(tmp_path, tiny_npz, tiny_teacher, single_thread):
    from ckd.figures import main

    teacher_dir, _ = tiny_teacher
    summary = main(
        [
            "--teacher",
            str(teacher_dir),
            "--student",
            str(teacher_dir),
            "--label-student",
            str(teacher_dir),
            "--data",
            str(tiny_npz),
            "--out",
            str(tmp_path / "figure.png"),
            "--json",
            str(tmp_path / "f.json"),
        ]
    )
    assert (tmp_path / "figure.png").stat().st_size > 10_000 and (tmp_path / "f.json").is_file()
    models = summary["models"]
    assert set(models) == {"teacher", "CKD student", "label-only student"} and summary["dim"] == 64
    # The same network three times: the same fitted kappa, so "more concentrated" is False, not True.
    assert models["CKD student"]["kappa"] == models["teacher"]["kappa"] > 0
    assert models["CKD student"]["more_concentrated_than_teacher"] is False
    assert len(models["teacher"]["kappa_per_class"]) == 10


def test_cosine_density_against_the_closed_form_on_the_2_sphere():
    # On S^2 (d = 3) the cosine t = mu . z of a vMF(mu, kappa) draw has density kappa e^{kappa t} / (2 sinh kappa).
    from ckd.figures import cosine_density

    t = torch.linspace(-0.9, 0.95, 7, dtype=torch.float64)
    for kappa in (0.5, 12.0):
        expected = kappa * torch.exp(kappa * t) / (2 * math.sinh(kappa))
        torch.testing.assert_close(cosine_density(t, kappa, 3), expected, rtol=1e-4, atol=0)
    # d = 64, kappa = 0: the uniform sphere's cosine, (1 - t^2)^{30.5} / B(1/2, 31.5).
    from scipy import special

    expected = (1 - t**2) ** 30.5 / special.beta(0.5, 31.5)
    torch.testing.assert_close(cosine_density(t, 0.0, 64), expected, rtol=1e-4, atol=1e-12)
