"""Play one episode of the environment with a classic strategy, through ``env.label(rows)``."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from rlmba_env.strategies.base import Strategy


def round_record(info: dict[str, Any], modalities: tuple[str, ...], select_s: float) -> dict[str, Any]:
    """One row of an evaluation: what the env reported at the end of a round (or after reset)."""
    row = {
        "round": int(info["round"]),
        "labeled": int(info["labeled"]),
        "test_top1": float(info["test_top1"]),
        "val_top1": float(info["top1"]),
        "balance": float(info["balance"]),
        "select_s": float(select_s),
    }
    for m in modalities:
        row[f"test_top1_{m}"] = float(info[f"test_top1_{m}"])
    for m in modalities:
        row[f"contribution_{m}"] = float(info[f"contribution_{m}"])
    for m in modalities:
        row[f"weight_{m}"] = float(info[f"weight_{m}"])
    for m in modalities:
        row[f"fused_{m}"] = float(info[f"fused_{m}"])
    return row


def run_strategy_episode(env: gym.Env, strategy: Strategy, seed: int | None, rng_seed: int,
                         options: dict | None = None) -> list[dict[str, Any]]:
    """Reset ``env`` with ``seed`` and label every round's batch with ``strategy``.

    Each round the strategy sees ``env.unwrapped.pool_state()`` and chooses ``per_round`` rows
    with ``np.random.default_rng(rng_seed)`` (one generator for the whole episode), which
    ``env.unwrapped.label(rows)`` labels. ``options`` go to ``reset`` (e.g. ``{"episode_seed": s}``
    to replay an episode by its episode seed, with ``seed=None``). Returns one dict per round, round 0 being the state
    after reset: ``round``, ``labeled``, ``test_top1``, ``val_top1``, ``balance``,
    ``test_top1_<m>``, ``contribution_<m>``, ``weight_<m>`` and ``fused_<m>`` (1 when in the fused
    opinion's subset) per modality, and ``select_s``, the wall-clock
    seconds of the ``select`` call that led to the round (0.0 for round 0, which has none).
    """
    base = env.unwrapped
    rng = np.random.default_rng(rng_seed)
    _, info = env.reset(seed=seed, options=options)
    modalities = tuple(base.modalities)
    curve = [round_record(info, modalities, 0.0)]
    terminated = False
    while not terminated:
        state = base.pool_state()
        start = time.perf_counter()
        rows = strategy.select(state, base.budget, rng)
        select_s = time.perf_counter() - start
        _, _, terminated, truncated, info = base.label(rows)
        curve.append(round_record(info, modalities, select_s))
        terminated = terminated or truncated
    return curve
