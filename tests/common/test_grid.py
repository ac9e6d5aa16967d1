"""common.grid: unit order and status, skip / resume / start, and table cells against numpy and scipy."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats as scipy_stats

from common.grid import (
    by_cell,
    difference_cell,
    grid,
    markdown_table,
    mean_sd_cell,
    paired_difference,
    run_unit,
    summarize,
    unit_name,
    unit_status,
)


def test_grid_order_puts_the_first_axis_outermost():
    assert grid(seed=(0, 1), d=(3, 5)) == [
        {"seed": 0, "d": 3},
        {"seed": 0, "d": 5},
        {"seed": 1, "d": 3},
        {"seed": 1, "d": 5},
    ]
    assert unit_name({"loss": "ckd+kd", "shift": "photometric:30"}) == "loss-ckd-kd_shift-photometric-30"


@dataclass
class Unit:
    out: str
    resume: bool = False


def test_run_unit_starts_resumes_and_skips(tmp_path):
    calls = []

    def train(config, tag):
        calls.append((config.resume, tag))
        return {"trained": True}

    unit = Unit(out=str(tmp_path / "u"))
    assert unit_status(unit.out, "final.pt") == "new"
    run_unit(unit, train, "final.pt", tag=1)
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "last.pt").write_bytes(b"x")
    assert unit_status(unit.out, "final.pt") == "unfinished"
    run_unit(unit, train, "final.pt", tag=2)
    (tmp_path / "u" / "final.pt").write_bytes(b"x")
    assert run_unit(unit, train, "final.pt", read=lambda folder: {"read": folder.name}) == {"read": "u"}
    assert calls == [(False, 1), (True, 2)]


def test_cells_and_differences():
    rows = [{"m": "a", "seed": s, "v": v} for s, v in enumerate([1.0, 2.0, 4.5])] + [
        {"m": "b", "seed": s, "v": v} for s, v in enumerate([0.5, 1.0, 3.0])
    ]
    cells = by_cell(rows, ("m",), "v")
    assert cells == {"a": {0: 1.0, 1: 2.0, 2: 4.5}, "b": {0: 0.5, 1: 1.0, 2: 3.0}}
    sd = np.std([1.0, 2.0, 4.5], ddof=1)
    assert mean_sd_cell(summarize(list(cells["a"].values()))) == f"{np.mean([1.0, 2.0, 4.5]):.1f} ± {sd:.1f} (3)"
    assert mean_sd_cell((0.9, math.nan, 1), digits=2, scale=100) == "90.00" and mean_sd_cell((0, 0, 0)) == "–"
    mean, error, n = paired_difference(cells["a"], cells["b"])
    t = scipy_stats.ttest_rel([1.0, 2.0, 4.5], [0.5, 1.0, 3.0]).statistic
    assert n == 3 and mean == pytest.approx(1.0) and mean / error == pytest.approx(t)
    assert difference_cell(mean, error, n) == f"+1.00 ± {error:.2f}**"  # t = 4.0 > 2
    assert difference_cell(0.5, 1.0, 3) == "+0.50 ± 1.00" and difference_cell(0, 0, 0) == "–"
    assert markdown_table(["x", "y"], [["1", "2"]]) == "| x | y |\n|---|---|\n| 1 | 2 |"


def test_write_section_keeps_one_blank_line_before_the_text_that_follows(tmp_path):
    from common.markdown import write_section

    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# B\n\n<!-- s:start -->\nold\n<!-- s:end -->\n\n## Next\n")
    write_section(path, "s", "new\n")
    write_section(path, "s", "newer\n")  # twice: no blank lines lost or gained
    assert path.read_text() == "# B\n\n<!-- s:start -->\nnewer\n<!-- s:end -->\n\n## Next\n"
    write_section(path, "t", "appended")
    assert path.read_text().endswith("## Next\n\n<!-- t:start -->\nappended\n<!-- t:end -->\n")
