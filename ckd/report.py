"""The report of a CKD table: accuracies on both test domains, paired differences with 95 % intervals, a verdict.

    python -m ckd.report runs/ckd-mnist-table3/results.json [--results RESULTS.md]

``ckd.experiment`` writes ``results.json`` (one row per student, the teacher's facts, its gates, its accuracy on
each shifted test set, the validated kappa per shift) and this report from it; this command rebuilds the report
from that file alone, so a committed ``results.json`` regenerates the table.

The verdict follows rules fixed before any number was seen (:func:`verdict`), on the student's own domain at the
decisive shifts (downsampling x0.5 and x0.25), with paired differences over seeds and t-based 95 % intervals:

* supported: CKD - label and CKD - label-smoothing both positive with intervals excluding 0 at both decisive
  shifts, and KD below label (interval excluding 0) at every shift where the teacher is poor (its accuracy on
  that shifted test set is below the label-trained student's own-domain accuracy);
* refuted: at both decisive shifts, CKD - label has its interval within +-0.3 points, or CKD - label-smoothing
  has a mean <= 0;
* otherwise undecided.

Three readings the rules left open, fixed on 2026-12-06 while no decisive shift had two seeds: an effect that
meets both "supported" and "refuted" (its interval excludes 0 but lies within +-0.3 points) is not support; the
verdict stays undecided until every decisive difference, and KD - label at every poor shift, has all the planned
seeds (``results.json``'s "seeds"); "supported" needs at least one shift where the teacher is poor.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import ReportConfig
    from common.config import answer_early

    answer_early(ReportConfig, prog="python -m ckd.report", description=__doc__.split("\n\n")[0], config_file=False)

import json
import math
import sys
from pathlib import Path

from scipy import stats

from ckd.config import ReportConfig
from common.cli import run_cli
from common.config import parse_config
from common.grid import by_cell, markdown_table
from common.markdown import write_section
from common.stats import paired_difference as mean_and_standard_error
from common.stats import summarize as mean_sd_n

__all__ = [
    "paired_difference",
    "summarize",
    "verdict",
    "report_markdown",
    "shift_name",
    "DOMAINS",
    "DECISIVE_SHIFTS",
    "EQUIVALENCE_MARGIN",
    "LOSS_ORDER",
    "main",
]

DOMAINS = ("domain_test_accuracy", "test_accuracy")
"""The two scores of every student: its own domain's test images, and the clean test images."""
DOMAIN_TITLES = {
    "domain_test_accuracy": "the student's own domain (test images with its shift)",
    "test_accuracy": "clean test images",
}
DECISIVE_SHIFTS = ("downsample:0.5", "downsample:0.25")
EQUIVALENCE_MARGIN = 0.003
"""CKD - label within +-0.3 points (as a fraction) counts as no effect."""
LOSS_ORDER = ("label", "label-smoothing", "kd", "ckd", "ckd+kd")
PAIRS = (("ckd", "label"), ("ckd", "label-smoothing"), ("kd", "label"), ("ckd", "kd"), ("ckd+kd", "kd"))


def shift_name(shift: str | None) -> str:
    """ "clean" for no shift, else the shift with ':' replaced by '-'."""
    return "clean" if shift is None else shift.replace(":", "-")


def paired_difference(first: dict, second: dict, confidence: float = 0.95) -> dict:
    """Mean paired difference over the seeds both have, with a t-based interval.

    Args:
        first, second: {seed: value}.
        confidence: the interval's coverage.

    Returns:
        {"mean", "sd", "n", "low", "high"}; sd, low and high are NaN with fewer than two seeds.
    """
    mean, error, n = mean_and_standard_error(first, second)
    if n < 2:
        return {"mean": mean, "sd": math.nan, "n": n, "low": math.nan, "high": math.nan}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * error
    return {"mean": mean, "sd": error * math.sqrt(n), "n": n, "low": mean - half, "high": mean + half}


def summarize(rows: list[dict]) -> dict:
    """Cells and paired differences of every (student, shift, domain).

    Args:
        rows: one dict per student run with "student", "shift", "loss", "seed" and the scores of :data:`DOMAINS`.

    Returns:
        {"cells": {(student, shift, loss, domain): (mean, sd, n)},
         "differences": {(student, shift, domain, loss_a, loss_b): paired_difference of a - b}}.
    """
    values: dict = {}
    for domain in DOMAINS:
        scored = [row for row in rows if row.get(domain) is not None]
        for (student, shift, loss), by_seed in by_cell(scored, ("student", "shift", "loss"), domain).items():
            values[(student, shift, loss, domain)] = {seed: float(value) for seed, value in by_seed.items()}
    cells = {key: mean_sd_n(list(by_seed.values())) for key, by_seed in values.items()}
    by_setting: dict = {}  # (student, shift, domain) -> {loss: {seed: value}}
    for (student, shift, loss, domain), by_seed in values.items():
        by_setting.setdefault((student, shift, domain), {})[loss] = by_seed
    differences = {
        (student, shift, domain, loss_a, loss_b): paired_difference(by_loss[loss_a], by_loss[loss_b])
        for (student, shift, domain), by_loss in by_setting.items()
        for loss_a in by_loss
        for loss_b in by_loss
        if loss_a != loss_b
    }
    return {"cells": cells, "differences": differences}


def verdict(
    summary: dict,
    student: str,
    teacher_on_shifted: dict,
    planned_seeds: int | None = None,
    ckd: str = "ckd",
    smoothing: str = "label-smoothing",
    kd_clause: bool = True,
) -> tuple[str, list[str]]:
    """The verdict the numbers earned under the rules of the module docstring.

    Args:
        summary: :func:`summarize`'s result.
        student: the student architecture judged.
        teacher_on_shifted: {shift: the teacher's accuracy on that shifted test set}.
        planned_seeds: the number of seeds the experiment plans; until every decisive difference has that many
            pairs the verdict is "undecided" (None: 2 pairs suffice).
        ckd, smoothing: the row losses judged as CKD and its matched smoothing (an arm's "ckd@ARM" and
            "label-smoothing@ARM").
        kd_clause: judge KD below label where the teacher is poor (False for an arm: its question is CKD's alone).

    Returns:
        ("supported" | "refuted" | "undecided", reasons: one line per rule checked).
    """
    domain = "domain_test_accuracy"
    differences = summary["differences"]
    reasons = []
    needed = 2 if planned_seeds is None else max(2, int(planned_seeds))

    def get(shift, a, b):
        return differences.get((student, shift, domain, a, b))

    missing = [
        shift
        for shift in DECISIVE_SHIFTS
        for a, b in ((ckd, "label"), (ckd, smoothing))
        if get(shift, a, b) is None or not get(shift, a, b)["n"] >= needed
    ]
    if missing:
        where = ", ".join(sorted({shift_name(shift) for shift in missing}))
        return "undecided", [f"fewer than {needed} paired seeds at {where}: not judged yet"]
    ckd_wins = True
    refuted_at = []
    for shift in DECISIVE_SHIFTS:
        label, smooth = get(shift, ckd, "label"), get(shift, ckd, smoothing)
        wins = label["low"] > 0 and smooth["low"] > 0
        ckd_wins &= wins
        equivalent = -EQUIVALENCE_MARGIN < label["low"] and label["high"] < EQUIVALENCE_MARGIN
        not_above_smoothing = smooth["mean"] <= 0
        if equivalent or not_above_smoothing:
            refuted_at.append(shift)
        reasons.append(
            f"{shift_name(shift)}: CKD - label {_interval(label)}, CKD - smoothing {_interval(smooth)}: "
            + ("both above 0" if wins else "not both above 0")
            + ("; CKD - label within +-0.3" if equivalent else "")
            + ("; CKD <= smoothing" if not_above_smoothing else "")
        )
    kd_fails = True
    poor = []
    for shift, teacher_accuracy in teacher_on_shifted.items() if kd_clause else ():
        label_cell = summary["cells"].get((student, shift, "label", domain))
        kd_label = get(shift, "kd", "label")
        if label_cell is None or teacher_accuracy >= label_cell[0]:
            continue
        poor.append(shift)
        if kd_label is None or kd_label["n"] < needed:  # a poor shift not measured yet cannot pass the clause
            kd_fails = False
            reasons.append(f"{shift_name(shift)}: KD - label has fewer than {needed} paired seeds: not judged yet")
            continue
        below = kd_label["high"] < 0
        kd_fails &= below
        reasons.append(
            f"{shift_name(shift)}: the teacher is poor here ({100 * teacher_accuracy:.2f} % against the "
            f"label student's {100 * label_cell[0]:.2f} %); KD - label {_interval(kd_label)}: "
            + ("below 0" if below else "not below 0")
        )
    if kd_clause and not poor:
        reasons.append(
            "no shift where the teacher is poor (its accuracy below the label student's): KD clause not testable"
        )
        kd_fails = False
    if ckd_wins and kd_fails and not refuted_at:  # an effect within +-0.3 points, or not above smoothing, is no support
        return "supported", reasons
    if len(refuted_at) == len(DECISIVE_SHIFTS):
        return "refuted", reasons
    return "undecided", reasons


def _interval(difference: dict) -> str:
    """'+1.23 [0.50, 1.96]' in percentage points."""
    return (
        f"{100 * difference['mean']:+.2f} [{100 * difference['low']:+.2f}, {100 * difference['high']:+.2f}]"
        if difference["n"] > 1
        else f"{100 * difference['mean']:+.2f} (one seed)"
    )


def _cell(cell, seeds: int) -> str:
    """ "mean ± sd" in %, with "(n = k)" where the cell has another number of runs than the table's ``seeds``."""
    if cell is None:
        return "–"
    mean, sd, n = cell
    text = f"{100 * mean:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * mean:.2f}"
    return text if n == seeds else f"{text} (n = {n})"


def report_markdown(results: dict, command: str) -> str:
    """The markdown report of an experiment's ``results.json`` content.

    Args:
        results: {"title", "rows", "teacher" (facts: "test_accuracy", "kappa_mle", "mean_activation_norm",
            optional "gates"), "teacher_on_shifted" {shift: accuracy}, "selection" {shift: {"chosen", "candidates"}},
            "cost" (optional)}.
        command: the command line shown under the heading.
    """
    rows = results["rows"]
    summary = summarize(rows)
    teacher = results.get("teacher", {})
    students = list(dict.fromkeys(row["student"] for row in rows))
    shifts = list(dict.fromkeys(row["shift"] for row in rows))
    # results.json names the shifts ("clean", "downsample-0.5"); the rows and the verdict use their specs.
    spec_of = {shift_name(shift): shift for shift in shifts}
    teacher_on_shifted = {
        spec_of[name]: value for name, value in results.get("teacher_on_shifted", {}).items() if name in spec_of
    }
    losses = [loss for loss in LOSS_ORDER if any(row["loss"] == loss for row in rows)]
    seeds = sorted({row["seed"] for row in rows})
    lines = [f"## {results['title']}", "", f"`{command}`", ""]
    if teacher:
        lines += [
            f"Teacher: clean test accuracy {100 * teacher['test_accuracy']:.2f} %, kappa_MLE "
            f"{teacher.get('kappa_mle', math.nan):.1f}, "
            f"mean |a| {teacher.get('mean_activation_norm', math.nan):.1f}."
        ]
        gates = teacher.get("gates")
        if gates:
            lines += [
                f"Gates: every affinity row peaks at its own class ({gates['rows_checked']} settings checked); "
                f"normalizing a and w_i costs {100 * gates['normalization_cost']:.2f} points "
                f"({100 * gates['accuracy']:.2f} → {100 * gates['normalized_accuracy']:.2f} %)."
            ]
        lines.append("")
    selection = results.get("selection", {})
    if selection:
        lines += [
            "CKD's kappa and activation norm, chosen per shift on the student's held-out validation images "
            "(one CKD student per setting; validation accuracy %):",
            "",
            "| training images | " + " | ".join(selection[next(iter(selection))]["candidates"]) + " | chosen |",
            "|---|" + "---|" * (len(selection[next(iter(selection))]["candidates"]) + 1),
        ]
        for shift, entry in selection.items():
            cells = [
                f"{100 * c['validation_accuracy']:.2f} (κ {c['concentration']:.1f}, "
                f"norm {c['activation_norm']:.1f},"
                f" off-diag {100 * c['off_diagonal_mass']:.1f} %)"
                for c in entry["candidates"].values()
            ]
            lines.append(f"| {shift} | " + " | ".join(cells) + f" | {entry['chosen']} |")
        lines.append("")
    for student in students:
        for domain in DOMAINS:
            with_teacher = domain == "domain_test_accuracy" and bool(teacher_on_shifted)
            header = ["training images", *losses] + (["teacher on these test images"] if with_teacher else [])
            table = []
            for shift in shifts:
                cells = [_cell(summary["cells"].get((student, shift, loss, domain)), len(seeds)) for loss in losses]
                if with_teacher:
                    value = teacher_on_shifted.get(shift)
                    cells.append("–" if value is None else f"{100 * value:.2f}")
                table.append([shift_name(shift), *cells])
            lines += [
                f"**{student}**, accuracy (%) on {DOMAIN_TITLES[domain]}, mean ± sd over seeds {seeds} "
                "(n = k: a cell with only k of them so far):",
                "",
                markdown_table(header, table),
                "",
            ]
            pairs = [(a, b) for a, b in PAIRS if a in losses and b in losses]
            table = []
            for shift in shifts:
                differences = [summary["differences"].get((student, shift, domain, a, b)) for a, b in pairs]
                table.append([shift_name(shift)] + ["–" if d is None else _interval(d) for d in differences])
            lines += [
                f"Paired differences on {DOMAIN_TITLES[domain]} (points; mean and t-based 95 % interval over seeds):",
                "",
                markdown_table(["training images"] + [f"{a} − {b}" for a, b in pairs], table),
                "",
            ]
        if all(shift in shifts for shift in DECISIVE_SHIFTS):
            earned, reasons = verdict(summary, student, teacher_on_shifted, len(results.get("seeds") or ()) or None)
            lines += [f"**Verdict for {student} under the pre-stated rules: {earned}.**", ""]
            lines += [f"- {reason}" for reason in reasons] + [""]
        for arm, facts in results.get("arms", {}).items():
            lines += arm_section(summary, student, arm, facts, shifts, len(results.get("seeds") or ()) or None)
    return "\n".join(lines)


def arm_section(summary: dict, student: str, arm: str, facts: dict, shifts: list, planned_seeds) -> list[str]:
    """Markdown of a fixed arm: own-domain accuracies, its paired differences and the reading its rules give."""
    domain = "domain_test_accuracy"
    ckd, smooth = f"ckd@{arm}", f"label-smoothing@{arm}"
    arm_shifts = [shift for shift in shifts if shift_name(shift) in facts["shifts"]]
    if not any((student, shift, ckd, domain) in summary["cells"] for shift in arm_shifts):
        return []
    present = [summary["cells"].get((student, shift, loss, domain)) for shift in arm_shifts for loss in (ckd, smooth)]
    most = max(cell[2] for cell in present if cell is not None)
    table = []
    for shift in arm_shifts:
        cells = [_cell(summary["cells"].get((student, shift, loss, domain)), most) for loss in ("label", ckd, smooth)]
        pairs = ((ckd, "label"), (ckd, smooth), (ckd, "ckd"))
        differences = [summary["differences"].get((student, shift, domain, a, b)) for a, b in pairs]
        table.append([shift_name(shift), *cells, *("–" if d is None else _interval(d) for d in differences)])
    header = ["training images", "label", "CKD", "matched smoothing", "CKD − label", "CKD − smoothing"]
    lines = [
        f"**Fixed arm `{arm}`, {student}**: CKD at κ = {facts['concentration']:.1f} and |a| = "
        f"{facts['activation_norm']:.1f} ({100 * facts['off_diagonal_mass']:.1f} % of each affinity row off the "
        "diagonal) and label smoothing matched to that mass, on the same seeds; accuracy (%) on the student's own "
        "domain, paired differences in points with 95 % intervals (n = k: a cell with another number of seeds "
        "than the arm's most so far):",
        "",
        markdown_table([*header, "CKD − CKD at the validated κ"], table),
        "",
    ]
    if all(shift in arm_shifts for shift in DECISIVE_SHIFTS):
        earned, reasons = verdict(summary, student, {}, planned_seeds, ckd=ckd, smoothing=smooth, kd_clause=False)
        lines += [f"**Does the affinity's class structure help at this κ (the verdict's CKD rules): {earned}.**", ""]
        lines += [f"- {reason}" for reason in reasons] + [""]
    return lines


def main(argv=None) -> dict:
    """Command-line entry point: print (and optionally write) the report of a results.json."""
    args = parse_config(
        ReportConfig, argv, prog="python -m ckd.report", description=__doc__.split("\n\n")[0], config_file=False
    )
    path = Path(args.results_json)
    if not path.is_file():
        raise FileNotFoundError(f"{args.results_json}: no such results.json")
    try:
        results = json.loads(path.read_text())
        rows = results["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{args.results_json}: not a ckd results.json ({error})") from None
    text = report_markdown(results, results.get("command", f"python -m ckd.report {args.results_json}"))
    if args.results:
        write_section(args.results, args.section or f"ckd-{results.get('preset', 'table')}", text)
    print(text)
    return {"rows": len(rows)}


if __name__ == "__main__":
    sys.exit(run_cli(main))
