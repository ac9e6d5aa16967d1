"""ckd.teacher on common.classifier: its command line, its checks, and teacher checkpoints of every earlier layout
still serving the students."""

import argparse
import dataclasses

import pytest
import torch

from ckd.teacher import TeacherConfig, main, train_teacher
from ckd.train import TrainConfig, load_model, teacher_affinity, teacher_head_statistics, train
from common.classifier import ClassifierSettings
from common.config import ConfigError
from common.run import load_checkpoint
from vmfprior import VMFPrior

FLAGS = {  # the teacher's flags before it reused common.classifier's settings
    "--preset",
    "--config",
    "--architecture",
    "--feature-dim",
    "--dataset",
    "--data",
    "--out",
    "--epochs",
    "--batch-size",
    "--optimizer",
    "--learning-rate",
    "--momentum",
    "--weight-decay",
    "--schedule",
    "--milestones",
    "--augment",
    "--num-validation",
    "--train-subset",
    "--stats-images",
    "--seed",
    "--resume",
    "--stop-after",
    "--progress",
    "--cpu",
    "--threads",
}


def test_the_command_line_keeps_its_flags_and_has_no_head(monkeypatch):
    parsers = []
    monkeypatch.setattr(argparse.ArgumentParser, "print_help", lambda self, file=None: parsers.append(self))
    with pytest.raises(SystemExit):
        main(["--help"])
    flags = {
        name
        for action in parsers[-1]._actions
        for name in action.option_strings
        if name.startswith("--") and not name.startswith("--no-") and name != "--help"
    }
    assert flags == FLAGS  # the architecture fixes the final layer: no --head
    settings = {field.name for field in dataclasses.fields(ClassifierSettings)}
    assert settings <= {field.name for field in dataclasses.fields(TeacherConfig)}
    assert TeacherConfig().out == "runs/ckd-teacher" and not hasattr(TeacherConfig(), "head")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "svhn"}, "--dataset must be one of mnist, cifar10, cifar100"),
        ({"momentum": 1.5}, "--momentum in [0, 1)"),
        ({"stats_images": 0}, "--stats-images must be positive"),
        ({"schedule": "exp"}, "--schedule must be one of"),
    ],
)
def test_mistakes_are_found_before_the_data_is_loaded(tmp_path, overrides, message):
    config = TeacherConfig(data=str(tmp_path / "missing.npz"), out=str(tmp_path / "t"), **overrides)
    with pytest.raises(ConfigError) as error:
        train_teacher(config)
    assert message in str(error.value) and not (tmp_path / "t").exists()


def _legacy_teacher(folder, tiny_teacher, layout):
    """A teacher checkpoint in an earlier layout, made from the tiny teacher's weights."""
    teacher_dir, _ = tiny_teacher
    saved = load_checkpoint(teacher_dir / "classifier.pt")
    config = dict(saved["config"])
    common = {
        "model": saved["model"],
        "architecture": config["architecture"],
        "num_classes": 10,
        "image_shape": [1, 28, 28],
        "dataset": "mnist",
        "shift": None,
        "feature_dim": 64,
        "test_accuracy": saved["test_accuracy"],
        "config": config,
    }
    statistics = (
        {"kappa_mle": 31.5, "mean_activation_norm": 4.25}
        if layout == "model.pt"
        else {"concentration_mle": 31.5, "activation_norm": 4.25}
    )  # the first ckd.teacher's names
    folder.mkdir()
    torch.save({**common, **statistics}, folder / "model.pt")
    return saved


@pytest.mark.parametrize("layout", ["model.pt", "model.pt with the first key names"])
def test_teacher_checkpoints_of_earlier_layouts_serve_a_student(
    tmp_path, tiny_data, tiny_teacher, single_thread, layout
):
    folder = tmp_path / "legacy"
    saved = _legacy_teacher(folder, tiny_teacher, layout)
    teacher, checkpoint = load_model(folder)
    for key, value in saved["model"].items():
        torch.testing.assert_close(teacher.state_dict()[key], value, rtol=0, atol=0)
    assert teacher_head_statistics(checkpoint) == (31.5, 4.25)
    prior = VMFPrior.from_checkpoint(folder / "model.pt", concentration=31.5)
    assert prior.activation_norm == 4.25 and (prior.num_classes, prior.dim) == (10, 64)
    config = TrainConfig(
        student="mnist-conv-2",
        loss="ckd",
        teacher=str(folder),
        out=str(tmp_path / "student"),
        affinity_samples=200,
        progress=False,
        cpu=True,
        batch_size=128,
        train_subset=256,
        epochs=1,
    )
    result = train(config, data=tiny_data, log=lambda *_: None)
    assert (result["teacher_kappa_mle"], result["teacher_mean_activation_norm"]) == (31.5, 4.25)
    assert (result["concentration"], result["activation_norm"]) == (31.5, 4.25)  # the defaults come from the file
    student = load_checkpoint(tmp_path / "student" / "model.pt")
    torch.testing.assert_close(student["affinity"], teacher_affinity(teacher, 31.5, 4.25, 200))
