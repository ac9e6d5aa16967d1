"""The Table-5 plot: every run's scores seed by seed, and the paired differences the reading is made of.

    python -m gan.table5 --preset small --seeds 0 1 2 3 4 --runs-dir results/gan-table5-small-v2 --report-only \\
        --plot docs/table5-small.png

One column per score (FID, intra-FID, GAN-test, GAN-train; those no run has are left out). Top: each run's score
by noise, a grey line joining the runs of one seed (paired by their initial weights) and a black bar at each
noise's mean. Bottom: the per-seed differences of each comparison and their mean with ±2 SE error bars
(SE = sd of the differences / sqrt(n)), the rule of :mod:`gan.criteria`: a bar that does not cross zero is a
difference beyond 2 SE. Only runs scored alike belong in one plot (one scoring setting of the report).
"""

from __future__ import annotations

from pathlib import Path

from common.stats import paired_difference
from gan.config import NOISE_ORDER
from gan.criteria import SCORES, seed_scores
from gan.report import NOISE_NAMES

__all__ = ["PLOTTED_SCORES", "PLOTTED_COMPARISONS", "table5_points", "table5_differences", "plot_table5"]

PLOTTED_SCORES = SCORES[1:]
"""The plotted scores (every score but IS), in column order."""

PLOTTED_COMPARISONS = (
    ("vmf", "gaussian"),
    ("sphere", "gaussian"),
    ("vmf-orthogonal", "gaussian"),
    ("vmf", "vmf-orthogonal"),
)
"""Differences first − second of the bottom row: each noise against Gaussian, then vMF against its control."""

_COLORS = {"gaussian": "tab:gray", "vmf": "tab:red", "sphere": "tab:blue", "vmf-orthogonal": "tab:purple"}
_SHORT = {"gaussian": "Gaussian", "vmf": "vMF", "sphere": "sphere", "vmf-orthogonal": "vMF-orth."}


def table5_points(by_noise: dict[str, list[dict]], key: str) -> dict[str, dict[int, float]]:
    """``{noise: {seed: score}}`` of one score, for the runs whose folder names a seed and whose JSON has it.

    Args:
        by_noise: records (fidelity JSONs with "run") of one scoring setting, grouped by noise.
        key: the fidelity-JSON key of the score.
    """
    points = {noise: seed_scores(records, key) for noise, records in by_noise.items()}
    return {noise: scores for noise, scores in points.items() if scores}


def table5_differences(
    by_noise: dict[str, list[dict]], key: str
) -> dict[tuple[str, str], tuple[list[float], float, float]]:
    """Per comparison of :data:`PLOTTED_COMPARISONS` with a shared seed: ``(per-seed differences in seed order,
    mean, SE)`` of one score; the mean and SE are those of ``common.stats.paired_difference`` (the report's)."""
    points = table5_points(by_noise, key)
    differences = {}
    for first, second in PLOTTED_COMPARISONS:
        a, b = points.get(first, {}), points.get(second, {})
        seeds = sorted(set(a) & set(b))
        if seeds:
            mean, error, _ = paired_difference(a, b)
            differences[(first, second)] = ([a[seed] - b[seed] for seed in seeds], mean, error)
    return differences


def plot_table5(by_noise: dict[str, list[dict]], path: str | Path, *, caption: str = "") -> Path:
    """Draw the Table-5 plot of one scoring setting (see the module docstring) into the PNG ``path``.

    Args:
        by_noise: records (fidelity JSONs with "run") of one scoring setting, grouped by noise.
        path: output PNG (its folder is created).
        caption: a line under the plot saying how the runs were scored.

    Returns:
        the path written.

    Raises:
        ValueError: no run has a plotted score.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [score for score in PLOTTED_SCORES if table5_points(by_noise, score[1])]
    if not scores:
        raise ValueError("no run has FID, intra-FID, GAN-test or GAN-train to plot")
    noises = [noise for noise in NOISE_ORDER if noise in by_noise] + sorted(set(by_noise) - set(NOISE_ORDER))
    figure, axes = plt.subplots(2, len(scores), figsize=(4.2 * len(scores), 8.4), squeeze=False)
    for column, (name, key, better, _) in enumerate(scores):
        top, bottom = axes[0][column], axes[1][column]
        points = table5_points(by_noise, key)
        for seed in sorted({seed for values in points.values() for seed in values}):
            xs = [x for x, noise in enumerate(noises) if seed in points.get(noise, {})]
            top.plot(xs, [points[noises[x]][seed] for x in xs], color="0.75", lw=0.8, zorder=1)
        for x, noise in enumerate(noises):
            values = list(points.get(noise, {}).values())
            top.scatter([x] * len(values), values, color=_COLORS.get(noise, "k"), s=22, zorder=2)
            if values:
                top.plot([x - 0.25, x + 0.25], [sum(values) / len(values)] * 2, color="k", lw=2, zorder=3)
        top.set_xticks(range(len(noises)), [_SHORT.get(noise, noise) for noise in noises], fontsize=9)
        top.set_title(f"{name} ({'higher' if better == '↑' else 'lower'} is better)")
        top.set_ylabel(name)
        differences = table5_differences(by_noise, key)
        for x, ((first, _), (per_seed, mean, error)) in enumerate(differences.items()):
            bottom.scatter([x] * len(per_seed), per_seed, color=_COLORS.get(first, "k"), s=18, alpha=0.6)
            bottom.errorbar(
                [x + 0.2],
                [mean],
                yerr=[0.0 if error != error else 2 * error],
                color="k",
                marker="D",
                markersize=5,
                capsize=4,
                lw=1.5,
            )
        bottom.axhline(0.0, color="0.4", lw=1)
        top.set_xlim(-0.5, len(noises) - 0.5)
        bottom.set_xlim(-0.5, max(len(differences), 1) - 0.5)
        bottom.set_xticks(
            range(len(differences)), [f"{_SHORT.get(a, a)}\n− {_SHORT.get(b, b)}" for a, b in differences], fontsize=9
        )
        bottom.set_ylabel(f"paired difference in {name}")
        bottom.set_title(f"seed by seed; mean ± 2 SE ({'up' if better == '↑' else 'down'} is better)", fontsize=9)
        for axis in (top, bottom):
            axis.grid(axis="y", alpha=0.3)
    title_points = table5_points(by_noise, scores[0][1])
    counts = sorted({len(points) for points in title_points.values()})
    seeds = sorted({seed for points in title_points.values() for seed in points})
    seed_range = f"{seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    figure.suptitle(
        f"SNGAN on CIFAR-10, Table 5: {len(noises)} noises × {'/'.join(map(str, counts))} "
        f"seed{'s' if counts != [1] else ''} ({seed_range}), scores per run (top) and paired differences (bottom)",
        fontsize=12,
    )
    figure.text(
        0.5,
        0.005,
        "Top: dots are runs, grey lines join one seed, black bars are means. Bottom: dots are per-seed differences, "
        "diamonds their mean ± 2 SE."
        + (
            f" vMF-orth.: {NOISE_NAMES['vmf-orthogonal']} (the control, same κ as vMF)."
            if "vmf-orthogonal" in noises
            else ""
        )
        + (f"\n{caption}" if caption else ""),
        ha="center",
        va="bottom",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.05 if caption else 0.03, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
