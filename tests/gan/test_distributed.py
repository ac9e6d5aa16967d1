"""Two processes (DDP over gloo on CPU, launched with torchrun) against one: synchronized batch norm, the
optimizers' actual learning rates, exact resumption, checkpoint files, and a refused change of process count.

One launch of tests/gan/distributed_worker.py does every 2-process part (starting processes dominates the cost).
"""

import json

import pytest
import torch

from common.cli import run_cli
from common.run import read_metrics
from gan.train import main
from tests.gan.helpers import tiny_args
from tests.torchrun import launch_two_processes

ARGS = ("--iterations", "4", "--checkpoint-every", "2", "--ema-decay", "0.5")


@pytest.fixture(scope="module")
def two_processes(fake_cifar, tmp_path_factory):
    """The output folder of one 2-process run of distributed_worker.py."""
    out = tmp_path_factory.mktemp("two-processes")
    launch_two_processes("tests.gan.distributed_worker", str(out), str(fake_cifar))
    return out


@pytest.fixture(scope="module")
def one_process(fake_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process") / "run"
    main(tiny_args(fake_cifar, out, *ARGS))
    return out


def test_generator_batch_norm_covers_the_global_batch(two_processes):
    for rank in (0, 1):
        result = json.loads((two_processes / f"sync_bn_{rank}.json").read_text())
        assert result["output_error"] < 1e-5 and result["statistics_error"] < 1e-6
        assert result["gradient_error"] < 1e-4  # relative to the largest gradient entry
        assert result["unsynchronized_output_error"] > 1e-2  # per-process statistics would be visibly different


def test_optimizer_learning_rates_equal_the_single_process_ones(two_processes, one_process):
    two = read_metrics(two_processes / "straight" / "metrics.jsonl")
    one = read_metrics(one_process / "metrics.jsonl")
    assert [r["iteration"] for r in two] == [1, 2, 3, 4]  # the main process alone writes
    expected = [2e-4 * (1 - t / 4) for t in range(4)]  # linear decay to 0 at iteration 4: 2e-4, 1.5e-4, 1e-4, 5e-5
    for records in (two, one):
        assert [r["learning_rate_g"] for r in records] == pytest.approx(expected, rel=1e-12)
        assert [r["learning_rate_d"] for r in records] == pytest.approx(expected, rel=1e-12)


def test_interrupted_and_resumed_run_equals_the_straight_one(two_processes):
    straight = torch.load(two_processes / "straight" / "last.pt")
    resumed = torch.load(two_processes / "interrupted" / "last.pt")
    for name in ("model", "discriminator", "ema"):
        assert straight[name].keys() == resumed[name].keys()
        for key in straight[name]:
            torch.testing.assert_close(resumed[name][key], straight[name][key], rtol=0, atol=1e-6)
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert drop(read_metrics(two_processes / "interrupted" / "metrics.jsonl")) == drop(
        read_metrics(two_processes / "straight" / "metrics.jsonl")
    )


def test_checkpoints_hold_both_processes_rng_streams(two_processes):
    for run, step in (("straight", 4), ("interrupted", 4), ("copy-at-2", 2)):
        checkpoint = torch.load(two_processes / run / "last.pt")
        assert (checkpoint["step"], checkpoint["num_processes"], len(checkpoint["rng"])) == (step, 2, 2)
        assert not torch.equal(checkpoint["rng"][0]["torch"], checkpoint["rng"][1]["torch"])  # one stream each
        assert sorted(p.name for p in (two_processes / run).iterdir() if not p.name.startswith(".")) == [
            "config.json",
            "generator.pt",
            "last.pt",
            "metrics.jsonl",
            "samples",
        ]


def test_resume_on_another_process_count_is_refused(two_processes, fake_cifar, capsys):
    run = two_processes / "copy-at-2"
    code = run_cli(main, tiny_args(fake_cifar, run, *ARGS, "--resume"))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "written by 2 process(es)" in err and "this launch has 1" in err
    assert torch.load(run / "last.pt")["step"] == 2
