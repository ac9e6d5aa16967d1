"""Experiment grids: run every unit of a grid (skipping finished ones, resuming unfinished ones), collect one row
per unit, and build the markdown tables (mean ± sd cells, paired or unpaired differences).

A unit is one training run in its own folder. A driver lists its units and calls :func:`run_unit` for each::

    for values in grid(seed=config.seeds, latent_dim=config.latent_dims):       # seeds outermost
        settings = TrainConfig(..., out=str(out / unit_name(values)))
        summary = run_unit(settings, train, finished="best.pt")
        rows.append({**values, **summary})
        write_rows(out / "results.json", {"command": command, "config": ..., "runs": rows})

Tables::

    cells = by_cell(rows, ("name", "latent_dim"), "log_px")        # {(name, d): {seed: value}}
    mean_sd_cell(summarize(list(cells[key].values())), digits=1)    # "-91.2 ± 0.3 (3)"
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

from common.run import LAST_CHECKPOINT, atomic_write_text
from common.stats import difference, paired_difference, summarize, verdict

__all__ = [
    "by_cell",
    "difference",
    "difference_cell",
    "grid",
    "markdown_table",
    "mean_sd_cell",
    "paired_difference",
    "run_unit",
    "summarize",
    "unit_name",
    "unit_status",
    "verdict",
    "write_rows",
]


def grid(**axes) -> list[dict]:
    """Every combination of the axes as dicts, the first axis outermost (put seeds first: a grid stopped early
    then has every cell for the seeds it finished).

    Example: ``grid(seed=(0, 1), d=(3, 5))`` -> ``[{"seed": 0, "d": 3}, {"seed": 0, "d": 5}, {"seed": 1, ...}, ...]``.
    """
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(tuple(axes[name]) for name in names))]


def unit_name(values: dict) -> str:
    """A folder name for one unit: ``key-value`` pairs joined by ``_`` (``+`` and ``:`` made path-safe)."""
    return "_".join(f"{key}-{value}" for key, value in values.items()).replace("+", "-").replace(":", "-")


def unit_status(out: str | Path, finished: str | Callable[[Path], bool]) -> str:
    """ "finished", "unfinished" (a checkpoint to resume) or "new".

    Args:
        out: the unit's run folder.
        finished: the file a finished run writes (e.g. "classifier.pt"), or ``f(folder) -> bool``.
    """
    out = Path(out)
    done = finished(out) if callable(finished) else (out / finished).is_file()
    if done:
        return "finished"
    return "unfinished" if (out / LAST_CHECKPOINT).is_file() else "new"


def run_unit(config, train: Callable, finished: str | Callable[[Path], bool], read: Callable | None = None, **kwargs):
    """Start, resume or reuse one unit.

    Args:
        config: the unit's config (a dataclass with ``out`` and ``resume``).
        train: ``train(config, **kwargs) -> result``.
        finished: as for :func:`unit_status`.
        read: ``read(folder) -> result`` for a finished unit (None: call ``train`` with ``resume=True``, which must
            then return at once for a finished run).
        kwargs: passed to ``train`` (data already loaded, a log function).

    Returns:
        what ``train`` (or ``read``) returns.
    """
    status = unit_status(config.out, finished)
    if status == "finished" and read is not None:
        return read(Path(config.out))
    return train(dataclasses.replace(config, resume=status != "new"), **kwargs)


def write_rows(path: str | Path, results: dict) -> None:
    """Write a results dict (rows and whatever describes them) as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def by_cell(rows: list[dict], keys: tuple[str, ...], value: str, seed_key: str = "seed") -> dict:
    """``{(row[k] for k in keys): {seed: row[value]}}``; a cell with one key is keyed by that value alone."""
    cells: dict = {}
    for row in rows:
        cell = tuple(row.get(key) for key in keys)
        cells.setdefault(cell[0] if len(keys) == 1 else cell, {})[row.get(seed_key, 0)] = row.get(value)
    return cells


def mean_sd_cell(summary: tuple[float, float, int], digits: int = 1, scale: float = 1.0, count: bool = True) -> str:
    """A table cell for a :func:`summarize` result: "mean ± sd (n)", "mean" for one value, "–" for none.

    Args:
        summary: ``(mean, sd, n)``.
        digits: decimals.
        scale: multiply before printing (100 for percentages).
        count: append "(n)".
    """
    mean, sd, n = summary
    if n == 0:
        return "–"
    if n == 1 or math.isnan(sd):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}" + (f" ({n})" if count else "")


def difference_cell(mean: float, error: float, n: int, digits: int = 2, scale: float = 1.0, marks: bool = True) -> str:
    """ "+m ± se" with ``*`` where |m| > SE and ``**`` where > 2 SE ("–" for no pairs)."""
    if n == 0:
        return "–"
    mark = "" if not (marks and error > 0) else "**" if abs(mean) > 2 * error else "*" if abs(mean) > error else ""
    return f"{scale * mean:+.{digits}f} ± {scale * error:.{digits}f}{mark}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
