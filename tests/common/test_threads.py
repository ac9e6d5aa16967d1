"""common.cli.set_threads: the default thread count (1 unless OMP_NUM_THREADS is set), explicit counts, mistakes."""

import pytest
import torch

from common.cli import UserError, set_threads


@pytest.fixture(autouse=True)
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_default_is_one_thread_without_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    set_threads(None)
    assert torch.get_num_threads() == 1


def test_default_respects_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)  # what torch did at start-up with OMP_NUM_THREADS=2
    set_threads(None)
    assert torch.get_num_threads() == 2


def test_explicit_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    set_threads(2)
    assert torch.get_num_threads() == 2
    set_threads(1)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_counts_name_the_flag(bad):
    with pytest.raises(UserError, match="--threads must be a positive integer"):
        set_threads(bad)
