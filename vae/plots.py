"""The Table-4 plot: test log p(x) against the latent dimension d for HVAE, HVAE-C and HVAE-L, beside the paper.

    python -m vae.report results/vae-table4/*.json --plot docs/table4.png

Left: each model's mean log p(x) over seeds with error bars of ±1 sample standard deviation over seeds (no bar
where there is one seed), and the paper's Table 4 as hollow markers. Right: each model minus HVAE at the same d,
with error bars of ±1 standard error of the difference, sqrt(sd_a²/n_a + sd_b²/n_b) (the report's comparison
table), beside the paper's differences. Only the three models of Table 4 are drawn (not the encoder ablation).
"""

from __future__ import annotations

import math
from pathlib import Path

from common.stats import summarize
from vae.paper import MODEL_NAMES, PAPER_LL

__all__ = ["TABLE4_MODELS", "table4_points", "plot_table4"]

TABLE4_MODELS = ("hvae", "hvae-c", "hvae-l")
_COLORS = {"hvae": "tab:blue", "hvae-c": "tab:orange", "hvae-l": "tab:green"}
_OFFSETS = {"hvae": -0.04, "hvae-c": 0.0, "hvae-l": 0.04}  # in log10(d): keeps the error bars apart


def table4_points(results: dict) -> dict[str, dict[int, tuple[float, float, int]]]:
    """``{model: {d: (mean, sd, n)}}`` of log p(x) over seeds, for the Table-4 models with the classifier prior.

    Args:
        results: a results dict of ``vae.experiment`` or ``vae.report.merge_results``.

    Returns:
        the summaries; a (model, d) without a log p(x) is absent.
    """
    grouped: dict = {}
    for run in results["runs"]:
        if run["name"] in TABLE4_MODELS and run.get("head") in (None, "linear") and run.get("log_px") is not None:
            grouped.setdefault(run["name"], {}).setdefault(run["latent_dim"], []).append(run["log_px"])
    return {name: {d: summarize(values) for d, values in sorted(by_d.items())} for name, by_d in grouped.items()}


def plot_table4(results: dict, path: str | Path) -> Path:
    """Draw the Table-4 plot of ``results`` (see the module docstring) into the PNG ``path``.

    Args:
        results: a results dict of ``vae.experiment`` or ``vae.report.merge_results``.
        path: output PNG (its folder is created).

    Returns:
        the path written.

    Raises:
        ValueError: the results hold no log p(x) of HVAE, HVAE-C or HVAE-L.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = table4_points(results)
    if not points:
        raise ValueError("the results hold no log p(x) of HVAE, HVAE-C or HVAE-L to plot")
    dims = sorted({d for by_d in points.values() for d in by_d} | {d for d in PAPER_LL["hvae"]})
    counts = [summary[2] for by_d in points.values() for summary in by_d.values()]
    usual = max(set(counts), key=counts.count)  # seeds per point; the others are marked
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for name in TABLE4_MODELS:
        color, shift = _COLORS[name], 10 ** _OFFSETS[name]
        ours = points.get(name, {})
        if ours:
            ds = sorted(ours)
            left.errorbar(
                [d * shift for d in ds],
                [ours[d][0] for d in ds],
                yerr=[0.0 if ours[d][2] < 2 else ours[d][1] for d in ds],
                color=color,
                marker="o",
                capsize=4,
                lw=1.5,
                label=f"{MODEL_NAMES[name]}, this reproduction (mean ± sd)",
            )
            for d in (d for d in ds if ours[d][2] != usual):
                left.annotate(
                    f"{ours[d][2]} seed{'s' if ours[d][2] > 1 else ''}",
                    (d * shift, ours[d][0]),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=8,
                    color=color,
                )
        paper = PAPER_LL[name]
        left.plot(
            [d * shift for d in sorted(paper)],
            [paper[d] for d in sorted(paper)],
            color=color,
            marker="s",
            markerfacecolor="none",
            linestyle="--",
            lw=1,
            label=f"{MODEL_NAMES[name]}, paper",
        )
        if name == "hvae":
            continue
        base = points.get("hvae", {})
        ds = [d for d in sorted(ours) if d in base and ours[d][2] >= 2 and base[d][2] >= 2]
        if ds:
            right.errorbar(
                [d * shift for d in ds],
                [ours[d][0] - base[d][0] for d in ds],
                yerr=[math.sqrt(ours[d][1] ** 2 / ours[d][2] + base[d][1] ** 2 / base[d][2]) for d in ds],
                color=color,
                marker="o",
                capsize=4,
                lw=1.5,
                label=f"{MODEL_NAMES[name]} − HVAE, this reproduction (± SE)",
            )
        right.plot(
            [d * shift for d in sorted(paper)],
            [paper[d] - PAPER_LL["hvae"][d] for d in sorted(paper)],
            color=color,
            marker="s",
            markerfacecolor="none",
            linestyle="--",
            lw=1,
            label=f"{MODEL_NAMES[name]} − HVAE, paper",
        )
    right.axhline(0.0, color="tab:blue", lw=1, alpha=0.6)
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xticks(dims, [str(d) for d in dims])
        axis.minorticks_off()
        axis.set_xlabel("latent dimension d (z on the sphere S^(d-1) in R^d)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.margins(y=0.1)  # room for the seed-count labels
    left.set_ylabel("test log p(x) (nats, higher is better)")
    left.set_title("MNIST log-likelihood against d")
    right.set_ylabel("difference in log p(x) from HVAE at the same d (nats)")
    right.set_title("Each model minus HVAE")
    first = results["runs"][0]
    figure.suptitle(
        "Table 4: hyperspherical VAEs with a uniform prior (HVAE, HVAE-C) or the classifier's vMF prior (HVAE-L)",
        fontsize=12,
    )
    figure.text(
        0.5,
        0.01,
        f"K = {first['num_samples']} importance samples on {first['num_examples']:,} test images "
        f"(binarized with seed 0). Bars: left ±1 sd over {usual} seeds (other counts marked), right ±1 SE of "
        "the difference. Hollow squares: the paper's Table 4.",
        ha="center",
        va="bottom",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.04, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
