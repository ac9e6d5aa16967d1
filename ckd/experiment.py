"""One command per table: a teacher, then students over architectures x shifts x losses x seeds, then a report.

    python -m ckd.experiment --preset mnist-table3 --data PATH/mnist.npz --out runs/ckd-mnist --threads 1
    accelerate launch -m ckd.experiment --preset cifar100-table2 --out runs/ckd-cifar100-table2 --seeds 0 1 2
    accelerate launch -m ckd.experiment --preset cifar100-table3 --out runs/ckd-cifar100-table3 --seeds 0 1 2
    python -m ckd.experiment --preset cifar100-table2 --estimate-cost       # time a few steps, print the cost

Runs one training at a time. A finished run (its model.pt exists) is read back, an interrupted one continues
from its last.pt, so the same command resumes the whole grid. The teacher is trained with seed 0 (one teacher
per table, as in the paper); the students' seeds vary initialization, shuffling and the drawn shift, and are
shared across losses (a seed's four students start from the same weights and see the same shifted images, so
loss differences are paired). ``OUT/report.md`` gets a table of mean ± sd over seeds and the paired
differences with their standard errors; ``--results FILE`` also writes it as a marked section of FILE.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from common.cli import ArgumentParser, run_cli, select_device, set_threads
from common.markdown import write_section
from common.runs import atomic_write_text, load_checkpoint
from ckd.losses import LOSSES
from ckd.shifts import parse_shift
from ckd.teacher import TeacherConfig, train_teacher
from ckd.train import LAST_CHECKPOINT, MODEL_CHECKPOINT, TrainConfig, load_dataset, train
from ckd.train import PRESETS as TEACHER_PRESETS

__all__ = ["PRESETS", "run_grid", "summarize", "report_markdown", "main"]

_CIFAR = TEACHER_PRESETS["cifar"]
PRESETS = {
    "mnist-table3": {
        "title": "Class-wise distillation (CKD): Table 3 on MNIST (CPU scale)",
        "dataset": "mnist",
        # A cosine final layer for the 2-D teacher: see ckd.models and RESULTS.md (with a bias, or with unequal
        # row norms, Eq. 7 gave three classes' affinity rows to other classes).
        "teacher": {"architecture": "mnist-conv-cosine", "epochs": 3, "learning_rate": 1e-2, "schedule": "cosine"},
        "students": ["mnist-conv-half"],
        "shifts": [None, "photometric:0.8", "downsample:0.75", "downsample:0.5", "downsample:0.25"],
        "losses": list(LOSSES),
        "student": {"epochs": 3, "learning_rate": 1e-2, "schedule": "cosine", "train_subset": 8_000},
        "seeds": [0, 1, 2],
    },
    "cifar100-table2": {
        "title": "Class-wise distillation (CKD): Table 2 on CIFAR-100 (teacher WRN-40-2)",
        "dataset": "cifar100",
        "teacher": {"architecture": "wrn-40-2", **_CIFAR},
        "students": ["wrn-16-2", "wrn-40-2"],
        "shifts": [None],
        "losses": list(LOSSES),
        "student": dict(_CIFAR),
        "seeds": [0, 1, 2],
    },
    "cifar100-table3": {
        "title": "Class-wise distillation (CKD): Table 3 on CIFAR-100 (teacher WRN-40-2, student WRN-16-2)",
        "dataset": "cifar100",
        "teacher": {"architecture": "wrn-40-2", **_CIFAR},
        "students": ["wrn-16-2"],
        "shifts": ["photometric:0.2", "photometric:0.4", "photometric:0.6", "photometric:0.8",
                   "downsample:0.75", "downsample:0.5", "downsample:0.25"],
        "losses": ["label", "kd", "ckd"],
        "student": dict(_CIFAR),
        "seeds": [0, 1, 2],
    },
}
"""Each preset: the dataset, the teacher's options, the student architectures, shifts, losses, students' options."""


DATASET_FACTS = {"mnist": ((1, 28, 28), 10, 60_000), "cifar10": ((3, 32, 32), 10, 50_000),
                 "cifar100": ((3, 32, 32), 100, 50_000)}
"""(image shape, classes, training images) of each dataset, for --estimate-cost."""


def _shift_name(shift: str | None) -> str:
    return "clean" if shift is None else shift.replace(":", "-")


def run_name(student: str, shift: str | None, loss: str, seed: int) -> str:
    """The folder of one student run under OUT/students."""
    return f"{student}_{_shift_name(shift)}_{loss.replace('+', '-')}_s{seed}"


def _run(config, runner, data, log):
    """Start, resume or read back one run; returns its result dict."""
    out = Path(config.out)
    if (out / MODEL_CHECKPOINT).is_file():
        final = load_checkpoint(out / MODEL_CHECKPOINT, ("test_accuracy",), what="ckd model checkpoint")
        return {"test_accuracy": final["test_accuracy"], "seconds": None}
    config = dataclasses.replace(config, resume=(out / LAST_CHECKPOINT).is_file())
    return runner(config, data=data, log=log)


def run_grid(preset: dict, out: Path, data_path: str | None, seeds, threads, progress: bool, cpu: bool,
             log=print, report_only: bool = False) -> list[dict]:
    """Train the teacher and every student of ``preset`` (skipping finished runs); returns one row per student.

    With ``report_only``, train nothing: return the rows of the finished students (the teacher must be finished).
    """
    data = load_dataset(preset["dataset"], data_path)
    common = {"dataset": preset["dataset"], "data": data_path, "threads": threads, "progress": progress, "cpu": cpu}
    teacher_config = TeacherConfig(**{**common, **preset["teacher"], "out": str(out / "teacher"), "seed": 0})
    started = time.perf_counter()
    if report_only and not (out / "teacher" / MODEL_CHECKPOINT).is_file():
        raise FileNotFoundError(f"--report-only: {out / 'teacher' / MODEL_CHECKPOINT} does not exist yet")
    teacher = _run(teacher_config, train_teacher, data, log)
    log(f"teacher {preset['teacher']['architecture']}: test accuracy {teacher['test_accuracy']:.4f}")
    rows = []
    # Seeds outermost: a grid stopped early still has every cell for the seeds it finished.
    for seed in seeds:
        for student in preset["students"]:
            for shift in preset["shifts"]:
                for loss in preset["losses"]:
                    name = run_name(student, shift, loss, seed)
                    config = TrainConfig(**{**common, **preset["student"], "student": student, "loss": loss,
                                            "shift": shift, "seed": seed, "out": str(out / "students" / name),
                                            "teacher": str(out / "teacher")})
                    if report_only and not (Path(config.out) / MODEL_CHECKPOINT).is_file():
                        continue
                    result = _run(config, train, data, log)
                    rows.append({"student": student, "shift": shift, "loss": loss, "seed": seed,
                                 "test_accuracy": result["test_accuracy"], "seconds": result.get("seconds")})
                    log(f"[{len(rows)}] {name}: {result['test_accuracy']:.4f} "
                        f"({time.perf_counter() - started:.0f}s so far)")
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean, sd and count of the test accuracy per (student, shift, loss), and paired differences per seed.

    Returns:
        {"cells": {(student, shift, loss): (mean, sd, n)},
         "differences": {(student, shift, loss_a, loss_b): (mean, standard_error, n)}}: accuracy of loss_a minus
        loss_b per seed, over the seeds both have (sd with n - 1; standard error = sd / sqrt(n); NaN when n < 2).
    """
    by_cell: dict = {}
    for row in rows:
        by_cell.setdefault((row["student"], row["shift"], row["loss"]), {})[row["seed"]] = row["test_accuracy"]
    cells = {}
    for key, values in by_cell.items():
        numbers = list(values.values())
        cells[key] = (statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else math.nan,
                      len(numbers))
    differences = {}
    groups = {(student, shift) for student, shift, _ in by_cell}
    for student, shift in groups:
        losses = [loss for loss in LOSSES if (student, shift, loss) in by_cell]
        for first in losses:
            for second in losses:
                if first == second:
                    continue
                a, b = by_cell[(student, shift, first)], by_cell[(student, shift, second)]
                paired = [a[seed] - b[seed] for seed in sorted(set(a) & set(b))]
                standard_error = (statistics.stdev(paired) / math.sqrt(len(paired)) if len(paired) > 1 else math.nan)
                differences[(student, shift, first, second)] = (statistics.fmean(paired), standard_error, len(paired))
    return {"cells": cells, "differences": differences}


def report_markdown(title: str, rows: list[dict], teacher_accuracy: float | None, command: str,
                    teacher_on_shifted: dict | None = None) -> str:
    """The report: accuracy mean ± sd per shift and loss, and the paired differences of CKD against the others.

    Args:
        title: heading.
        rows: ``run_grid``'s rows.
        teacher_accuracy: the teacher's clean test accuracy.
        command: the command line shown under the heading.
        teacher_on_shifted: optional {shift: the teacher's accuracy on test images with that shift (seed 0)},
            shown as a last column: how far each shift moves the images away from what the teacher knows.
    """
    summary = summarize(rows)
    students = list(dict.fromkeys(row["student"] for row in rows))
    shifts = list(dict.fromkeys(row["shift"] for row in rows))
    losses = [loss for loss in LOSSES if any(row["loss"] == loss for row in rows)]
    seeds = sorted({row["seed"] for row in rows})
    lines = [f"## {title}", "", f"`{command}`", "",
             f"Clean test accuracy (%) of the student, mean ± sd over seeds {seeds}"
             + (f"; teacher {100 * teacher_accuracy:.2f} %." if teacher_accuracy is not None else "."), ""]
    for student in students:
        extra = " teacher on shifted test images |" if teacher_on_shifted else ""
        lines += [f"| {student}: training images | " + " | ".join(losses) + " |" + extra,
                  "|---|" + "---|" * (len(losses) + bool(teacher_on_shifted))]
        for shift in shifts:
            cells = []
            for loss in losses:
                mean, sd, n = summary["cells"].get((student, shift, loss), (math.nan, math.nan, 0))
                cells.append("–" if n == 0 else f"{100 * mean:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * mean:.2f}")
            if teacher_on_shifted:
                cells.append(f"{100 * teacher_on_shifted[shift]:.2f}" if shift in teacher_on_shifted else "–")
            lines.append(f"| {_shift_name(shift)} | " + " | ".join(cells) + " |")
        lines.append("")
        pairs = [(a, b) for a, b in (("ckd", "label"), ("ckd", "kd"), ("ckd+kd", "kd"), ("kd", "label"))
                 if a in losses and b in losses]
        lines += [f"Paired differences (percentage points, mean ± standard error over seeds; * where |mean| > SE, "
                  f"** where > 2 SE), {student}:", "",
                  "| training images | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |",
                  "|---|" + "---|" * len(pairs)]
        for shift in shifts:
            cells = []
            for a, b in pairs:
                mean, se, n = summary["differences"].get((student, shift, a, b), (math.nan, math.nan, 0))
                mark = "" if not se > 0 else "**" if abs(mean) > 2 * se else "*" if abs(mean) > se else ""
                cells.append("–" if n == 0 else f"{100 * mean:+.2f} ± {100 * se:.2f}{mark}")
            lines.append(f"| {_shift_name(shift)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def teacher_shift_accuracy(teacher_path: Path, preset: dict, data_path: str | None) -> dict:
    """{shift: the teacher's accuracy on the test images shifted like the students' training images (seed 0)}."""
    from ckd.shifts import apply_shift
    from ckd.train import accuracy, load_model

    data = load_dataset(preset["dataset"], data_path)
    model, _ = load_model(str(teacher_path), select_device())
    return {shift: accuracy(model, apply_shift(data.x_test, parse_shift(shift), seed=0), data.y_test)
            for shift in preset["shifts"]}


def estimate_cost(preset: dict, cpu: bool, steps: int, log=print) -> dict:
    """Time ``steps`` training steps of the teacher and of each student (with KD's teacher pass) on this device.

    Returns:
        {architecture: seconds per step} and the extrapolated hours for the teacher and one student run.
    """
    from accelerate import Accelerator

    from ckd.losses import distillation_loss
    from ckd.models import build_model

    image_shape, num_classes, train_size = DATASET_FACTS[preset["dataset"]]
    device = Accelerator(cpu=cpu).device
    # Random images of the dataset's shape: the step time does not depend on the pixels, and no download is needed.
    teacher = build_model(preset["teacher"]["architecture"], num_classes, image_shape).to(device)
    result = {}
    for role, architecture, options in ([("teacher", preset["teacher"]["architecture"], preset["teacher"])]
                                        + [("student", s, preset["student"]) for s in preset["students"]]):
        model = build_model(architecture, num_classes, image_shape).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        batch = options.get("batch_size", 128)
        x = torch.rand(batch, *image_shape, device=device)
        y = torch.randint(0, num_classes, (batch,), device=device)
        timings = []
        for _ in range(steps + 2):  # the first two warm up (allocations, kernel selection)
            begin = time.perf_counter()
            with torch.no_grad():
                teacher_logits = teacher(x) if role == "student" else None
            logits = model(x)
            loss = distillation_loss("kd" if role == "student" else "label", logits, y, teacher_logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - begin)
        per_step = statistics.median(timings[2:])
        epochs = options.get("epochs", 5)
        size = min(train_size, options.get("train_subset") or train_size)
        hours = per_step * math.ceil(size / batch) * epochs / 3600
        result[f"{role} {architecture}"] = {"seconds_per_step": per_step, "hours_per_run": hours}
        log(f"{role} {architecture} on {device}: {per_step * 1000:.1f} ms per step of {batch} "
            f"(KD's teacher pass included for students) -> {hours:.2f} h per run of {epochs} epochs x {size} images")
    return result


def main(argv=None) -> dict:
    """Command-line entry point."""
    parser = ArgumentParser(prog="python -m ckd.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="which table")
    parser.add_argument("--data", default=None, help="the dataset's .npz (default: download with torchvision)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/ckd-PRESET)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="student seeds (default: 0 1 2)")
    parser.add_argument("--results", default=None, help="also write the report as a section of this markdown file")
    parser.add_argument("--estimate-cost", action="store_true", help="time a few steps and print the cost per run")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 suits a busy shared CPU)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="tqdm bars")
    parser.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is present")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.estimate_cost:
        return estimate_cost(preset, args.cpu, steps=5)
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct, got {seeds}")
    for shift in preset["shifts"]:
        parse_shift(shift)
    out = Path(args.out or f"runs/ckd-{args.preset}")
    rows = run_grid(preset, out, args.data, seeds, args.threads, args.progress, args.cpu, report_only=args.report_only)
    teacher = load_checkpoint(out / "teacher" / MODEL_CHECKPOINT, ("test_accuracy",), what="ckd model checkpoint")
    teacher_on_shifted = teacher_shift_accuracy(out / "teacher", preset, args.data)
    shown = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg != "--report-only"]
    command = "python -m ckd.experiment " + " ".join(shown)
    text = report_markdown(preset["title"], rows, teacher["test_accuracy"], command, teacher_on_shifted)
    atomic_write_text(out / "report.md", text + "\n")
    if args.results:
        write_section(args.results, f"ckd-{args.preset}", text)
    print(text)
    return {"rows": len(rows), "report": str(out / "report.md")}


if __name__ == "__main__":
    sys.exit(run_cli(main))
