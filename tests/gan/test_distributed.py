"""Two processes (DDP over gloo on CPU, launched with torchrun): one metrics writer, per-process RNG states,
the learning-rate schedule of the configured length, and exact resumption. Slow: run with ``pytest -m slow``."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.gan.helpers import tiny_args
from common.runs import read_metrics

REPO = Path(__file__).resolve().parents[2]


def _launch(*args):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "gan/train.py", *args]
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_schedule_and_resume(fake_cifar, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    _launch(*tiny_args(fake_cifar, straight, "--iterations", "4"))
    _launch(*tiny_args(fake_cifar, interrupted, "--iterations", "4", "--stop-at", "2"))
    _launch(*tiny_args(fake_cifar, interrupted, "--iterations", "4", "--resume"))
    records = read_metrics(straight / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]  # the main process alone writes
    assert [r["lr_factor"] for r in records] == pytest.approx([1.0, 0.75, 0.5, 0.25])  # not ended early
    folder = straight / "checkpoints" / "iter_0000004"
    assert (folder / "random_states_0.pkl").is_file() and (folder / "random_states_1.pkl").is_file()
    for name in ("model.safetensors", "model_1.safetensors"):
        expected = load_file(folder / name)
        actual = load_file(interrupted / "checkpoints" / "iter_0000004" / name)
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6)
