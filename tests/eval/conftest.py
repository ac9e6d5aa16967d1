"""Shared fixtures: one tiny classifier trained per test session, registered with torch-fidelity."""

import pytest
import torch

from eval.features import register_classifier_extractor
from tests.eval.synthetic import train_tiny_classifier

EXTRACTOR_NAME = "vmfprior-test-tiny-classifier"


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors run fastest on one thread; on a shared 2-core machine, threads mostly wait on each other.

    Opt-in per module (`pytestmark = pytest.mark.usefixtures("single_thread")`) so other test files here are unaffected.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_classifier():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny_classifier()
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_extractor(tiny_classifier):
    """Name of a torch-fidelity extractor built on the tiny classifier."""
    register_classifier_extractor(EXTRACTOR_NAME, tiny_classifier, replace=True)
    return EXTRACTOR_NAME
