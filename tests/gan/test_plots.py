"""gan.plots: the per-seed points and paired differences the Table-5 plot draws, worked out by hand."""

import math

import pytest

from gan import plots


def _records(noise, values, key="gan_train"):
    return [{"run": f"runs/t5/{noise}-s{seed}", key: value} for seed, value in values.items()]


def test_points_are_keyed_by_the_seed_in_the_run_folder_name():
    by_noise = {
        "vmf": _records("vmf", {0: 0.25, 2: 0.30}) + [{"run": "runs/t5/vmf-s4", "gan_train": None}],
        "gaussian": _records("gaussian", {1: 0.2}) + [{"run": "runs/t5/unnamed", "gan_train": 0.9}],
    }
    # a run without the score, or whose folder names no seed, is not a point
    assert plots.table5_points(by_noise, "gan_train") == {"vmf": {0: 0.25, 2: 0.30}, "gaussian": {1: 0.2}}
    assert plots.table5_points(by_noise, "intra_fid") == {}


def test_differences_pair_runs_by_seed_and_carry_the_reports_mean_and_se():
    by_noise = {
        "vmf": _records("vmf", {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.9}),
        "gaussian": _records("gaussian", {0: 0.45, 1: 0.50, 2: 0.65}),
        "sphere": _records("sphere", {5: 0.1}),
    }
    differences = plots.table5_differences(by_noise, "gan_train")
    # only vMF - Gaussian shares seeds (0, 1, 2): differences 0.05, 0.10, 0.05, mean 0.0667, sd 0.0289, SE 0.0167
    assert list(differences) == [("vmf", "gaussian")]
    per_seed, mean, error = differences[("vmf", "gaussian")]
    assert per_seed == pytest.approx([0.05, 0.10, 0.05])
    assert mean == pytest.approx(0.2 / 3)
    assert error == pytest.approx(math.sqrt(((0.05 - 0.2 / 3) ** 2 * 2 + (0.1 - 0.2 / 3) ** 2) / 2) / math.sqrt(3))


def test_one_shared_seed_has_no_standard_error():
    by_noise = {"vmf": _records("vmf", {0: 3.0}), "vmf-orthogonal": _records("vmf-orthogonal", {0: 1.0})}
    per_seed, mean, error = plots.table5_differences(by_noise, "gan_train")[("vmf", "vmf-orthogonal")]
    assert per_seed == [2.0] and mean == 2.0 and math.isnan(error)


def test_the_plot_is_written_and_refuses_runs_without_scores(tmp_path):
    by_noise = {
        "gaussian": [
            {"run": f"r/gaussian-s{s}", "gan_train": 0.2 + s / 100, "intra_fid": 8.0 - s / 10} for s in range(3)
        ],
        "vmf": [{"run": f"r/vmf-s{s}", "gan_train": 0.21 + s / 90, "intra_fid": 7.5 - s / 5} for s in range(3)],
    }
    path = plots.plot_table5(by_noise, tmp_path / "figures" / "t5.png", caption="test")
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no run has"):
        plots.plot_table5({"vmf": [{"run": "r/vmf-s0"}]}, tmp_path / "none.png")


def test_one_seed_and_no_control_still_draws(tmp_path):
    by_noise = {
        "gaussian": [{"run": "r/gaussian-s5", "intra_fid": 7.0}],
        "vmf": [{"run": "r/vmf-s5", "intra_fid": 7.5}],
    }
    assert plots.table5_differences(by_noise, "intra_fid")[("vmf", "gaussian")][:2] == ([0.5], 0.5)
    assert plots.plot_table5(by_noise, tmp_path / "one.png").stat().st_size > 10_000
