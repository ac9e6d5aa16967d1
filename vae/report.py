"""Markdown tables of a Table-4 experiment: mean ± sd over seeds per model and latent dimension, the paper's
numbers beside them, which differences exceed their standard error, and the head ablation.

    text = format_results(json.load(open("runs/table4/results.json")))
    python -m vae.report results/vae-table4/*.json [--results-md RESULTS.md --section vae-table4-seeds]

The command line merges the ``results.json`` of several ``vae.experiment`` commands (for example seeds or latent
dimensions run on different cores, machines or days) into one table; they must share the training and scoring
protocol (``PROTOCOL``). A (model, d, seed) that appears twice is counted once when the two runs agree in every
result (the same run reproduced, for example by a command repeated on another machine) and refused otherwise.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from vae.config import ReportConfig

    answer_early(ReportConfig, prog="python -m vae.report", description=__doc__.split("\n\n")[0], config_file=False)

import json
import sys
from pathlib import Path

from common.cli import UserError, run_cli
from common.config import parse_config
from common.data import TEST_BINARIZATION_SEED
from common.grid import by_cell, mean_sd_cell
from common.markdown import write_section
from common.stats import difference, summarize
from vae.config import ReportConfig
from vae.paper import DAVIDSON_SVAE_LL, MODEL_NAMES, PAPER_LL
from vae.plots import plot_table4

__all__ = [
    "DAVIDSON_SVAE_LL",
    "MODEL_NAMES",
    "PAPER_LL",
    "PROTOCOL",
    "QUANTITIES",
    "format_results",
    "format_run_page",
    "merge_results",
    "upgrade_results",
]

QUANTITIES = {
    "log_px": "**log p(x)** (the label summed out for the label-aware models: the quantity comparable across all)",
    "log_pxy": "**log p(x, y)** (label-aware models; includes log p(y) = log 1/10, the footing of their ELBO)",
    "log_px_given_y": "**log p(x | y)** (label-aware models)",
    "elbo": "**ELBO** (one-sample estimate; on log p(x, y) for the label-aware models, on log p(x) for HVAE)",
}
PROTOCOL = (
    "quick",
    "epochs",
    "patience",
    "kl_warmup_epochs",
    "prior_concentration",
    "classifier_epochs",
    "num_validation",
    "train_subset",
    "validation_subset",
    "num_samples",
    "num_test",
)
"""Experiment settings that must agree between merged results (they change what a number means)."""
COMPARISONS = (
    ("hvae-l", "hvae"),
    ("hvae-l", "hvae-c"),
    ("hvae-c", "hvae"),
    ("hvae-l-enc", "hvae-l"),
    ("hvae-c-enc", "hvae-c"),
    ("hvae-l-enc", "hvae-c-enc"),
    ("hvae-l-enc", "hvae"),
)
"""Differences of log p(x) the report lists (a, b: a − b) where both have two seeds or more. The last two put the
paper's claims (HVAE-L ahead of HVAE-C and of HVAE) to the reading in which the encoder sees the label."""


def _by_cell(runs: list[dict], key: str) -> dict:
    """{(name, d): summary of key over seeds}."""
    return {
        cell: summarize(list(values.values())) for cell, values in by_cell(runs, ("name", "latent_dim"), key).items()
    }


def upgrade_results(results: dict) -> dict:
    """A results dict of an earlier version with its config keys renamed (``max_epochs`` -> ``epochs``)."""
    config = results.get("config", {})
    if "max_epochs" in config and "epochs" not in config:
        config = {("epochs" if key == "max_epochs" else key): value for key, value in config.items()}
        results = {**results, "config": config}
    return results


def format_results(results: dict) -> str:
    """Markdown tables for a results dict written by ``vae.experiment``."""
    config, runs = results["config"], [r for r in results["runs"] if r.get("head") in (None, "linear")]
    latent_dims = config["latent_dims"]
    names = [name for name in MODEL_NAMES if any(r["name"] == name for r in runs)]
    header = "| model | " + " | ".join(f"d = {d}" for d in latent_dims) + " |\n|---|" + "---|" * len(latent_dims)
    first = results["runs"][0]
    seeds = sorted({r.get("seed", 0) for r in results["runs"]})
    text = [
        f"Test set: {first['num_examples']} MNIST test images binarized once with seed {TEST_BINARIZATION_SEED}; "
        f"log-likelihood by importance sampling with K = {first['num_samples']} samples of the proposal per image; "
        f"nats, higher is better. "
        + (
            f"Cells: mean ± sd over seeds (number of seeds; a bare number is one seed); seeds {seeds}.\n"
            if len(seeds) > 1
            else f"One seed ({seeds[0]}): no spread.\n"
        )
    ]
    if config.get("quick"):
        text.append(
            "**Quick run** (a pipeline check: training subset, 2 epochs, small K): numbers are far from converged.\n"
        )
    for key, title in QUANTITIES.items():
        cells = _by_cell(runs, key)
        rows = [
            f"| {MODEL_NAMES[name]} | "
            + " | ".join(mean_sd_cell(cells.get((name, d), (0, 0, 0))) for d in latent_dims)
            + " |"
            for name in names
            if any(cells.get((name, d), (0, 0, 0))[2] for d in latent_dims)
        ]
        if not rows:
            continue
        text.append(title + "\n")
        text.append(header + "\n" + "\n".join(rows))
        if key == "log_px" and any(d in PAPER_LL["hvae"] for d in latent_dims):
            text.append(
                "| paper HVAE / HVAE-C / HVAE-L | "
                + " | ".join(
                    " / ".join(f"{PAPER_LL[m][d]:.1f}" for m in ("hvae", "hvae-c", "hvae-l"))
                    if d in PAPER_LL["hvae"]
                    else "–"
                    for d in latent_dims
                )
                + " |"
            )
        if key == "log_px" and any(d in DAVIDSON_SVAE_LL for d in latent_dims):
            text.append(
                "| Davidson et al. S-VAE | "
                + " | ".join(
                    "{:.2f} ± {:.2f}".format(*DAVIDSON_SVAE_LL[d]) if d in DAVIDSON_SVAE_LL else "–"
                    for d in latent_dims
                )
                + " |"
            )
        text.append("")
    epochs = _by_cell(runs, "epochs")
    text.append(
        "Epochs trained (mean over seeds): "
        + "; ".join(
            f"{MODEL_NAMES[name]} "
            + " / ".join(f"{epochs[(name, d)][0]:.0f}" if (name, d) in epochs else "–" for d in latent_dims)
            for name in names
        )
        + f" (d = {latent_dims}).\n"
    )
    text += _comparisons(runs, latent_dims)
    text += _ablation(results)
    if results.get("repeated"):
        text.append(
            "Run twice with identical results, counted once: "
            + ", ".join(f"{MODEL_NAMES.get(name, name)} d = {d} seed {seed}" for name, d, seed in results["repeated"])
            + ".\n"
        )
    commands = _commands(results)
    reused = results.get("reused") or []  # names of the units an earlier pass had finished (vae.experiment)
    if reused and len(reused) >= len(results["runs"]):
        total = " (every unit reused from an earlier pass: nothing trained or scored)"
    elif reused:
        total = f" ({len(reused)} of {len(results['runs'])} units reused; total {results.get('seconds', 0):.0f} s)"
    else:
        total = f" (total {results['seconds']:.0f} s)" if results.get("seconds") else ""
    text.append(f"{'Command' if len(commands) == 1 else 'Commands'}{total}:\n\n```\n" + "\n".join(commands) + "\n```\n")
    return "\n".join(text) + "\n"


def format_run_page(results: dict, figures: list[str] | tuple = ()) -> str:
    """The RESULTS.md of one experiment folder: a heading, its figures, then :func:`format_results`' tables.

    Args:
        results: a results dict written by ``vae.experiment``.
        figures: figure files relative to the folder (e.g. ``seed0/d5/hvae-l/samples.png``), each listed with a link.

    Returns:
        markdown text.
    """
    config = results["config"]
    kind = "Quick run" if config.get("quick") else "Experiment"
    lines = [f"# {kind}: hyperspherical VAEs on MNIST (Table 4), d = {config['latent_dims']}\n"]
    if figures:
        lines.append(
            "Figures (reconstructions, per-class samples, class-to-class interpolations and learning curves of "
            "the first seed's models):\n"
        )
        by_run: dict[str, list[str]] = {}
        for figure in figures:  # one line per run: its folder, then a link per figure
            folder, _, name = str(figure).rpartition("/")
            by_run.setdefault(folder, []).append(f"[{name.removesuffix('.png')}]({figure})")
        lines += [f"- `{folder}`: " + " · ".join(links) for folder, links in by_run.items()] + [""]
    return "\n".join(lines) + "\n" + format_results(results)


def _comparisons(runs: list[dict], latent_dims) -> list[str]:
    """Differences of mean log p(x) with their combined standard error sqrt(sd_a^2/n_a + sd_b^2/n_b)."""
    cells = _by_cell(runs, "log_px")
    rows = []
    for a, b in COMPARISONS:
        for d in latent_dims:
            summary_a, summary_b = cells.get((a, d), (0, 0, 0)), cells.get((b, d), (0, 0, 0))
            if summary_a[2] < 2 or summary_b[2] < 2:
                continue
            value, error, verdict = difference(summary_a, summary_b)
            rows.append(f"| {MODEL_NAMES[a]} − {MODEL_NAMES[b]} | {d} | {value:+.2f} | {error:.2f} | {verdict} |")
    if not rows:
        return []
    return [
        "**Differences in log p(x)** (mean over seeds; SE = sqrt(sd_a²/n_a + sd_b²/n_b))\n",
        "| difference | d | nats | SE | larger than SE? |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n",
    ]


def _ablation(results: dict) -> list[str]:
    runs = [r for r in results["runs"] if r["model"] == "hvae-l" and not r.get("encoder_sees_label")]
    ablated = {r["latent_dim"] for r in runs if r["head"] != "linear"}
    if not ablated:
        return []
    lines = [
        (
            "**Ablation: where the HVAE-L prior comes from** (classifier head; prior concentration "
            f"{results['config']['prior_concentration']})\n"
        ),
        "| d | head | seed | classifier test acc. | log p(x) | log p(x, y) | ELBO |\n|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: (r["latent_dim"], r["name"], r.get("seed", 0))):
        if run["latent_dim"] in ablated:
            lines.append(
                f"| {run['latent_dim']} | {run['head']} | {run.get('seed', 0)} | "
                f"{run['classifier_test_accuracy']:.4f} | {run['log_px']:.1f} | {run['log_pxy']:.1f} | "
                f"{run['elbo']:.1f} |"
            )
    return lines + [""]


def _commands(results: dict) -> list[str]:
    """The command lines of a results dict: one for an experiment, several for a merge."""
    return results["command"] if isinstance(results["command"], list) else [results["command"]]


def merge_results(parts: list[dict]) -> dict:
    """One results dict from several ``vae.experiment`` results dicts of the same protocol.

    A (model name, d, seed) in several parts is kept once, and listed under ``"repeated"``, when the runs agree in
    everything but ``REPEAT_MAY_DIFFER`` (their folder and time).

    Raises:
        ValueError: the parts disagree on a ``PROTOCOL`` setting, or a (model name, d, seed) appears twice with
            different results.
    """
    if not parts:
        raise ValueError("nothing to merge")
    parts = [upgrade_results(part) for part in parts]
    first = parts[0]["config"]
    for part in parts[1:]:
        differing = [key for key in PROTOCOL if part["config"].get(key) != first.get(key)]
        if differing:
            raise ValueError(
                "the results differ in "
                + ", ".join(f"{key} ({first.get(key)} vs {part['config'].get(key)})" for key in differing)
            )
    seen, runs, repeated = {}, [], []
    for part in parts:
        for run in part["runs"]:
            cell = (run["name"], run["latent_dim"], run.get("seed", 0))  # the name carries the head
            if cell in seen:
                if _results_of(seen[cell]) != _results_of(run):
                    raise ValueError(
                        f"{run['name']} at d = {run['latent_dim']}, seed {run.get('seed', 0)} appears "
                        "twice with different results"
                    )
                repeated.append(cell)
                continue
            seen[cell] = run
            runs.append(run)
    config = dict(
        first,
        latent_dims=sorted({d for part in parts for d in part["config"]["latent_dims"]}),
        seeds=sorted({s for part in parts for s in part["config"]["seeds"]}),
    )
    return {
        "command": [command for part in parts for command in _commands(part)],
        "config": config,
        "runs": runs,
        "seconds": sum(part.get("seconds", 0) for part in parts),
        "repeated": repeated,
    }


REPEAT_MAY_DIFFER = ("run_dir", "seconds")


def _results_of(run: dict) -> dict:
    return {key: value for key, value in run.items() if key not in REPEAT_MAY_DIFFER}


def main(argv=None) -> str:
    """Command-line entry point: print (and optionally write) the merged tables."""
    args = parse_config(
        ReportConfig, argv, prog="python -m vae.report", description=__doc__.split("\n\n")[0], config_file=False
    )
    parts = []
    for path in args.results:
        try:
            part = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {path}: {error}") from None
        if not isinstance(part, dict) or not {"command", "config", "runs"} <= part.keys():
            raise UserError(f"{path} is not a results.json written by vae.experiment")
        parts.append(part)
    merged = merge_results(parts)
    text = format_results(merged)  # a ValueError becomes one error: line
    if args.plot:
        plot_table4(merged, args.plot)
    if args.results_md:
        write_section(args.results_md, args.section, text)
    print(text, end="")
    return text


if __name__ == "__main__":
    sys.exit(run_cli(main))
