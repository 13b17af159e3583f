"""Small, fast fixtures shared by the tests."""

import os
from pathlib import Path

import pytest
import torch

from rlmba_env.data.synthetic import make_synthetic

# Scripts run as a user runs them import this checkout's packages, not the copy that the
# virtualenv's editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                          os.environ.get("PYTHONPATH")]))

# A learner that trains in a few milliseconds: the tests check mechanics, not accuracy.
FAST_LEARNER = {"epochs": 30, "warm_epochs": 10, "hidden": 16}
SMALL_PROTOCOL = {"initial_labels": 10, "per_round": 4, "rounds": 3}


@pytest.fixture
def small_dataset():
    return make_synthetic(n_samples=400, n_classes=4, dims=(8, 6), val_per_class=10, seed=3)


@pytest.fixture
def small_env_kwargs():
    return {**SMALL_PROTOCOL, "learner": dict(FAST_LEARNER)}


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread, restored afterwards: tiny fits and forwards gain nothing
    from intra-op threads, and on two busy cores waiting threads slow them 5-20x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
