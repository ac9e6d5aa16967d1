"""The Figure-1 example: an end-to-end run on the embedded MNIST subset writes its figure and summary."""

import json

from common.data import QUICK_MNIST
from examples.figure1_demo import main


def test_demo_runs_end_to_end_on_the_embedded_subset(tmp_path):
    summary = main(
        ["--data", str(QUICK_MNIST), "--epochs", "3", "--affinity-samples", "50", "--out", str(tmp_path / "demo")]
    )
    assert (tmp_path / "demo" / "vmf_prior_demo.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["latent_dim"] == 2
    assert summary["test_accuracy"] > 0.3  # chance is 0.1; a 2-D layer after 3 short epochs reaches about 0.5
    assert len(summary["concentration_per_class"]) == 10
