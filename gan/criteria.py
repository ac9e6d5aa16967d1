"""The CPU-scale Table 5's reading under the criteria stated before its numbers (docs/gan.md).

- Class-aware noise **helps** at this scale if vMF − Gaussian, paired over seeds, is better than zero by more than
  2 SE on GAN-train or intra-FID (the scores that see both correctness and diversity per class). It **hurts** if it is
  worse by more than 2 SE on one of them and better on neither; with one score each way the reading is **mixed**;
  otherwise **no difference shown**.
- Where it helps, the **classifier's geometry** matters only if vMF − vMF-orthogonal (same κ, same clustering by
  class, a fixed orthogonal head instead of the classifier's) is also better by more than 2 SE on a score where
  vMF − Gaussian is. If not, the gain comes from **class clustering alone** when the control itself beats Gaussian
  by more than 2 SE on such a score; when neither holds, where the gain comes from is **open**. (The rules stated
  before the numbers named only the first two branches: "clustering alone" whenever vMF does not beat the
  control. The third was split off after the 20 runs of docs/gan.md, whose control gained nothing over Gaussian,
  so that the reading claims only what its differences show.)
- Until each of these differences has the planned number of seeds, the reading is **provisional**.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.stats import paired_difference
from eval.fidelity import KEY_FID, KEY_IS_MEAN
from gan.report import NOISE_NAMES

SCORES = (
    ("IS", KEY_IS_MEAN, "↑", 2),
    ("FID", KEY_FID, "↓", 2),
    ("intra-FID", "intra_fid", "↓", 2),
    ("GAN-test", "gan_test", "↑", 3),
    ("GAN-train", "gan_train", "↑", 3),
)
"""(name, JSON key, better direction, decimals) of every score a run's fidelity JSON may hold."""

DECISIVE_SCORES = (("GAN-train", "gan_train", "↑", 3), ("intra-FID", "intra_fid", "↓", 2))
"""(name, fidelity-JSON key, better direction, decimals) of the scores the verdict reads."""


def run_seed(record: dict) -> int | None:
    """The training seed of a record's run, read from its folder name ``<noise>-s<seed>``."""
    match = re.search(r"-s(\d+)$", Path(str(record["run"])).name)
    return int(match[1]) if match else None


def seed_scores(records: list[dict], key: str) -> dict[int, float]:
    """``{seed: score}`` of the records whose run folder names a seed and whose JSON has the score."""
    return {
        seed: float(record[key])
        for record in records
        if (seed := run_seed(record)) is not None and record.get(key) is not None
    }


def paired_score(by_noise: dict[str, list[dict]], first: str, second: str, key: str) -> tuple[float, float, int]:
    """``(mean, SE, n)`` of the per-seed differences first − second of one score (see ``paired_difference``)."""
    return paired_difference(*(seed_scores(by_noise.get(noise, []), key) for noise in (first, second)))


def _side(mean: float, error: float, better: str) -> str | None:
    """ "better" or "worse" where |mean| exceeds 2 SE (the first noise against the second), else None."""
    if not (error == error and abs(mean) > 2 * error):  # nan SE (fewer than two seeds) decides nothing
        return None
    return "better" if (mean > 0) == (better == "↑") else "worse"


def _same_kappa(by_noise: dict[str, list[dict]], first: str, second: str) -> bool:
    kappas = [{r.get("concentration") for r in by_noise.get(noise, ())} for noise in (first, second)]
    return kappas[0] == kappas[1]


def _read_sides(
    by_noise: dict[str, list[dict]], first: str, second: str, names: list[str], reasons: list[str], counts: list[int]
) -> list[str | None]:
    """The side (``_side``) of first − second on each decisive score in ``names``; appends a reason line and the
    paired seed count of each to ``reasons`` and ``counts``."""
    label = " − ".join(NOISE_NAMES[noise] for noise in (first, second))
    sides = []
    for name, key, better, digits in DECISIVE_SCORES:
        if name in names:
            mean, error, count = paired_score(by_noise, first, second, key)
            counts.append(count)
            sides.append(_side(mean, error, better))
            reasons.append(_reason(label, name, better, digits, mean, error, count, sides[-1]))
    return sides


def _reason(
    label: str, name: str, better: str, digits: int, mean: float, error: float, count: int, side: str | None
) -> str:
    """One reason line: the paired difference, its SE and seed count, and how it was read."""
    if count < 2:  # no standard error, so nothing is decided
        return f"{label}, {name} {better}: {mean:+.{digits}f} (1 seed, no SE): decides nothing yet"
    return f"{label}, {name} {better}: {mean:+.{digits}f} ± {error:.{digits}f} (SE, {count} seeds): " + (
        f"{side} by more than 2 SE" if side else "within 2 SE"
    )


def read_criteria(by_noise: dict[str, list[dict]], planned_seeds: int | None = None) -> list[str]:
    """Markdown lines: the verdict under the module's rules, and one line per difference it read.

    Args:
        by_noise: records (fidelity JSONs with "run") of one scoring setting, grouped by noise.
        planned_seeds: seeds the table plans per noise; fewer paired seeds make the reading provisional
            (None: whatever is there).

    Returns:
        the lines (empty when vMF or Gaussian runs, or both decisive scores, are missing).
    """
    if "vmf" not in by_noise or "gaussian" not in by_noise:
        return []
    reasons, sides, counts = [], {}, []
    for name, key, better, digits in DECISIVE_SCORES:
        mean, error, count = paired_score(by_noise, "vmf", "gaussian", key)
        if count == 0:
            continue
        counts.append(count)
        sides[name] = _side(mean, error, better)
        reasons.append(_reason("vMF − Gaussian", name, better, digits, mean, error, count, sides[name]))
    if not sides:
        return []
    better_on = [name for name, side in sides.items() if side == "better"]
    worse_on = [name for name, side in sides.items() if side == "worse"]
    if better_on and worse_on:
        verdict = f"mixed: better on {', '.join(better_on)}, worse on {', '.join(worse_on)}"
    elif worse_on:
        verdict = f"class-aware noise hurts here ({', '.join(worse_on)})"
    elif better_on:
        verdict = f"class-aware noise helps here ({', '.join(better_on)})"
        if "vmf-orthogonal" not in by_noise:
            verdict += "; the control (vMF, orthogonal head) has no runs, so where the gain comes from is open"
        elif not _same_kappa(by_noise, "vmf", "vmf-orthogonal"):
            verdict += "; the control ran at another κ, so where the gain comes from is open"
        else:
            geometry = _read_sides(by_noise, "vmf", "vmf-orthogonal", better_on, reasons, counts)
            clustering = (
                []
                if "better" in geometry
                else _read_sides(by_noise, "vmf-orthogonal", "gaussian", better_on, reasons, counts)
            )
            if "better" in geometry:
                verdict += "; the classifier's geometry matters (the orthogonal control is beaten too)"
            elif "better" in clustering:
                verdict += "; from class clustering alone (the orthogonal control gains too, and vMF does not beat it)"
            else:
                verdict += (
                    "; where the gain comes from is open (vMF does not beat the orthogonal control, nor the control "
                    "Gaussian, by more than 2 SE)"
                )
    else:
        verdict = "no difference shown (vMF − Gaussian within 2 SE on GAN-train and intra-FID)"
    provisional = planned_seeds is not None and min(counts) < planned_seeds
    heading = (
        f"**Reading under the criteria stated before the numbers: provisional, {min(counts)} of {planned_seeds} "
        f"paired seeds: {verdict}.**"
        if provisional
        else f"**Reading under the criteria stated before the numbers: {verdict}.**"
    )
    return ["", heading, "", *(f"- {reason}" for reason in reasons)]
