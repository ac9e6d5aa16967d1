"""vae.train on two processes (DDP over gloo on CPU, launched with torchrun): each epoch's training images are
split between the processes without overlap, early stopping ends the run at the same epoch on both, and a
non-finite loss on one process stops both."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN = 300  # as in distributed_worker.py


def _two_processes(out: Path, *flags: str, timeout: float = 600) -> list[dict]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "vae" / "distributed_worker.py"), str(out), *flags]
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
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
    assert summaries[0]["stopped"] == "patience"  # early stopping did trigger, before max_epochs (12)
    assert summaries[0]["epochs"] < 12 and summaries[0]["epochs"] == summaries[0]["best_epoch"] + 1


def test_a_non_finite_loss_on_one_process_stops_both(tmp_path):
    # Before the check was reduced over processes, process 1 returned while process 0 waited in backward forever.
    ranks = _two_processes(tmp_path, "--nan-on-rank-1", timeout=300)
    for rank in ranks:
        assert rank["summary"]["stopped"] == "non-finite loss" and rank["summary"]["epochs"] == 0
