"""benchmarks/gpu_check.sh: its --dry-run goes through every step at toy size on the CPU, and the report turns the
folder into a BENCHMARKS.md section that says which steps ran, failed or were skipped."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = (
    "environment",
    "gan_speed",
    "vmf_latent_eager",
    "vmf_latent_compiled",
    "ckd_table2_cost",
    "ckd_table3_cost",
    "fidelity_speed",
)


@pytest.mark.slow  # about 40 s of CPU, 1-3 minutes on a busy 2-core machine
def test_dry_run_goes_through_every_step(tmp_path):
    out = tmp_path / "check"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True, timeout=600, env=environment
    )
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    by_name = {step["step"]: step for step in steps}
    assert set(by_name) >= set(STEPS) and all(step["dry_run"] for step in steps)
    for name in STEPS:
        if name == "vmf_latent_compiled" and by_name[name]["rc"] == -1:
            assert "--compile" in by_name[name]["note"]  # absent from the benchmark: logged, not hidden
            continue
        assert by_name[name]["rc"] == 0, (name, (out / f"{name}.out").read_text()[-2000:])
    speed = json.loads((out / "gan_speed.json").read_text())
    assert set(speed["results"]) == {"gaussian", "vmf"} and speed["results"]["vmf"]["median_s"] > 0
    assert "random-cifar10.npz" in speed["data"]  # no --data: the stand-in file, and the report says so
    fidelity = json.loads((out / "fidelity_speed.json").read_text())
    assert fidelity["num_samples"] == 40 and fidelity["is_fid_seconds"] > 0
    text = gpu_check.report(out)
    assert "**Dry run**" in text and "random pixels" in text and "| gan_speed | ok |" in text


def test_report_names_failures_timeouts_and_skips(tmp_path):
    lines = [
        {"step": "environment", "rc": 0, "seconds": 1.0, "command": "python -m x", "note": None},
        {"step": "gan_speed", "rc": 124, "seconds": 180.0, "command": "python -m y", "note": None},
        {"step": "ckd_table2_cost", "rc": 1, "seconds": 3.0, "command": "python -m z", "note": None},
        {
            "step": "fidelity_speed",
            "rc": -1,
            "seconds": 0.0,
            "command": "python -m w",
            "note": "no Inception weights given: skipped",
        },
    ]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "environment.json").write_text(
        json.dumps({"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "torch": "2.14.1", "cuda": "13.0", "cpu_count": 16})
    )
    text = gpu_check.report(tmp_path)
    assert "NVIDIA H200 (139.8 GiB)" in text and "Dry run" not in text
    assert "| gan_speed | timed out | 180 |" in text and "| ckd_table2_cost | failed (1) |" in text
    assert "| fidelity_speed | skipped |" in text and "- no Inception weights given: skipped" in text
    with pytest.raises(ValueError, match="steps.jsonl"):
        gpu_check.report(tmp_path / "missing")


def test_script_refuses_a_missing_out_or_data_with_one_line(tmp_path):
    for arguments, message in (
        ([], "--out DIR is required"),
        (["--out", str(tmp_path), "--data", str(tmp_path / "none.npz")], "none.npz"),
    ):
        result = subprocess.run([str(SCRIPT), *arguments], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1
