"""Architectures, the Figure 2 helpers and the table report."""
import math
import statistics

import pytest
import torch

from ckd.experiment import report_markdown, run_name, summarize
from ckd.figures import cyclic_order, same_cyclic_order
from ckd.models import build_model, check_architecture
from ckd.train import teacher_affinity


def test_architectures():
    teacher, student = build_model("mnist-conv", 10, (1, 28, 28)), build_model("mnist-conv-half", 10, (1, 28, 28))
    assert [m.out_channels for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 16, 32, 32]
    assert [m.out_channels for m in student.modules() if isinstance(m, torch.nn.Conv2d)] == [8, 8, 16, 16]
    assert teacher.features(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    wrn = build_model("wrn-10-1", 100, (3, 32, 32))
    assert wrn.feature_dim == 64 and wrn(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert build_model("mnist-conv-nobias", 10, (1, 28, 28)).head.bias is None
    for name, shape, message in (("wrn-16-2", (1, 28, 28), "32x32 RGB"), ("wrn-15-2", (3, 32, 32), "6n \\+ 4"),
                                 ("mnist-conv", (3, 32, 32), "28x28"), ("vgg", (3, 32, 32), "unknown")):
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


def test_cyclic_order():
    angles = torch.tensor([0.0, 2.0, 1.0, -2.0])
    weight = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [0.3], [2.0], [1.0]])
    assert cyclic_order(weight) == [0, 2, 1, 3]
    assert same_cyclic_order([0, 2, 1, 3], [1, 3, 0, 2])  # rotated
    assert same_cyclic_order([0, 2, 1, 3], [0, 3, 1, 2])  # reversed
    assert not same_cyclic_order([0, 2, 1, 3], [0, 1, 2, 3])


def test_summary_and_report_against_hand_statistics():
    accuracies = {"label": [0.90, 0.80, 0.85], "ckd": [0.93, 0.82, 0.86]}
    rows = [{"student": "s", "shift": "downsample:0.5", "loss": loss, "seed": seed, "test_accuracy": value}
            for loss, values in accuracies.items() for seed, value in enumerate(values)]
    summary = summarize(rows)
    mean, sd, n = summary["cells"][("s", "downsample:0.5", "label")]
    assert (mean, n) == (pytest.approx(0.85), 3) and sd == pytest.approx(0.05)
    difference, standard_error, n = summary["differences"][("s", "downsample:0.5", "ckd", "label")]
    # Paired differences 0.03, 0.02, 0.01: mean 0.02, sd 0.01, standard error 0.01 / sqrt(3).
    assert difference == pytest.approx(0.02) and standard_error == pytest.approx(0.01 / math.sqrt(3)) and n == 3
    assert summary["differences"][("s", "downsample:0.5", "label", "ckd")][0] == pytest.approx(-0.02)
    text = report_markdown("T", rows, 0.95, "cmd")
    assert "| downsample-0.5 | 85.00 ± 5.00 | 87.00 ± 5.57 |" in text
    assert f"+2.00 ± {100 * 0.01 / math.sqrt(3):.2f}**" in text  # 2 / 0.577 > 2 standard errors
    assert statistics.stdev([0.93, 0.82, 0.86]) == pytest.approx(0.0557, abs=1e-4)
    with_teacher = report_markdown("T", rows, 0.95, "cmd", {"downsample:0.5": 0.7125})
    assert "| downsample-0.5 | 85.00 ± 5.00 | 87.00 ± 5.57 | 71.25 |" in with_teacher
    assert run_name("wrn-16-2", "photometric:0.6", "ckd+kd", 2) == "wrn-16-2_photometric-0.6_ckd-kd_s2"


def test_figure2_command_on_a_tiny_teacher(tmp_path, tiny_npz, tiny_teacher):
    from ckd.figures import main

    teacher_dir, _ = tiny_teacher
    summary = main(["--teacher", str(teacher_dir), "--student", str(teacher_dir), "--data", str(tiny_npz),
                    "--out", str(tmp_path / "figure.png"), "--json", str(tmp_path / "figure.json")])
    assert (tmp_path / "figure.png").stat().st_size > 10_000 and (tmp_path / "figure.json").is_file()
    assert summary["teacher_order"] == summary["student_order"] and summary["same_cyclic_order"]
    assert len(summary["teacher_concentration"]) == 10 and all(k > 0 for k in summary["teacher_concentration"])
