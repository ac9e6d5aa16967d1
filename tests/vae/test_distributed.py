"""vae.train on two processes (DDP over gloo on CPU, launched with torchrun): each epoch's training images are
split between the processes without overlap, early stopping ends the run at the same epoch on both, and a
non-finite loss on one process stops both."""

import json
from pathlib import Path

import pytest
import torch

from common.run import RunError
from tests.torchrun import launch_two_processes
from vae.train import TrainConfig, train

NUM_TRAIN = 300  # as in distributed_worker.py


def _two_processes(out: Path, *flags: str, timeout: float = 600) -> list[dict]:
    launch_two_processes("tests.vae.distributed_worker", str(out), *flags, timeout=timeout)
    return [json.loads((out / f"rank_{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _two_processes(tmp_path_factory.mktemp("vae-two-processes"))


def test_each_epoch_is_sharded_without_overlap(ranks):
    first, second = ranks[0]["epochs"], ranks[1]["epochs"]
    assert len(first) == len(second) == ranks[0]["summary"]["epochs"]
    for seen_0, seen_1 in zip(first, second):
        assert len(seen_0) == len(set(seen_0)) == NUM_TRAIN // 2  # every image once, half on each process
        assert len(seen_1) == len(set(seen_1)) == NUM_TRAIN // 2
        assert set(seen_0) | set(seen_1) == set(range(NUM_TRAIN))  # the validation images (300..359) never
    assert first[0] != first[1]  # reshuffled every epoch


def test_early_stopping_is_decided_identically_on_every_process(ranks):
    summaries = [{k: v for k, v in rank["summary"].items() if k != "seconds"} for rank in ranks]
    assert summaries[0] == summaries[1]
    assert summaries[0]["stopped"] == "patience"  # early stopping did trigger, before epochs (12)
    assert summaries[0]["epochs"] < 12 and summaries[0]["epochs"] == summaries[0]["best_epoch"] + 1


def test_a_non_finite_loss_on_one_process_stops_both(tmp_path):
    # Before the check was reduced over processes, process 1 returned while process 0 waited in backward forever.
    ranks = _two_processes(tmp_path, "--nan-on-rank-1", timeout=300)
    for rank in ranks:
        assert rank["summary"]["stopped"] == "non-finite loss" and rank["summary"]["epochs"] == 0


def test_two_process_run_resumes_exactly_and_refuses_one_process(tmp_path, tiny_data):
    launch_two_processes("tests.vae.distributed_worker", str(tmp_path), "--resume")
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert straight["step"] == split["step"] == 4 and split["num_processes"] == 2
    assert len(split["rng"]) == 2  # each process's RNG state, restored to that process on resume
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], split["model"][key]), key
    config = TrainConfig(
        model="hvae",
        latent_dim=3,
        out=str(tmp_path / "split"),
        num_validation=60,
        batch_size=16,
        learning_rate=0.01,
        epochs=6,
        patience=100,
        progress=False,
        figures=False,
        cpu=True,
        resume=True,
    )
    with pytest.raises(RunError, match="written by 2 process"):
        train(config, data=tiny_data, log=lambda *_: None)
