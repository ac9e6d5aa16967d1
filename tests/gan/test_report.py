"""Tests for gan/report.py: collecting fidelity JSONs and formatting/writing the markdown table."""

import json

import pytest

from gan import report
from gan.report import collect_runs, format_table, write_section

pytestmark = pytest.mark.usefixtures("single_thread")


def _make_run(root, name, sampler, is_mean, fid, concentration=None, extractor="inception-v3-compat"):
    run = root / name
    run.mkdir()
    config = {"sampler": sampler, "iterations": 50000, "concentration": concentration}
    command = f"gan/train.py --sampler {sampler} --out {run}"
    (run / "config.json").write_text(json.dumps({"kind": "gan", "config": config, "command": command}))
    record = {
        "inception_score_mean": is_mean,
        "inception_score_std": 0.05,
        "frechet_inception_distance": fid,
        "num_samples": 5000,
        "feature_extractor": extractor,
        "reference": "/data/cifar10.npz",
        "reference_split": "train",
        "noise": sampler,
        "command": f"python -m eval.fidelity --checkpoint {run}",
    }
    (run / f"fidelity-{extractor}-n5000.json").write_text(json.dumps(record))
    return str(run)


def test_table_rows_are_ordered_gaussian_vmf_sphere(tmp_path):
    runs = [
        _make_run(tmp_path, "c", "sphere", 7.0, 30.0),
        _make_run(tmp_path, "a", "vmf", 8.25, 20.5, 5.0),
        _make_run(tmp_path, "b", "gaussian", 7.5, 25.0),
    ]
    text = format_table(collect_runs(runs))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| Gaussian", "| vMF", "| sphere"]
    assert rows[1] == (
        f"| vMF | `{runs[1]}` | 5 | 50000 | 5000 | inception-v3-compat | cifar10.npz (train) | 8.25 ± 0.05 | 20.50 |"
    )
    assert f"python -m eval.fidelity --checkpoint {runs[0]}" in text
    assert f"gan/train.py --sampler sphere --out {runs[0]}" in text  # the training command from config.json
    assert text.index("gan/train.py") < text.index("python -m eval.fidelity")
    assert "Note:" not in text and "not comparable" not in text


def test_mixed_extractors_are_flagged(tmp_path):
    runs = [
        _make_run(tmp_path, "a", "gaussian", 3.0, 1.0, extractor="classifier-abc"),
        _make_run(tmp_path, "b", "vmf", 8.0, 20.0, 1.0),
    ]
    text = format_table(collect_runs(runs))
    assert "Note:" in text and "not comparable" in text


def test_collect_rejects_runs_without_results(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="fidelity"):
        collect_runs([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="does not exist"):
        collect_runs([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="records"):
        format_table([])


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nVAE table stays.\n")
    write_section(path, "gan", "first\n")
    write_section(path, "gan", "second\n")
    write_section(path, "other", "kept\n")
    text = path.read_text()
    assert text.startswith("# Results\n\nVAE table stays.\n")
    assert "second" in text and "first" not in text and "kept" in text
    assert text.count("<!-- gan:start -->") == 1
    path.write_text("<!-- gan:start -->\nbroken\n")
    with pytest.raises(ValueError, match="markers"):
        write_section(path, "gan", "x")


def test_cli_writes_the_section(tmp_path, capsys):
    run = _make_run(tmp_path, "a", "vmf", 8.0, 20.0, 5.0)
    out = tmp_path / "RESULTS-gan.md"
    report.main([run, "--out", str(out)])
    text = out.read_text()
    assert "### SNGAN on CIFAR-10" in text and "| vMF |" in text
    assert "| vMF |" in capsys.readouterr().out
