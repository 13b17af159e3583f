"""Results reproduce bit for bit: episodes at fixed seeds give exactly the pinned numbers.

The pins in ``tests/reproducibility_pins.json`` were recorded on CPU with one torch thread.
A change that is meant to alter results (a new learner default, a new reward) rewrites them
with ``python tests/test_reproducibility.py --write`` and says so in its commit; a refactor
must leave them untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlmba_env  # noqa: F401  (registers the ids)
from rlmba_env.data.synthetic import make_synthetic
from rlmba_env.strategies import make_strategy, run_strategy_episode
from rlmba_env.vector import BatchedMultimodalALVectorEnv

PINS = Path(__file__).with_name("reproducibility_pins.json")
LEARNER = {"epochs": 20, "warm_epochs": 8, "hidden": 16}
PROTOCOL = {"initial_labels": 10, "per_round": 4, "rounds": 3}


def random_episode(env, seed: int) -> list[list[float]]:
    """(reward, val top-1, test top-1) of every round closed by random allowed picks."""
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    out = [[0.0, info["top1"], info["test_top1"]]]
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        if "labeled_rows" in info:
            out.append([reward, info["top1"], info["test_top1"]])
    return out


def strategy_episode(env, name: str) -> dict:
    curve = run_strategy_episode(env, make_strategy(name), seed=5, rng_seed=5)
    return {"test_top1": [r["test_top1"] for r in curve], "labeled": env.unwrapped.labeled_rows.tolist()}


def vector_episode(learner: dict) -> list[list[float]]:
    dataset = make_synthetic(n_samples=300, n_classes=3, dims=(6, 5), val_per_class=8, seed=4)
    vec = BatchedMultimodalALVectorEnv(dataset, PROTOCOL, 2, learner={**LEARNER, **learner})
    rng = np.random.default_rng(3)
    vec.reset(seed=7)
    out = []
    for _ in range(PROTOCOL["rounds"] * PROTOCOL["per_round"]):
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in vec.action_masks()])
        _, rewards, _, _, infos = vec.step(actions)
        if "test_top1" in infos and "labeled_rows" in infos:
            out.append(rewards.tolist() + infos["test_top1"].tolist())
    return out


def compute(tmp: Path) -> dict:
    """Every pinned number, recomputed."""
    avdigits = gym.make("RLMBA-AVDigits-v0", learner=LEARNER, **PROTOCOL).unwrapped
    features_path = tmp / "synthetic"
    make_synthetic(n_samples=400, n_classes=4, dims=(8, 6), val_per_class=10, seed=3).save(features_path)
    features = gym.make("RLMBA-Features-v0", path=str(features_path), learner=LEARNER, **PROTOCOL).unwrapped
    return {
        "avdigits_random": random_episode(avdigits, 0),
        "avdigits_rlmba_score": strategy_episode(avdigits, "rlmba-score"),
        "avdigits_coreset": strategy_episode(avdigits, "coreset"),
        "features_random": random_episode(features, 1),
        "features_ds_minibatch": random_episode(
            gym.make("RLMBA-Features-v0", path=str(features_path), **PROTOCOL,
                     learner={**LEARNER, "fusion": "ds", "batch_size": 4, "warm_start": True}).unwrapped, 2),
        "vector_default": vector_episode({}),
        "vector_minibatch_warm": vector_episode({"batch_size": 4, "warm_start": True}),
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield compute(tmp_path_factory.mktemp("pins"))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["avdigits_random", "avdigits_rlmba_score", "avdigits_coreset", "features_random",
                                  "features_ds_minibatch", "vector_default", "vector_minibatch_warm"])
def test_results_equal_the_pinned_numbers_bit_for_bit(results, name):
    assert results[name] == json.loads(PINS.read_text())[name]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_reproducibility.py --write  (rewrites the pins)")
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        PINS.write_text(json.dumps(compute(Path(tmp)), indent=1) + "\n")
    print(f"wrote {PINS}")
