"""Behaviour cloning of a selection rule into the candidate-set scorer: the warm start of the
RL-MBA agent (arXiv 2603.25107, step 6) before policy-gradient training.

A *teacher* is a candidate column of the observation (e.g. ``margin_rank``: margin sampling
within the candidate set, or ``proposed_kcenter``): each pick it takes the allowed candidate
with the largest value (the first on ties). :func:`collect` plays teacher episodes through
``env.step`` and records every (observation, pick); :func:`clone` fits the scorer by maximum
likelihood of the teacher's picks under the masked softmax, i.e. the Plackett-Luce likelihood
of the teacher's ordered batch. A scorer cloned from a rule that is in the candidate set plays
that rule; policy-gradient training then starts from it instead of from uniform picks.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch

from agents.reinforce import ReinforceAgent, _to_tensors, masked_log_softmax


def teacher_pick(obs: dict[str, np.ndarray], column: int) -> int:
    """The allowed candidate with the largest value in ``column`` (the first on ties)."""
    mask = np.asarray(obs["action_mask"]).astype(bool)
    if not mask.any():
        raise ValueError("no allowed candidate to pick")
    values = np.where(mask, obs["candidates"][:, column], -np.inf)
    return int(np.argmax(values))


def column_index(env: gym.Env, teacher: str) -> int:
    """Position of candidate column ``teacher`` in ``env``'s observation."""
    columns = list(env.unwrapped.candidate_columns)
    if teacher not in columns:
        raise ValueError(f"teacher {teacher!r} is not a candidate column; choose one of {columns}")
    return columns.index(teacher)


def collect(env: gym.Env, teacher: str, seeds: Sequence[int]) -> list[tuple[dict[str, np.ndarray], int]]:
    """(observation, teacher pick) of every step of one teacher episode per reset seed."""
    column = column_index(env, teacher)
    samples = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        done = False
        while not done:
            pick = teacher_pick(obs, column)
            samples.append((obs, pick))
            obs, _, terminated, truncated, _ = env.step(pick)
            done = terminated or truncated
    return samples


def clone(agent: ReinforceAgent, samples: Sequence[tuple[dict[str, np.ndarray], int]], epochs: int = 30,
          batch_size: int = 256, learning_rate: float = 3e-3, seed: int = 0) -> list[float]:
    """Fit ``agent.scorer`` to the teacher's picks (mean negative log-likelihood, Adam; the
    agent's own optimizer is left untouched); returns the mean loss of every epoch."""
    if not samples:
        raise ValueError("clone() got no samples; collect() teacher episodes first")
    dims = {np.asarray(o["candidates"]).shape for o, _ in samples}
    optimizer = torch.optim.Adam(agent.scorer.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    # one tensor batch per candidate-set size (datasets with different per_round differ)
    groups = {}
    for d in dims:
        part = [(o, a) for o, a in samples if np.asarray(o["candidates"]).shape == d]
        groups[d] = (_to_tensors([o for o, _ in part], agent.device),
                     torch.as_tensor([a for _, a in part], dtype=torch.long, device=agent.device))
    losses = []
    agent.scorer.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for t, actions in groups.values():
            order = torch.randperm(actions.shape[0], generator=generator)
            for lo in range(0, actions.shape[0], batch_size):
                idx = order[lo : lo + batch_size].to(agent.device)
                batch = {k: v[idx] for k, v in t.items()}
                logp = masked_log_softmax(agent.scorer.logits(batch), batch["action_mask"])
                loss = -logp.gather(1, actions[idx, None]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * idx.shape[0]
                count += idx.shape[0]
        losses.append(total / count)
    return losses
