"""Speed of the default AV-Digits environment on this machine (first version).

    python benchmarks/speed.py [--episodes 3] [--device cpu]

Prints one round split into train (fitting the evidential learner), score (AMCB, EFDA,
k-means diversity, candidate features) and select (the b picks: mask checks and observation
building, with a random agent), then the wall time of whole episodes (reset + all rounds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import rlmba_env  # noqa: F401


def run_episode(env, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    timings = {"train": [], "score": [], "select": [], "episode": []}
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    terminated = False
    while not terminated:
        picks_start = time.perf_counter()
        for _ in range(env.unwrapped.budget):
            obs, _, terminated, _, _ = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        round_total = time.perf_counter() - picks_start
        t = env.unwrapped.last_timings
        timings["train"].append(t["train_s"])
        timings["score"].append(t["score_s"])
        timings["select"].append(round_total - t["train_s"] - t["score_s"])
    timings["episode"].append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="RLMBA-AVDigits-v0")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    env = gym.make(args.env_id, device=args.device)
    run_episode(env, seed=10_000)  # warm-up: torch's one-off start-up costs are not the env's
    all_timings: dict[str, list[float]] = {"train": [], "score": [], "select": [], "episode": []}
    for seed in range(args.episodes):
        for key, values in run_episode(env, seed).items():
            all_timings[key] += values

    p = env.unwrapped.protocol
    print(f"{args.env_id} on {args.device}: {p.initial_labels} initial labels, {p.per_round} per round, "
          f"{p.rounds} rounds, pool {len(env.unwrapped.dataset.splits['pool'])}, {args.episodes} episodes")
    print(f"| {'part of one round':<18} | {'median ms':>9} | {'max ms':>7} |")
    print(f"|{'-' * 20}|{'-' * 10}:|{'-' * 7}:|")
    for key in ("train", "score", "select"):
        values = all_timings[key]
        print(f"| {key:<18} | {1000 * statistics.median(values):>9.1f} | {1000 * max(values):>7.1f} |")
    round_ms = sum(1000 * statistics.median(all_timings[k]) for k in ("train", "score", "select"))
    print(f"| {'round (sum)':<18} | {round_ms:>9.1f} | {'':>7} |")
    episodes = all_timings["episode"]
    print(f"episode: median {statistics.median(episodes):.2f} s, max {max(episodes):.2f} s "
          f"(target: under 30 s on 2 CPU cores)")


if __name__ == "__main__":
    main()
