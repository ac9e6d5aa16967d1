"""The demo: a tiny end-to-end run writes its figure and summary."""

import json

import numpy as np

from vmfprior.demo import main


def test_demo_runs_end_to_end_on_a_tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 10
    images = rng.integers(0, 40, size=(300, 28, 28), dtype=np.uint8)
    for label in range(10):  # a bright stripe per class makes the classes learnable
        images[labels == label, 2 * label : 2 * label + 3, :] = 250
    path = tmp_path / "tiny-mnist.npz"
    np.savez(path, x_train=images[:200], y_train=labels[:200], x_test=images[200:], y_test=labels[200:])
    summary = main(["--data", str(path), "--epochs", "3", "--batch-size", "32", "--affinity-samples", "50",
                    "--out", str(tmp_path / "demo")])
    assert (tmp_path / "demo" / "vmf_prior_demo.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["feature_dim"] == 2
    assert summary["test_accuracy"] > 0.5  # the stripes are easy; chance is 0.1
    assert len(summary["concentration_per_class"]) == 10
