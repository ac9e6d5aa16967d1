"""One command per table: a teacher, its gates, kappa chosen on validation, students over shifts x losses x seeds.

    python -m ckd.experiment --preset mnist-table3 --data data/mnist.npz --out runs/ckd-mnist-table3 --threads 1
    python -m ckd.experiment --preset mnist-table3 --estimate-cost --threads 1   # measured seconds per run
    accelerate launch -m ckd.experiment --preset cifar100-table2 --out runs/ckd-cifar100-table2 --seeds 0 1 2

Steps, one training at a time; a finished run (its model.pt exists) is read back and an interrupted one
continues from its last.pt, so the same command resumes the whole grid, unit by unit:

1. the teacher (seed 0, clean images);
2. with ``gates`` in the preset, two checks before any student runs (:func:`teacher_gates`): every row of the
   teacher's class affinity peaks at its own class at every (kappa, |a|) the students may use, and normalizing
   a and w_i costs the teacher under 2 points of clean test accuracy; the command stops with one ``error:``
   line if either fails;
3. the teacher's accuracy on each shifted test set;
4. with ``selection`` in the preset, CKD's kappa and activation norm per shift: one CKD student per candidate
   (the grid includes kappa_MLE and kappa = |a|) trained with the selection seed, scored on its held-out
   validation images of the shifted domain; the best is used by every CKD, CKD+KD and matched label-smoothing
   student of that shift;
5. the students: seeds outermost (a grid stopped early has every cell for the seeds it finished); a seed's
   students share initialization, batches and shifted images across losses, so differences are paired.

``OUT/results.json`` (rewritten after every unit) holds every row and fact; ``OUT/report.md`` is
``ckd.report``'s table of both test domains with paired differences, 95 % intervals and the verdict.
``--results FILE`` also writes the report as a marked section of FILE.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import EXPERIMENT_PRESETS, ExperimentConfig
    from common.config import answer_early

    answer_early(
        ExperimentConfig,
        prog="python -m ckd.experiment",
        description=__doc__.split("\n\n")[0],
        presets={name: {"table": name} for name in EXPERIMENT_PRESETS},
    )

import math
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ckd.config import EXPERIMENT_PRESETS as PRESETS
from ckd.config import ExperimentConfig
from ckd.losses import NEEDS_TEACHER_LOGITS, off_diagonal_mass
from ckd.normalization_check import normalized_accuracy
from ckd.report import report_markdown, shift_name
from ckd.shifts import apply_shift, parse_shift
from ckd.teacher import TEACHER_CHECKPOINT, TeacherConfig, train_teacher
from ckd.train import (
    MODEL_CHECKPOINT,
    RESULT_FILE,
    TEST_SHIFT_SEED,
    TrainConfig,
    accuracy,
    features_of,
    load_dataset,
    load_model,
    read_student_result,
    teacher_affinity,
    teacher_head_statistics,
    train,
)
from common.cli import run_cli, set_threads
from common.config import ConfigError, parse_config
from common.grid import run_unit, write_rows
from common.markdown import write_section
from common.run import atomic_write_text, config_differences, read_config

__all__ = [
    "PRESETS",
    "ExperimentConfig",
    "TeacherGateError",
    "teacher_gates",
    "selection_candidates",
    "run_experiment",
    "run_name",
    "estimate_cost",
    "main",
    "MAX_NORMALIZATION_COST",
]

MAX_NORMALIZATION_COST = 0.02
"""The teacher may lose at most this much clean test accuracy when a and every w_i are normalized."""


DATASET_FACTS = {
    "mnist": ((1, 28, 28), 10, 60_000),
    "cifar10": ((3, 32, 32), 10, 50_000),
    "cifar100": ((3, 32, 32), 100, 50_000),
}
"""(image shape, classes, training images) of each dataset, for --estimate-cost."""


def run_name(student: str, shift: str | None, loss: str, seed: int) -> str:
    """The folder of one student run under OUT/students (an arm's loss ``LOSS@ARM`` gives ``LOSS_ARM``)."""
    return f"{student}_{shift_name(shift)}_{loss.replace('+', '-').replace('@', '_').replace('/', '_')}_s{seed}"


def arm_setting(arm: dict, kappa_mle: float, mean_norm: float) -> tuple[float, float]:
    """``(kappa, activation norm)`` of a preset's fixed arm for a teacher with these statistics."""
    return selection_candidates([(arm["name"], arm["kappa"], arm["norm"])], kappa_mle, mean_norm)[arm["name"]]


def arm_units(preset: dict, shift: str | None, kappa_mle: float, mean_norm: float) -> list[tuple[str, str, tuple]]:
    """``[(row loss "LOSS@ARM", training loss, (kappa, activation norm))]`` of the preset's fixed arms at a shift."""
    return [
        (f"{loss}@{arm['name']}", loss, arm_setting(arm, kappa_mle, mean_norm))
        for arm in preset.get("arms", ())
        if shift in arm["shifts"]
        for loss in arm["losses"]
    ]


def _finished(folder: Path) -> bool:
    """A student run has finished when its model.pt, or its result.json alone (a kept grid), is there."""
    return (folder / MODEL_CHECKPOINT).is_file() or (folder / RESULT_FILE).is_file()


def _read_finished(config: TrainConfig, folder: Path) -> dict:
    """A finished run's result, if it was trained with ``config``'s settings (the teacher's and the data's paths,
    which a copied grid changes, aside); a finished run with other settings is an error, not silently reused."""
    if (folder / "config.json").is_file():
        differences = config_differences(read_config(folder)[1], asdict(config), ignore=("teacher", "data"))
        if differences:
            raise ConfigError(
                f"{folder} holds a finished run with other settings ({'; '.join(differences)}): the preset or the "
                "flags changed since it ran; move the folder away or pass another --out"
            )
    return {**read_student_result(folder), "seconds": None}


def _student(config: TrainConfig, data, log) -> dict:
    """Start, resume or read back one student run (a unit of the grid); a non-finite loss stops the grid."""
    result = run_unit(
        config, train, finished=_finished, read=lambda folder: _read_finished(config, folder), data=data, log=log
    )
    if result.get("stopped") == "non-finite loss":
        raise ValueError(
            f"non-finite training loss in {config.out}; its last.pt is kept: lower the learning rate "
            "and run the command again"
        )
    return result


class TeacherGateError(ValueError):
    """The teacher fails a precondition of the experiment; no student should be trained on it."""


def teacher_gates(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: list[tuple],
    num_samples: int,
    max_cost: float = MAX_NORMALIZATION_COST,
) -> dict:
    """The two checks a teacher must pass before students learn from it.

    Args:
        model: the teacher (``features`` and a linear ``head``).
        images: (N, C, H, W) uint8 clean test images; labels: (N,).
        settings: [(kappa, activation_norm)] at which the affinity will be used.
        num_samples: Monte Carlo samples per class of each affinity.
        max_cost: the largest allowed loss of accuracy when a and every w_i are normalized (a fraction).

    Returns:
        {"rows_checked", "accuracy", "normalized_accuracy", "normalization_cost"}.

    Raises:
        TeacherGateError: an affinity row peaks at another class, or normalization costs ``max_cost`` or more.
    """
    for kappa, norm in settings:
        peaks = teacher_affinity(model, kappa, norm, num_samples).argmax(dim=1)
        wrong = [(row, int(peak)) for row, peak in enumerate(peaks.tolist()) if peak != row]
        if wrong:
            described = ", ".join(f"row {row} peaks at class {peak}" for row, peak in wrong)
            raise TeacherGateError(
                f"teacher gate failed: at kappa {kappa:.3g} and |a| {norm:.3g} the class affinity's "
                f"{described}; CKD would teach those classes the wrong label. Train the teacher "
                "longer or with a larger --feature-dim"
            )
    head = model.head.cpu()
    scores = normalized_accuracy(
        features_of(model, images), labels, head.weight.detach(), None if head.bias is None else head.bias.detach()
    )
    cost = scores["accuracy"] - scores["normalized_accuracy"]
    if cost >= max_cost:
        before, after = 100 * scores["accuracy"], 100 * scores["normalized_accuracy"]
        raise TeacherGateError(
            f"teacher gate failed: normalizing a and w_i costs {100 * cost:.2f} points of clean "
            f"test accuracy ({before:.2f} -> {after:.2f} %), at least {100 * max_cost:.0f}; the "
            "directional vMF model does not describe this teacher"
        )
    return {
        "rows_checked": len(settings),
        "accuracy": scores["accuracy"],
        "normalized_accuracy": scores["normalized_accuracy"],
        "normalization_cost": cost,
    }


def selection_candidates(grid, kappa_mle: float, mean_norm: float) -> dict:
    """{name: (kappa, activation_norm)} of a preset's selection grid for a teacher with these statistics.

    Args:
        grid: [(name, kappa as "mle" or a multiple of ``mean_norm``, activation norm as a multiple of ``mean_norm``)].
        kappa_mle: the teacher's maximum-likelihood kappa.
        mean_norm: the teacher's mean |a|.
    """
    return {
        name: (kappa_mle if kappa == "mle" else float(kappa) * mean_norm, float(scale) * mean_norm)
        for name, kappa, scale in grid
    }


def _write_results(out: Path, results: dict) -> None:
    write_rows(out / "results.json", results)


def run_experiment(
    preset: dict,
    out: Path,
    data_path: str | None,
    seeds,
    threads,
    progress: bool,
    cpu: bool,
    log=print,
    report_only: bool = False,
    title: str | None = None,
    data=None,
) -> dict:
    """Run (or resume, or with ``report_only`` only collect) a preset's grid; see the module docstring.

    Returns:
        the results dict written to OUT/results.json: "title", "teacher" (facts and gates), "teacher_on_shifted",
        "selection", "arms" (the fixed settings' kappa, norm and off-diagonal mass; presets with arms), "rows" (one
        per finished student; an arm's rows have the loss "LOSS@ARM").
    """
    data = data if data is not None else load_dataset(preset["dataset"], data_path)
    common = {"dataset": preset["dataset"], "data": data_path, "threads": threads, "progress": progress, "cpu": cpu}
    teacher_dir = out / "teacher"
    teacher_config = TeacherConfig(**{**common, **preset["teacher"], "out": str(teacher_dir), "seed": 0})
    if report_only and not (teacher_dir / TEACHER_CHECKPOINT).is_file():
        raise FileNotFoundError(f"--report-only: {teacher_dir / TEACHER_CHECKPOINT} does not exist yet")
    started = time.perf_counter()
    outcome = run_unit(
        teacher_config, train_teacher, finished=TEACHER_CHECKPOINT, read=lambda folder: {}, data=data, log=log
    )
    if outcome.get("stopped") in ("non-finite loss", "stop_after"):
        raise ValueError(f"the teacher in {teacher_dir} did not finish ({outcome['stopped']})")
    teacher, checkpoint = load_model(str(teacher_dir))
    kappa_mle, mean_norm = teacher_head_statistics(checkpoint)
    facts = {"test_accuracy": checkpoint["test_accuracy"], "kappa_mle": kappa_mle, "mean_activation_norm": mean_norm}
    results = {
        "title": title or preset["title"],
        "teacher": facts,
        "teacher_on_shifted": {},
        "selection": {},
        "rows": [],
    }
    affinity_samples = preset["student"].get("affinity_samples", TrainConfig.affinity_samples)
    selection = preset.get("selection")
    candidates = (
        selection_candidates(selection["grid"], kappa_mle, mean_norm)
        if selection
        else {"kappa-mle": (kappa_mle, mean_norm)}
    )
    if preset.get("gates"):
        facts["gates"] = teacher_gates(teacher, data.x_test, data.y_test, list(candidates.values()), affinity_samples)
        log(f"teacher gates passed: normalization costs {100 * facts['gates']['normalization_cost']:.2f} points")
    log(
        f"teacher {preset['teacher']['architecture']}: clean test accuracy {facts['test_accuracy']:.4f}, kappa_MLE "
        f"{kappa_mle:.1f}, mean |a| {mean_norm:.1f}"
    )
    for shift in preset["shifts"]:
        shifted = apply_shift(data.x_test, parse_shift(shift), seed=TEST_SHIFT_SEED)
        results["teacher_on_shifted"][shift_name(shift)] = accuracy(teacher, shifted, data.y_test)
    chosen = {}
    for shift in preset["shifts"]:
        if not selection:
            chosen[shift] = candidates["kappa-mle"]
            continue
        table = {}
        for name, (kappa, norm) in candidates.items():
            folder = out / "selection" / shift_name(shift) / name.replace("/", "_")
            config = TrainConfig(
                **{
                    **common,
                    **preset["student"],
                    "student": preset["students"][0],
                    "loss": "ckd",
                    "shift": shift,
                    "seed": selection["seed"],
                    "out": str(folder),
                    "teacher": str(teacher_dir),
                    "concentration": kappa,
                    "activation_norm": norm,
                }
            )
            if report_only and not _finished(folder):
                break
            result = _student(config, data, log)
            affinity = teacher_affinity(teacher, kappa, norm, config.affinity_samples)
            table[name] = {
                "concentration": kappa,
                "activation_norm": norm,
                "off_diagonal_mass": off_diagonal_mass(affinity),
                "validation_accuracy": result["validation_accuracy"],
            }
        else:
            best = max(table, key=lambda name: table[name]["validation_accuracy"])  # ties: the first in the grid
            chosen[shift] = candidates[best]
            results["selection"][shift_name(shift)] = {"chosen": best, "candidates": table}
            log(f"selection {shift_name(shift)}: {best} (validation accuracy {table[best]['validation_accuracy']:.4f})")
            _write_results(out, results)
    for arm in preset.get("arms", ()):
        kappa, norm = arm_setting(arm, kappa_mle, mean_norm)
        mass = off_diagonal_mass(teacher_affinity(teacher, kappa, norm, affinity_samples))
        results.setdefault("arms", {})[arm["name"]] = {
            "concentration": kappa,
            "activation_norm": norm,
            "off_diagonal_mass": mass,
            "shifts": [shift_name(shift) for shift in arm["shifts"]],
            "losses": list(arm["losses"]),
        }
    # Seeds outermost: a grid stopped early still has every cell for the seeds it finished.
    for seed in seeds:
        for student in preset["students"]:
            for shift in preset["shifts"]:
                if shift not in chosen:
                    continue  # report_only before this shift's selection finished
                units = [(loss, loss, chosen[shift]) for loss in preset["losses"]]
                units += arm_units(preset, shift, kappa_mle, mean_norm)
                for loss, training_loss, (kappa, norm) in units:
                    name = run_name(student, shift, loss, seed)
                    config = TrainConfig(
                        **{
                            **common,
                            **preset["student"],
                            "student": student,
                            "loss": training_loss,
                            "shift": shift,
                            "seed": seed,
                            "out": str(out / "students" / name),
                            "teacher": str(teacher_dir),
                            "concentration": kappa,
                            "activation_norm": norm,
                        }
                    )
                    if report_only and not _finished(Path(config.out)):
                        continue
                    result = _student(config, data, log)
                    row = {
                        "student": student,
                        "shift": shift,
                        "loss": loss,
                        "seed": seed,
                        "test_accuracy": result["test_accuracy"],
                        "domain_test_accuracy": result.get("domain_test_accuracy"),
                        "validation_accuracy": result.get("validation_accuracy"),
                        "seconds": result.get("seconds"),
                    }
                    results["rows"].append(row)
                    _write_results(out, results)
                    log(
                        f"[{len(results['rows'])}] {name}: clean {row['test_accuracy']:.4f}, own domain "
                        f"{row['domain_test_accuracy'] if row['domain_test_accuracy'] is not None else math.nan:.4f} "
                        f"({time.perf_counter() - started:.0f}s so far)"
                    )
    _write_results(out, results)
    return results


def _time_steps(model, teacher, batch, image_shape, num_classes, steps, device, loss):
    """Median seconds of one training step of ``model`` (with the teacher's forward pass for KD-type losses)."""
    from ckd.losses import distillation_loss

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, *image_shape, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    affinity = torch.full((num_classes, num_classes), 1.0 / num_classes, device=device)
    timings = []
    for _ in range(steps + 2):  # the first two warm up (allocations, kernel selection)
        begin = time.perf_counter()
        with torch.no_grad():
            teacher_logits = teacher(x) if loss in NEEDS_TEACHER_LOGITS else None
        value = distillation_loss(loss, model(x), y, teacher_logits, affinity, smoothing=0.1)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - begin)
    return statistics.median(timings[2:])


def estimate_cost(preset: dict, cpu: bool, steps: int, seeds: list[int], log=print) -> dict:
    """Measure the step time of the teacher, a label-type and a KD-type student here; extrapolate every run.

    The step is timed on random images of the dataset's shape (the time does not depend on the pixels); a run's
    cost is steps per run x the measured step time, plus the time of scoring the test and validation images.

    Returns:
        {"teacher_seconds", "label_run_seconds", "kd_run_seconds", "runs", "total_hours"}.
    """
    from accelerate import Accelerator

    from ckd.models import build_model

    image_shape, num_classes, train_size = DATASET_FACTS[preset["dataset"]]
    device = Accelerator(cpu=cpu).device
    teacher_options, student_options = preset["teacher"], preset["student"]
    teacher = build_model(
        teacher_options["architecture"], num_classes, image_shape, teacher_options.get("feature_dim")
    ).to(device)

    def run_seconds(options, per_step):
        batch = options.get("batch_size", 128)
        size = min(train_size - options.get("num_validation", 0), options.get("train_subset") or train_size)
        return per_step * math.ceil(size / batch) * options.get("epochs", 5)

    teacher_step = _time_steps(
        teacher, None, teacher_options.get("batch_size", 128), image_shape, num_classes, steps, device, "label"
    )
    student = preset["students"][0]
    batch = student_options.get("batch_size", 128)
    fresh = lambda: build_model(student, num_classes, image_shape, student_options.get("feature_dim")).to(device)  # noqa: E731
    label_step = _time_steps(fresh(), teacher, batch, image_shape, num_classes, steps, device, "ckd")
    kd_step = _time_steps(fresh(), teacher, batch, image_shape, num_classes, steps, device, "kd")  # augmented KD
    # Scoring: a forward pass over the clean and shifted test images and the validation images.
    with torch.no_grad():
        x = torch.rand(1000, *image_shape, device=device)
        begin = time.perf_counter()
        fresh().eval()(x)
        test_images = 10_000  # MNIST and CIFAR alike
        scoring = (time.perf_counter() - begin) * (2 * test_images + student_options.get("num_validation", 0)) / 1000
        begin = time.perf_counter()
        teacher.eval()(x)
        teacher_pass = (time.perf_counter() - begin) * train_size / 1000  # one pass over the training images
    label_run = run_seconds(student_options, label_step) + scoring
    if student_options.get("augment"):  # KD's teacher runs on every augmented batch
        kd_run = run_seconds(student_options, kd_step) + scoring
    else:  # ckd.train runs it once over the fixed (shifted) training images
        kd_run = label_run + teacher_pass
    teacher_run = run_seconds(teacher_options, teacher_step)
    kd_losses = sum(loss in NEEDS_TEACHER_LOGITS for loss in preset["losses"])
    per_seed = len(preset["students"]) * len(preset["shifts"])
    selection = len(preset["selection"]["grid"]) * len(preset["shifts"]) if preset.get("selection") else 0
    arms = sum(len(arm["shifts"]) * len(arm["losses"]) for arm in preset.get("arms", ())) * len(preset["students"])
    runs = {
        "label-type": (per_seed * (len(preset["losses"]) - kd_losses) + arms) * len(seeds) + selection,
        "kd-type": per_seed * kd_losses * len(seeds),
    }
    total = teacher_run + runs["label-type"] * label_run + runs["kd-type"] * kd_run
    log(
        f"on {device} with {torch.get_num_threads()} thread(s): teacher {teacher_step * 1000:.1f} ms per step -> "
        f"{teacher_run / 60:.1f} min; student label-type run {label_step * 1000:.1f} ms per step -> {label_run:.0f} s; "
        f"KD-type run {kd_step * 1000:.1f} ms per step -> {kd_run:.0f} s; {runs['label-type']} label-type runs "
        f"(selection included) and {runs['kd-type']} KD-type runs over seeds {seeds}: {total / 3600:.2f} h in all"
    )
    return {
        "teacher_seconds": teacher_run,
        "label_run_seconds": label_run,
        "kd_run_seconds": kd_run,
        "runs": runs,
        "total_hours": total / 3600,
    }


KEPT_FILES = ("config.json", "metrics.jsonl", RESULT_FILE, TEACHER_CHECKPOINT, "results.json", "report.md")
"""What ``--keep`` copies from an experiment folder (at any depth): a few kB per run, and the teacher (0.5 MB)."""


def keep_grid(out: Path, destination: Path) -> int:
    """Copy the files named in :data:`KEPT_FILES` under ``out`` to the same places under ``destination``: those of
    the experiment folder itself and of every finished run (an unfinished one, copied without its checkpoint, would
    be refused as a started run where the copy is continued).

    Returns:
        the number of files copied.
    """
    copied = 0
    for path in sorted(out.rglob("*")):
        folder = path.parent
        finished = folder == out or any((folder / name).is_file() for name in (RESULT_FILE, TEACHER_CHECKPOINT))
        if path.is_file() and path.name in KEPT_FILES and finished:
            target = destination / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += 1
    return copied


def main(argv=None) -> dict:
    """Command-line entry point."""
    config = parse_config(
        ExperimentConfig,
        argv,
        prog="python -m ckd.experiment",
        description=__doc__.split("\n\n")[0],
        presets={name: {"table": name} for name in PRESETS},
    )
    if config.table is None:
        raise ConfigError("python -m ckd.experiment: --preset is required (" + ", ".join(sorted(PRESETS)) + ")")
    set_threads(config.threads)
    preset = PRESETS[config.table]
    seeds = list(config.seeds) if config.seeds is not None else preset["seeds"]
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {seeds}")
    if preset.get("selection") and preset["selection"]["seed"] in seeds:
        raise ConfigError(f"--seeds must not include the selection seed {preset['selection']['seed']}")
    if config.estimate_cost:
        return estimate_cost(preset, config.cpu, steps=8, seeds=seeds)
    for shift in preset["shifts"]:
        parse_shift(shift)
    out = Path(config.out or f"runs/ckd-{config.table}")
    results = run_experiment(
        preset, out, config.data, seeds, config.threads, config.progress, config.cpu, report_only=config.report_only
    )
    shown = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--report-only"]
    results["command"] = "python -m ckd.experiment " + " ".join(shown)
    results["preset"] = config.table
    results["seeds"] = seeds  # planned: the verdict waits for all of them
    _write_results(out, results)
    text = report_markdown(results, results["command"])
    atomic_write_text(out / "report.md", text + "\n")
    if config.results:
        write_section(config.results, f"ckd-{config.table}", text)
    if config.keep:
        print(f"kept {keep_grid(out, Path(config.keep))} files of {out} in {config.keep}")
    print(text)
    return {"rows": len(results["rows"]), "report": str(out / "report.md")}


if __name__ == "__main__":
    sys.exit(run_cli(main))
