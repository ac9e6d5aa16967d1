"""Training runs of every loss on tiny data, exact resume, the teacher's statistics, and the command line."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import optimize, special

from ckd.models import build_model
from ckd.train import TrainConfig, load_model, teacher_affinity, train
from common.run import read_metrics

REPO = Path(__file__).resolve().parents[2]
QUIET = {"progress": False, "cpu": True, "batch_size": 128, "train_subset": 256, "epochs": 1}


@pytest.mark.parametrize(
    "loss,shift", [("label", None), ("kd", "photometric:0.6"), ("ckd", "downsample:0.5"), ("ckd+kd", None)]
)
def test_two_steps_of_each_loss(tmp_path, tiny_data, tiny_teacher, single_thread, loss, shift):
    teacher_dir, _ = tiny_teacher
    config = TrainConfig(
        student="mnist-conv-2",
        loss=loss,
        teacher=str(teacher_dir),
        shift=shift,
        out=str(tmp_path / "run"),
        affinity_samples=200,
        **QUIET,
    )
    torch.manual_seed(0)
    before = build_model("mnist-conv-2", 10, (1, 28, 28))  # the seed-0 initialization the run starts from
    result = train(config, data=tiny_data, log=lambda *_: None)
    assert 0.0 <= result["test_accuracy"] <= 1.0
    model, checkpoint = load_model(tmp_path / "run")
    assert checkpoint["architecture"] == "mnist-conv-2" and checkpoint["test_accuracy"] == result["test_accuracy"]
    moved = any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), model.state_dict().values()))
    assert moved  # two optimizer steps changed the weights
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in records if "train_loss" in r] == [1]
    assert math.isfinite(records[-1]["test_accuracy"])
    assert ("affinity" in checkpoint) == (loss in ("ckd", "ckd+kd"))


def test_ckd_targets_use_the_teachers_mle_concentration_and_norm(tmp_path, tiny_data, tiny_teacher, single_thread):
    teacher_dir, teacher_result = tiny_teacher
    teacher, saved = load_model(teacher_dir)
    # Independent MLE on S^{d-1}: A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = mean cosine to the head's directions.
    with torch.no_grad():
        features = teacher.features(tiny_data.x_train.float() / 255.0).double().numpy()
    directions = teacher.head.weight.detach().double().numpy()
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    mean_cosine = float(np.mean(np.sum(unit * directions[tiny_data.y_train.numpy()], axis=1)))
    half = features.shape[1] / 2
    assert features.shape[1] == 64  # the default penultimate dimension
    kappa = optimize.brentq(
        lambda k: special.ive(half, k) / special.ive(half - 1, k) - mean_cosine, 1e-6, 1e4, xtol=1e-10
    )
    assert saved["kappa_mle"] == pytest.approx(kappa, rel=1e-5)
    assert saved["mean_activation_norm"] == pytest.approx(float(np.linalg.norm(features, axis=1).mean()), rel=1e-5)
    assert teacher_result["kappa_mle"] == saved["kappa_mle"]

    config = TrainConfig(
        student="mnist-conv-2",
        loss="ckd",
        teacher=str(teacher_dir),
        out=str(tmp_path / "mle"),
        affinity_samples=300,
        **QUIET,
    )
    train(config, data=tiny_data, log=lambda *_: None)
    stored = load_model(tmp_path / "mle")[1]
    torch.testing.assert_close(
        stored["affinity"], teacher_affinity(teacher, kappa, saved["mean_activation_norm"], 300), rtol=0, atol=1e-5
    )
    assert stored["concentration"] == pytest.approx(kappa, rel=1e-5)
    # A given concentration replaces the MLE.
    given = TrainConfig(
        student="mnist-conv-2",
        loss="ckd",
        teacher=str(teacher_dir),
        out=str(tmp_path / "given"),
        affinity_samples=300,
        concentration=50.0,
        **QUIET,
    )
    train(given, data=tiny_data, log=lambda *_: None)
    stored = load_model(tmp_path / "given")[1]
    assert stored["concentration"] == 50.0
    torch.testing.assert_close(
        stored["affinity"], teacher_affinity(teacher, 50.0, saved["mean_activation_norm"], 300), rtol=0, atol=1e-5
    )


def test_resume_is_exact_and_refuses_another_config(tmp_path, tiny_data, tiny_teacher, single_thread):
    teacher_dir, _ = tiny_teacher
    settings = dict(
        student="mnist-conv-2",
        loss="ckd+kd",
        teacher=str(teacher_dir),
        shift="photometric:0.4",
        affinity_samples=200,
        progress=False,
        cpu=True,
        batch_size=64,
        train_subset=192,
        epochs=2,
    )
    straight = train(TrainConfig(out=str(tmp_path / "straight"), **settings), data=tiny_data, log=lambda *_: None)
    partial = train(
        TrainConfig(out=str(tmp_path / "split"), stop_after=1, **settings), data=tiny_data, log=lambda *_: None
    )
    assert partial["stopped"] == "stop_after" and partial["test_accuracy"] is None
    with pytest.raises(ValueError, match="pass --resume"):
        train(TrainConfig(out=str(tmp_path / "split"), **settings), data=tiny_data, log=lambda *_: None)
    with pytest.raises(ValueError, match="loss: 'ckd\\+kd' -> 'kd'"):
        train(
            TrainConfig(out=str(tmp_path / "split"), resume=True, **{**settings, "loss": "kd"}),
            data=tiny_data,
            log=lambda *_: None,
        )
    torch.manual_seed(123)  # resuming restores the RNG state: the global state here must not matter
    resumed = train(
        TrainConfig(out=str(tmp_path / "split"), resume=True, **settings), data=tiny_data, log=lambda *_: None
    )
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    a, b = load_model(tmp_path / "straight")[0].state_dict(), load_model(tmp_path / "split")[0].state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = [
        [r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if "train_loss" in r]
        for name in ("straight", "split")
    ]
    assert losses[0] == losses[1]


def test_a_teacher_from_another_dataset_is_refused(tmp_path, tiny_data, tiny_teacher):
    teacher_dir, _ = tiny_teacher
    config = TrainConfig(
        student="mnist-conv-2",
        loss="kd",
        teacher=str(teacher_dir),
        dataset="cifar10",
        out=str(tmp_path / "run"),
        **QUIET,
    )
    with pytest.raises(ValueError, match="trained on mnist"):
        train(config, data=tiny_data, log=lambda *_: None)


def test_a_user_mistake_prints_one_error_line_from_the_shell(tmp_path, tiny_npz):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ckd.train",
            "--data",
            str(tiny_npz),
            "--out",
            str(tmp_path / "run"),
            "--cpu",
            "--loss",
            "kd",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0] == "error: --loss kd needs --teacher (a ckd.teacher run folder or its classifier.pt)"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--shift", "blur:0.5"], "shift must be photometric"),
        (["--student", "resnet-50"], "unknown architecture"),
        (["--student", "wrn-16-2"], "is for 32x32 RGB images"),
        (["--loss", "ckd", "--teacher", "missing-folder/model.pt"], "does not exist"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--loss", "distill"], "must be one of"),
        (["--no-such-flag"], "unknown option --no-such-flag"),
    ],
)
def test_user_mistakes_become_one_error_line(tmp_path, tiny_npz, capsys, args, message):
    from ckd.train import main
    from common.cli import run_cli

    status = run_cli(main, ["--data", str(tiny_npz), "--out", str(tmp_path / "run"), "--cpu", "--no-progress", *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_non_finite_loss_stops_with_one_error_line_and_keeps_the_last_checkpoint(
    tmp_path, tiny_npz, capsys, monkeypatch, single_thread
):
    import ckd.train as train_module
    from ckd.train import main
    from common.cli import run_cli

    real = train_module.distillation_loss
    calls = {"count": 0}

    def poisoned(*args, **kwargs):
        calls["count"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["count"] == 3 else value  # the first step of epoch 2

    monkeypatch.setattr(train_module, "distillation_loss", poisoned)
    out = tmp_path / "run"
    status = run_cli(
        main,
        [
            "--data",
            str(tiny_npz),
            "--out",
            str(out),
            "--cpu",
            "--no-progress",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--train-subset",
            "256",
            "--student",
            "mnist-conv-2",
        ],
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: non-finite loss at epoch 2, step 0") and "last.pt: epoch 1" in lines[0]
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 1 and not (out / "model.pt").exists()


def test_feature_dim_sets_the_penultimate_layer_and_is_refused_for_a_wrn(
    tmp_path, tiny_data, tiny_npz, capsys, single_thread
):
    from ckd.train import main
    from common.cli import run_cli

    config = TrainConfig(student="mnist-conv-2", feature_dim=5, out=str(tmp_path / "run"), **QUIET)
    train(config, data=tiny_data, log=lambda *_: None)
    model, checkpoint = load_model(tmp_path / "run")
    assert model.head.weight.shape == (10, 5) and checkpoint["feature_dim"] == 5
    status = run_cli(main, ["--data", str(tiny_npz), "--out", str(tmp_path / "bad"), "--cpu", "--feature-dim", "1"])
    assert status == 2 and "--feature-dim must be an integer >= 2" in capsys.readouterr().err
