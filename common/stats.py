"""Summaries over seeds for the result tables: mean ± sample sd, and whether a difference of means exceeds its
standard error."""

from __future__ import annotations

import math
import statistics


def summarize(values: list[float | None]) -> tuple[float, float, int]:
    """``(mean, sample sd, n)`` of the values that are not None; sd is nan for one value, everything for none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return math.nan, math.nan, 0
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else math.nan, len(present)


def difference(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float, str]:
    """Difference of two summarized means with its standard error sqrt(sd_a²/n_a + sd_b²/n_b).

    Args:
        a, b: ``summarize`` results, each of at least two values.

    Returns:
        ``(mean_a - mean_b, standard error, verdict)``, the verdict "yes (> 2 SE)", "yes" (> 1 SE) or "no".
    """
    (mean_a, sd_a, n_a), (mean_b, sd_b, n_b) = a, b
    if n_a < 2 or n_b < 2:
        raise ValueError("a standard error needs at least two values on each side")
    value, error = mean_a - mean_b, math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    return value, error, verdict(value, error)


def paired_difference(a: dict, b: dict) -> tuple[float, float, int]:
    """Mean of the per-seed differences ``a[seed] - b[seed]`` over the seeds both have, with its standard error.

    Args:
        a, b: ``{seed: value}``.

    Returns:
        ``(mean, sd / sqrt(n), n)``; the standard error is nan for fewer than two shared seeds, everything for none.
    """
    paired = [a[seed] - b[seed] for seed in sorted(set(a) & set(b)) if a[seed] is not None and b[seed] is not None]
    mean, sd, n = summarize(paired)
    return mean, sd / math.sqrt(n) if n > 1 else math.nan, n


def verdict(value: float, error: float) -> str:
    """ "yes (> 2 SE)", "yes" (> 1 SE) or "no": whether ``|value|`` exceeds its standard error."""
    return "yes (> 2 SE)" if abs(value) > 2 * error else "yes" if abs(value) > error else "no"
