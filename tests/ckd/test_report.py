"""The report's paired differences and intervals against hand statistics, and the verdict rules on made-up rows."""

import json
import math
import statistics

import pytest

from ckd.report import paired_difference, report_markdown, summarize, verdict

T_975_2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables; scipy.stats.t.ppf agrees)


def test_paired_difference_against_a_hand_t_interval():
    first, second = {0: 0.93, 1: 0.82, 2: 0.86, 7: 0.5}, {0: 0.90, 1: 0.80, 2: 0.85}
    difference = paired_difference(first, second)  # seed 7 has no partner and is left out
    # Differences 0.03, 0.02, 0.01: mean 0.02, sd 0.01; half-width t * sd / sqrt(3).
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert difference["n"] == 3 and difference["mean"] == pytest.approx(0.02)
    assert difference["sd"] == pytest.approx(0.01)
    assert difference["low"] == pytest.approx(0.02 - half) and difference["high"] == pytest.approx(0.02 + half)
    one = paired_difference({0: 1.0}, {0: 0.5})
    assert one["mean"] == 0.5 and math.isnan(one["low"])


def _rows(effects, seeds=range(8), noise=0.001):
    """Rows with given mean accuracies per (shift, loss), both domains, and a small seed-dependent wobble."""
    rows = []
    for (shift, loss), value in effects.items():
        for seed in seeds:
            wobble = noise * ((seed * 7 + len(loss)) % 5 - 2)
            rows.append(
                {
                    "student": "s",
                    "shift": shift,
                    "loss": loss,
                    "seed": seed,
                    "domain_test_accuracy": value + wobble,
                    "test_accuracy": value - 0.01 + wobble,
                }
            )
    return rows


def _effects(ckd_gain, smoothing_gain, kd_gain):
    effects = {}
    for shift in ("downsample:0.5", "downsample:0.25"):
        effects.update(
            {
                (shift, "label"): 0.90,
                (shift, "label-smoothing"): 0.90 + smoothing_gain,
                (shift, "ckd"): 0.90 + ckd_gain,
                (shift, "kd"): 0.90 + kd_gain,
            }
        )
    return effects


POOR_TEACHER = {"downsample:0.5": 0.95, "downsample:0.25": 0.40}


def test_verdict_supported_refuted_and_undecided():
    supported, reasons = verdict(summarize(_rows(_effects(0.02, 0.005, -0.2))), "s", POOR_TEACHER)
    assert supported == "supported", reasons
    # KD not below label where the teacher is poor: not supported.
    assert verdict(summarize(_rows(_effects(0.02, 0.005, +0.01))), "s", POOR_TEACHER)[0] == "undecided"
    # CKD no better than smoothing: refuted.
    assert verdict(summarize(_rows(_effects(0.02, 0.03, -0.2))), "s", POOR_TEACHER)[0] == "refuted"
    # CKD - label tightly around 0: refuted.
    refuted, reasons = verdict(summarize(_rows(_effects(0.0005, -0.01, -0.2))), "s", POOR_TEACHER)
    assert refuted == "refuted" and any("within +-0.3" in reason for reason in reasons)
    # A positive CKD - label whose interval reaches 0 (large noise): neither.
    noisy = verdict(summarize(_rows(_effects(0.005, -0.01, -0.2), noise=0.02)), "s", POOR_TEACHER)
    assert noisy[0] == "undecided", noisy
    # Too few seeds.
    assert verdict(summarize(_rows(_effects(0.02, 0.005, -0.2), seeds=[0])), "s", POOR_TEACHER)[0] == "undecided"


def test_verdict_readings_the_rules_left_open():
    # +0.1 point, tight: the interval excludes 0 and lies within +-0.3 at both shifts: refuted, not supported.
    tiny, reasons = verdict(summarize(_rows(_effects(0.001, 0.0005, -0.2), noise=0.0001)), "s", POOR_TEACHER)
    assert tiny == "refuted" and sum("both above 0; CKD - label within +-0.3" in r for r in reasons) == 2, reasons
    # 4 of 8 planned seeds: not judged yet, though 4 seeds would support.
    partial, reasons = verdict(summarize(_rows(_effects(0.02, 0.005, -0.2), seeds=range(4))), "s", POOR_TEACHER, 8)
    assert partial == "undecided" and "fewer than 8 paired seeds" in reasons[0]
    # A poor shift whose KD students have not run: KD's clause is not met yet.
    rows = _rows(_effects(0.02, 0.005, -0.2))
    rows = [r for r in rows if not (r["shift"] == "downsample:0.25" and r["loss"] == "kd")]
    pending, reasons = verdict(summarize(rows), "s", POOR_TEACHER)
    assert pending == "undecided" and any("downsample-0.25: KD - label has fewer than 2" in r for r in reasons)


def test_report_shows_both_domains_the_teacher_and_the_verdict(tmp_path):
    rows = _rows(_effects(0.02, 0.005, -0.2))
    results = {
        "title": "T",
        "rows": rows,
        "teacher": {"test_accuracy": 0.99, "kappa_mle": 78.4, "mean_activation_norm": 36.2},
        "teacher_on_shifted": {"clean": 0.99, **{name.replace(":", "-"): v for name, v in POOR_TEACHER.items()}},
        "selection": {},
    }  # as ckd.experiment writes it: shifts by name ("downsample-0.25"), the rows by spec ("downsample:0.25")
    text = report_markdown(results, "cmd")
    assert "own domain" in text and "clean test images" in text
    expected = []
    for loss in ("label", "label-smoothing", "kd", "ckd"):
        values = [r["domain_test_accuracy"] for r in rows if r["shift"] == "downsample:0.25" and r["loss"] == loss]
        expected.append(f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}")
    assert "| downsample-0.25 | " + " | ".join(expected) + " | 40.00 |" in text
    assert "**Verdict for s under the pre-stated rules: supported.**" in text
    assert "downsample-0.25: the teacher is poor here (40.00 %" in text  # the KD clause found the teacher's score
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    from ckd.report import main

    assert main([str(path)])["rows"] == len(rows)


def test_a_cell_with_fewer_seeds_than_the_table_says_so():
    rows = [
        r
        for r in _rows(_effects(0.02, 0.005, -0.2))
        if (r["shift"], r["loss"], r["seed"]) != ("downsample:0.25", "kd", 7)
    ]
    results = {"title": "T", "rows": rows, "teacher": {}, "teacher_on_shifted": {}, "selection": {}}
    lines = [line for line in report_markdown(results, "cmd").splitlines() if line.startswith("| downsample-0.25 |")]
    kd = [r["domain_test_accuracy"] for r in rows if (r["shift"], r["loss"]) == ("downsample:0.25", "kd")]
    label = [r["domain_test_accuracy"] for r in rows if (r["shift"], r["loss"]) == ("downsample:0.25", "label")]
    cells = lines[0].split(" | ")  # the own-domain table: shift, label, label-smoothing, kd, ckd
    assert cells[1] == f"{100 * statistics.fmean(label):.2f} ± {100 * statistics.stdev(label):.2f}"
    assert cells[3] == f"{100 * statistics.fmean(kd):.2f} ± {100 * statistics.stdev(kd):.2f} (n = 7)"


def test_a_label_cell_with_more_seeds_than_the_arm_says_so():
    effects = _effects(0.0, 0.0, -0.2)
    for shift in ("downsample:0.5", "downsample:0.25"):
        effects[(shift, "ckd@kappa-a")] = 0.92
        effects[(shift, "label-smoothing@kappa-a")] = 0.905
    rows = [r for r in _rows(effects) if not ("@" in r["loss"] and r["seed"] >= 4)]  # the arm has 4 of 8 seeds
    arm = {"concentration": 35.1, "activation_norm": 35.1, "off_diagonal_mass": 0.05}
    arm |= {"shifts": ["downsample-0.5", "downsample-0.25"], "losses": ["ckd", "label-smoothing"]}
    results = {"title": "T", "rows": rows, "teacher": {}, "teacher_on_shifted": {}, "selection": {}}
    results |= {"arms": {"kappa-a": arm}, "seeds": list(range(8))}
    arm_text = report_markdown(results, "cmd").split("**Fixed arm")[1]
    [arm_row] = [line for line in arm_text.splitlines() if line.startswith("| downsample-0.25 |")]
    label, ckd, smoothing = [cell.strip() for cell in arm_row.strip("| ").split("|")][1:4]
    assert label.endswith("(n = 8)") and "(n =" not in ckd and "(n =" not in smoothing, arm_row


def test_a_fixed_arm_gets_its_own_table_and_reading():
    effects = _effects(0.0, 0.0, -0.2)  # the validated CKD is label training: no gain
    for shift in ("downsample:0.5", "downsample:0.25"):
        effects[(shift, "ckd@kappa-a")] = 0.92  # +2 points over label, +1.5 over its matched smoothing
        effects[(shift, "label-smoothing@kappa-a")] = 0.905
    results = {
        "title": "T",
        "rows": _rows(effects),
        "teacher": {"test_accuracy": 0.99, "kappa_mle": 122.3, "mean_activation_norm": 35.1},
        "teacher_on_shifted": {name.replace(":", "-"): value for name, value in POOR_TEACHER.items()},
        "selection": {},
        "arms": {
            "kappa-a": {
                "concentration": 35.1,
                "activation_norm": 35.1,
                "off_diagonal_mass": 0.0514,
                "shifts": ["downsample-0.5", "downsample-0.25"],
                "losses": ["ckd", "label-smoothing"],
            }
        },
        "seeds": list(range(8)),
    }
    text = report_markdown(results, "cmd")
    assert "@" not in text.split("**Fixed arm")[0]  # the main tables list only the five losses
    assert "**Fixed arm `kappa-a`, s**: CKD at κ = 35.1 and |a| = 35.1 (5.1 % of each affinity row off" in text
    assert "**Does the affinity's class structure help at this κ (the verdict's CKD rules): supported.**" in text
    assert "**Verdict for s under the pre-stated rules: refuted.**" in text  # the validated CKD: within +-0.3
    arm_text = text.split("**Fixed arm")[1]
    [arm_row] = [line for line in arm_text.splitlines() if line.startswith("| downsample-0.25 |")]
    cells = [cell.strip() for cell in arm_row.strip("| ").split("|")]
    # CKD − label and CKD − smoothing: +2 and +1.5 points, up to the rows' seed wobble (0.1 point at most)
    assert abs(float(cells[4].split()[0]) - 2.0) < 0.1 and abs(float(cells[5].split()[0]) - 1.5) < 0.1, cells
