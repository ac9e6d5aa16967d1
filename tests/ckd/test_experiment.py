"""What defines the Table 3 experiment: which images each net sees, which images each score uses, the teacher's
gates, kappa's selection on validation, and the driver's stop and resume."""

import json
import math

import pytest
import torch
from torch import nn

import ckd.experiment as experiment
import ckd.train as train_module
from ckd.experiment import TeacherGateError, run_experiment, selection_candidates, teacher_gates
from ckd.shifts import apply_shift, parse_shift
from ckd.train import TEST_SHIFT_SEED, TrainConfig, train
from common.config import ConfigError
from common.run import epoch_order

QUIET = {"progress": False, "cpu": True, "epochs": 1}


def test_the_kd_targets_are_the_teachers_logits_on_exactly_the_students_shifted_batch(
    tmp_path, tiny_data, tiny_teacher, single_thread, monkeypatch
):
    teacher_dir, _ = tiny_teacher
    seen = {"student": [], "teacher_logits": []}

    def record_student(module, inputs):
        if module.training:  # the student's scoring passes run in eval mode
            seen["student"].append(inputs[0].detach().clone())

    real_build, real_loss = train_module.build_model, train_module.distillation_loss

    def build_recording(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(record_student)
        return model

    def loss_recording(loss, logits, labels, teacher_logits, *args, **kwargs):
        seen["teacher_logits"].append(teacher_logits.detach().clone())
        return real_loss(loss, logits, labels, teacher_logits, *args, **kwargs)

    monkeypatch.setattr(train_module, "build_model", build_recording)
    monkeypatch.setattr(train_module, "distillation_loss", loss_recording)
    shift, seed, batch = "downsample:0.25", 3, 64
    config = TrainConfig(
        student="mnist-conv-2",
        loss="kd",
        teacher=str(teacher_dir),
        shift=shift,
        seed=seed,
        out=str(tmp_path / "run"),
        batch_size=batch,
        train_subset=192,
        **QUIET,
    )
    train(config, data=tiny_data, log=lambda *_: None)
    assert len(seen["student"]) == 3 and len(seen["teacher_logits"]) == 3  # 192 images / 64: three steps
    # The batch is the shifted one, in the run's shuffling order ...
    shifted = apply_shift(tiny_data.x_train[:192], parse_shift(shift), seed=seed).float() / 255.0
    order = epoch_order(192, seed, 1)
    assert torch.equal(seen["student"][0], shifted[order[:batch]])
    clean = tiny_data.x_train[:192].float() / 255.0
    assert not torch.equal(seen["student"][0], clean[order[:batch]])
    # ... and each step's KD targets are the teacher's logits on that very batch (computed once per run).
    teacher = train_module.load_model(str(teacher_dir))[0]
    with torch.no_grad():
        for student_batch, teacher_logits in zip(seen["student"], seen["teacher_logits"]):
            torch.testing.assert_close(teacher_logits, teacher(student_batch), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(teacher_logits, teacher(clean[order[:batch]]), atol=1e-3)


def test_an_augmented_student_queries_the_teacher_on_every_augmented_batch(
    tmp_path, tiny_data, tiny_teacher, single_thread, monkeypatch
):
    teacher_dir, _ = tiny_teacher
    seen = {"teacher": [], "student": []}

    def record(name):
        def hook(module, inputs):
            if name == "teacher" or module.training:
                seen[name].append(inputs[0].detach().clone())

        return hook

    real_load, real_build = train_module.load_model, train_module.build_model

    def load_recording(*args, **kwargs):
        model, checkpoint = real_load(*args, **kwargs)
        model.register_forward_pre_hook(record("teacher"))
        return model, checkpoint

    def build_recording(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(record("student"))
        return model

    monkeypatch.setattr(train_module, "load_model", load_recording)
    monkeypatch.setattr(train_module, "build_model", build_recording)
    config = TrainConfig(
        student="mnist-conv-2",
        loss="kd",
        teacher=str(teacher_dir),
        augment=True,
        out=str(tmp_path / "run"),
        batch_size=64,
        train_subset=128,
        **QUIET,
    )
    train(config, data=tiny_data, log=lambda *_: None)
    assert len(seen["student"]) == 2 and len(seen["teacher"]) == 2  # random crops: no fixed images to cache
    for student_batch, teacher_batch in zip(seen["student"], seen["teacher"]):
        assert torch.equal(student_batch, teacher_batch)


def test_clean_score_uses_unshifted_and_domain_score_shifted_test_images(
    tmp_path, tiny_data, single_thread, monkeypatch
):
    calls = []

    def fake_accuracy(model, images, labels, batch_size=1000):
        calls.append(images.clone())
        return float(images.double().mean()) / 255.0  # a different number for different images

    monkeypatch.setattr(train_module, "accuracy", fake_accuracy)
    shift = "photometric:0.8"
    config = TrainConfig(
        student="mnist-conv-2",
        loss="label",
        shift=shift,
        seed=5,
        num_validation=32,
        out=str(tmp_path / "run"),
        batch_size=64,
        train_subset=128,
        **QUIET,
    )
    result = train(config, data=tiny_data, log=lambda *_: None)
    shifted_test = apply_shift(tiny_data.x_test, parse_shift(shift), seed=TEST_SHIFT_SEED)
    assert not torch.equal(shifted_test, tiny_data.x_test)
    assert result["test_accuracy"] == pytest.approx(float(tiny_data.x_test.double().mean()) / 255.0)
    assert result["domain_test_accuracy"] == pytest.approx(float(shifted_test.double().mean()) / 255.0)
    # The validation images: the last 32 training images, in the student's domain (shifted with the run's seed).
    validation = apply_shift(tiny_data.x_train[-32:], parse_shift(shift), seed=5)
    assert result["validation_accuracy"] == pytest.approx(float(validation.double().mean()) / 255.0)
    assert [c.shape[0] for c in calls] == [64, 64, 32]


def test_a_run_without_shift_scores_both_domains_on_clean_images(tmp_path, tiny_data, single_thread):
    config = TrainConfig(
        student="mnist-conv-2",
        loss="label-smoothing",
        smoothing=0.1,
        out=str(tmp_path / "run"),
        batch_size=64,
        train_subset=64,
        **QUIET,
    )
    result = train(config, data=tiny_data, log=lambda *_: None)
    assert result["test_accuracy"] == result["domain_test_accuracy"] and result["smoothing"] == 0.1
    assert result["validation_accuracy"] is None


def test_matched_smoothing_takes_eps_from_the_teachers_affinity(tmp_path, tiny_data, tiny_teacher, single_thread):
    teacher_dir, _ = tiny_teacher
    teacher, saved = train_module.load_model(teacher_dir)
    config = TrainConfig(
        student="mnist-conv-2",
        loss="label-smoothing",
        teacher=str(teacher_dir),
        concentration=4.0,
        activation_norm=2.0,
        affinity_samples=400,
        out=str(tmp_path / "run"),
        batch_size=64,
        train_subset=64,
        **QUIET,
    )
    result = train(config, data=tiny_data, log=lambda *_: None)
    affinity = train_module.teacher_affinity(teacher, 4.0, 2.0, 400)
    assert result["smoothing"] == pytest.approx(1 - float(affinity.diagonal().double().mean()), abs=1e-6)
    assert 0.05 < result["smoothing"] < 0.95  # a soft affinity at this small kappa and norm: the value is informative
    assert result["teacher_kappa_mle"] == pytest.approx(saved["kappa_mle"])


class _Features(nn.Module):
    """A "network" whose penultimate activations are its input, with a given final layer."""

    def __init__(self, weight, bias=None):
        super().__init__()
        self.head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            if bias is not None:
                self.head.bias.copy_(bias)

    def features(self, images):
        return images.flatten(1) * 255.0  # features_of divides by 255


def _points(directions, labels, length=3.0):
    return (length * directions[labels]).reshape(len(labels), 1, 1, -1) / 255.0


def test_the_gates_pass_a_teacher_the_vmf_model_describes():
    weight = 4.0 * torch.eye(4)
    labels = torch.arange(4).repeat(5)
    model = _Features(weight, torch.zeros(4))
    gates = teacher_gates(model, _points(torch.eye(4), labels), labels, [(50.0, 10.0), (5.0, 3.0)], 400)
    assert gates["rows_checked"] == 2 and gates["normalization_cost"] == 0.0 and gates["accuracy"] == 1.0


def test_the_gates_refuse_a_teacher_whose_affinity_rows_peak_elsewhere():
    # No bias and unequal row norms: at class 1's own direction, class 0 (4x longer, 60 degrees away) has the
    # larger logit (4 cos 60 = 2 > 1), so row 1 of the affinity peaks at class 0.
    angles = torch.tensor([0.0, math.pi / 3, math.pi, 3 * math.pi / 2])
    directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    weight = directions * torch.tensor([[4.0], [1.0], [4.0], [4.0]])
    labels = torch.arange(4).repeat(5)
    model = _Features(weight)
    with pytest.raises(TeacherGateError, match="row 1 peaks at class 0"):
        teacher_gates(model, _points(directions, labels), labels, [(200.0, 10.0)], 400)
    # The same directions with equal norms pass the first gate.
    teacher_gates(_Features(directions * 4.0), _points(directions, labels), labels, [(200.0, 10.0)], 400)


def test_the_gates_refuse_a_teacher_that_normalization_breaks():
    # w_0 = e_0, w_1 = 3 e_1, activations (1, 0.8) of class 1: W a = (1, 2.4) -> class 1, cosines (0.78, 0.62) ->
    # class 0. Each row of the affinity still peaks at its class (at e_0 the logits are (r, 0), at e_1 (0, 3r)).
    weight = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    images = torch.tensor([[1.0, 0.8], [1.0, 0.0]]).reshape(2, 1, 1, 2) / 255.0
    labels = torch.tensor([1, 0])
    with pytest.raises(TeacherGateError, match="costs 50.00 points"):
        teacher_gates(_Features(weight), images, labels, [(200.0, 10.0)], 400)


def test_selection_candidates_include_the_mle_and_kappa_equal_to_the_norm():
    grid = experiment.PRESETS["mnist-table3"]["selection"]["grid"]
    candidates = selection_candidates(grid, kappa_mle=78.4, mean_norm=36.2)
    values = list(candidates.values())
    assert (78.4, 36.2) in values and (36.2, 36.2) in values


def _tiny_preset(**changes):
    preset = {
        "title": "tiny",
        "dataset": "mnist",
        "teacher": {
            "architecture": "mnist-conv-4",
            "epochs": 1,
            "batch_size": 64,
            "learning_rate": 1e-2,
            "stats_images": 128,
            "train_subset": 128,
        },
        "students": ["mnist-conv-2"],
        "shifts": [None, "downsample:0.5"],
        "losses": ["label", "label-smoothing", "kd", "ckd", "ckd+kd"],
        "student": {"epochs": 1, "batch_size": 64, "train_subset": 64, "num_validation": 32, "affinity_samples": 200},
        "selection": {"seed": 99, "grid": [("kappa-mle", "mle", 1.0), ("kappa-a", 1.0, 1.0)]},
        "seeds": [0, 1],
    }
    preset.update(changes)
    return preset


def test_the_driver_selects_kappa_on_validation_pairs_seeds_and_resumes(
    tmp_path, tiny_data, single_thread, monkeypatch
):
    out = tmp_path / "exp"
    results = run_experiment(_tiny_preset(), out, None, [0, 1], 1, False, True, log=lambda *_: None, data=tiny_data)
    assert len(results["rows"]) == 2 * 2 * 5
    for entry in results["selection"].values():
        best = max(entry["candidates"].values(), key=lambda c: c["validation_accuracy"])
        assert entry["candidates"][entry["chosen"]] == best
        assert set(entry["candidates"]) == {"kappa-mle", "kappa-a"}
    # The CKD students of a shift use the chosen kappa; matched smoothing uses that affinity's off-diagonal mass.
    chosen = results["selection"]["downsample-0.5"]
    ckd_run = train_module.load_model(out / "students" / "mnist-conv-2_downsample-0.5_ckd_s1")[1]
    smooth_run = train_module.load_model(out / "students" / "mnist-conv-2_downsample-0.5_label-smoothing_s1")[1]
    assert ckd_run["concentration"] == pytest.approx(chosen["candidates"][chosen["chosen"]]["concentration"])
    assert smooth_run["smoothing"] == pytest.approx(
        chosen["candidates"][chosen["chosen"]]["off_diagonal_mass"], abs=1e-6
    )
    # Paired: a seed's students of a shift started from the same weights (same seed), whatever the loss.
    configs = [
        json.loads((out / "students" / f"mnist-conv-2_clean_{loss}_s0" / "config.json").read_text())
        for loss in ("label", "ckd")
    ]
    assert configs[0]["config"]["seed"] == configs[1]["config"]["seed"] == 0
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == 20 and set(saved["teacher_on_shifted"]) == {"clean", "downsample-0.5"}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(experiment, "train", no_training)
    monkeypatch.setattr(experiment, "train_teacher", no_training)
    again = run_experiment(_tiny_preset(), out, None, [0, 1], 1, False, True, log=lambda *_: None, data=tiny_data)
    assert again["rows"] == [{**row, "seconds": None} for row in results["rows"]]
    # A kept grid (--keep: no student weights) copied to a new folder is read back as finished, same numbers; an
    # unfinished run (no result.json yet) is left out, so that the copy starts it afresh.
    unfinished = out / "students" / "started-not-finished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    copied = experiment.keep_grid(out, tmp_path / "kept")
    assert not (tmp_path / "kept" / "students" / "started-not-finished").exists()
    assert not list((tmp_path / "kept").rglob("model.pt")) and not list((tmp_path / "kept").rglob("last.pt"))
    assert (tmp_path / "kept" / "teacher" / "classifier.pt").is_file() and copied > 3 * 20
    kept = run_experiment(
        _tiny_preset(), tmp_path / "kept", None, [0, 1], 1, False, True, log=lambda *_: None, data=tiny_data
    )
    assert kept["rows"] == again["rows"]
    # A finished run trained with other settings (here: another epoch count in the preset) is refused, by name.
    changed = _tiny_preset()
    changed["student"] = {**changed["student"], "epochs": changed["student"]["epochs"] + 1}
    with pytest.raises(ConfigError, match=r"finished run with other settings \(epochs: 1 -> 2\)"):
        run_experiment(changed, tmp_path / "kept", None, [0, 1], 1, False, True, log=lambda *_: None, data=tiny_data)
    # A folder finished before result.json existed gets one from its model.pt.
    selection = next((out / "selection").rglob("model.pt")).parent
    expected = json.loads((selection / "result.json").read_text())
    (selection / "result.json").unlink()
    assert train_module.read_student_result(selection) == expected
    assert json.loads((selection / "result.json").read_text()) == expected


def test_the_driver_stops_before_any_student_when_a_gate_fails(tmp_path, tiny_data, single_thread, monkeypatch):
    def failing(*args, **kwargs):
        raise TeacherGateError("teacher gate failed: row 3 peaks at class 5")

    monkeypatch.setattr(experiment, "teacher_gates", failing)
    out = tmp_path / "exp"
    with pytest.raises(TeacherGateError, match="row 3"):
        run_experiment(_tiny_preset(gates=True), out, None, [0], 1, False, True, log=lambda *_: None, data=tiny_data)
    assert (out / "teacher" / "classifier.pt").is_file()
    assert not (out / "students").exists() and not (out / "selection").exists()


def test_estimate_cost_counts_every_run_of_the_preset(single_thread):
    preset = experiment.PRESETS["mnist-table3"]
    cost = experiment.estimate_cost(preset, cpu=True, steps=1, seeds=list(range(8)), log=lambda *_: None)
    # 4 shifts x (label, label-smoothing, ckd) x 8 seeds + 4 shifts x 4 selection runs; 4 x (kd, ckd+kd) x 8.
    # ... and the fixed arm: (ckd, label-smoothing) at kappa = |a| at 2 shifts x 8 seeds.
    assert cost["runs"] == {"label-type": 4 * 3 * 8 + 4 * 4 + 2 * 2 * 8, "kd-type": 4 * 2 * 8}
    assert 0 < cost["label_run_seconds"] < cost["kd_run_seconds"]  # KD runs the teacher on every batch
    expected = (cost["teacher_seconds"] + 144 * cost["label_run_seconds"] + 64 * cost["kd_run_seconds"]) / 3600
    assert cost["total_hours"] == pytest.approx(expected)


def test_a_fixed_arm_trains_ckd_and_its_matched_smoothing_at_its_own_kappa(tmp_path, tiny_data, single_thread):
    arm = {
        "name": "kappa-a/2",
        "kappa": 0.5,
        "norm": 1.0,
        "shifts": ["downsample:0.5"],
        "losses": ["ckd", "label-smoothing"],
    }
    preset = _tiny_preset(losses=["label", "ckd"], arms=[arm])
    out = tmp_path / "exp"
    results = run_experiment(preset, out, None, [0], 1, False, True, log=lambda *_: None, data=tiny_data)
    losses = [(row["shift"], row["loss"]) for row in results["rows"]]
    assert losses == [
        (None, "label"),
        (None, "ckd"),
        ("downsample:0.5", "label"),
        ("downsample:0.5", "ckd"),
        ("downsample:0.5", "ckd@kappa-a/2"),
        ("downsample:0.5", "label-smoothing@kappa-a/2"),
    ]
    teacher = train_module.load_model(out / "teacher")[1]
    facts = results["arms"]["kappa-a/2"]
    assert facts["concentration"] == pytest.approx(0.5 * teacher["mean_activation_norm"])
    assert facts["activation_norm"] == pytest.approx(teacher["mean_activation_norm"])
    ckd_run = train_module.load_model(out / "students" / "mnist-conv-2_downsample-0.5_ckd_kappa-a_2_s0")[1]
    smooth_run = train_module.load_model(out / "students" / "mnist-conv-2_downsample-0.5_label-smoothing_kappa-a_2_s0")[
        1
    ]
    assert ckd_run["config"]["loss"] == "ckd" and ckd_run["concentration"] == pytest.approx(facts["concentration"])
    assert smooth_run["config"]["loss"] == "label-smoothing"
    assert smooth_run["smoothing"] == pytest.approx(facts["off_diagonal_mass"], abs=1e-6)
    # The arm's CKD is not the validated one: another kappa, another run.
    validated = train_module.load_model(out / "students" / "mnist-conv-2_downsample-0.5_ckd_s0")[1]
    assert validated["concentration"] != pytest.approx(facts["concentration"])
