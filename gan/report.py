"""Collect IS/FID results of run folders into a markdown table (for RESULTS.md).

    python -m gan.report RUN_DIR... [--out RESULTS.md] [--section gan-fidelity]

Every `fidelity-*.json` that `python -m gan.fidelity` wrote in a run folder becomes one row, labelled
with the run's latent noise (Gaussian / vMF / sphere) from its config.json; the exact commands follow
the table: the training command each run recorded in its config.json, then the scoring commands. With --out, the
table goes between section markers in that file, replacing an earlier version of the same section and leaving the
rest of the file as it is.
"""

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from gan.config import ReportConfig

    answer_early(ReportConfig, prog="python -m gan.report", description=__doc__.split("\n\n")[0], config_file=False)

import glob
import json
import os
import sys

from common.cli import run_cli
from common.config import parse_config
from common.markdown import write_section
from eval.fidelity import KEY_FID, KEY_IS_MEAN, KEY_IS_STD
from gan.config import NOISE_ORDER, ReportConfig

NOISE_NAMES = {"gaussian": "Gaussian", "vmf": "vMF", "sphere": "sphere", "vmf-orthogonal": "vMF, orthogonal head"}
COLUMNS = ("noise", "run", "κ", "iterations", "samples", "extractor", "reference", "IS ↑", "FID ↓")


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def collect_runs(run_dirs):
    """One record per fidelity JSON in the given run folders.

    Args:
        run_dirs: run folders (each with config.json and fidelity-*.json files).

    Returns:
        list of dicts with run, noise, concentration, iterations and the JSON's fields, sorted by
        noise (Gaussian, vMF, sphere, others) and then run name.
    """
    records = []
    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            raise ValueError(f"run folder {run_dir!r} does not exist")
        paths = sorted(glob.glob(os.path.join(run_dir, "fidelity-*.json")))
        if not paths:
            raise ValueError(
                f"run folder {run_dir!r} has no fidelity-*.json; run `python -m gan.fidelity --run {run_dir}` first"
            )
        config_path = os.path.join(run_dir, "config.json")
        config = _read_json(config_path).get("config", {}) if os.path.isfile(config_path) else {}
        training_command = _read_json(config_path).get("command") if os.path.isfile(config_path) else None
        for path in paths:
            record = dict(_read_json(path))
            record["training_command"] = training_command
            noise = record.get("noise") or config.get("sampler")
            record.update(
                run=os.path.relpath(run_dir) if not os.path.isabs(run_dir) else run_dir,
                noise=noise,
                concentration=config.get("concentration") if noise in ("vmf", "vmf-orthogonal") else None,
                iterations=config.get("iterations"),
                source=path,
            )
            records.append(record)
    rank = {name: index for index, name in enumerate(NOISE_ORDER)}
    return sorted(records, key=lambda r: (rank.get(r["noise"], len(rank)), str(r["run"]), r["source"]))


def _number(value, digits):
    return "–" if value is None else f"{value:.{digits}f}"


def _reference_label(record):
    """Short reference name: the file name (or registered name) and the split, e.g. "cifar10.npz (train)"."""
    reference = record.get("reference")
    if reference is None:
        return "?"
    label = os.path.basename(str(reference))
    return f"{label} ({record['reference_split']})" if record.get("reference_split") else label


def format_table(records):
    """Markdown table of IS and FID, one row per record, followed by the commands that produced them.

    Args:
        records: dicts as returned by collect_runs.

    Returns:
        markdown text.
    """
    if not records:
        raise ValueError("records must not be empty")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for record in records:
        score = (
            "–"
            if record.get(KEY_IS_MEAN) is None
            else f"{record[KEY_IS_MEAN]:.2f} ± {_number(record.get(KEY_IS_STD), 2)}"
        )
        cells = (
            NOISE_NAMES.get(record["noise"], str(record["noise"] or "?")),
            f"`{record['run']}`",
            "–" if record.get("concentration") is None else f"{record['concentration']:g}",
            "–" if record.get("iterations") is None else str(record["iterations"]),
            str(record.get("num_samples", "?")),
            str(record.get("feature_extractor", "?")),
            _reference_label(record),
            score,
            _number(record.get(KEY_FID), 2),
        )
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    setups = {(r.get("feature_extractor"), r.get("reference"), r.get("num_samples")) for r in records}
    if len(setups) > 1:
        lines += [
            "",
            "Note: the rows use different extractors, references or sample counts; "
            "compare scores only between rows that share all three.",
        ]
    if any(r.get("feature_extractor") != "inception-v3-compat" for r in records):
        lines += [
            "",
            "Scores from a classifier extractor (not `inception-v3-compat`) are IS/FID-style scores on "
            "that classifier's features: not comparable with published Inception numbers.",
        ]
    lines += ["", "Commands (training, as recorded in each run's config.json, then scoring):", "", "```"]
    lines += sorted({r["training_command"] for r in records if r.get("training_command")})
    lines += sorted({r["command"] for r in records if r.get("command")})
    lines += ["```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_config(
        ReportConfig, argv, prog="python -m gan.report", description=__doc__.split("\n\n")[0], config_file=False
    )
    text = f"### {args.title}\n\n" + format_table(collect_runs(args.run_dirs))
    print(text)
    if args.out:
        write_section(args.out, args.section, text)
        print(f"wrote section {args.section!r} of {args.out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
