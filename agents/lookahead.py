"""A one-step look-ahead teacher learned across datasets, and its linear candidate scorer.

RL-MBA (arXiv 2603.25107) learns its selection policy from the round reward alone. This module
learns it from look-ahead instead: in simulation the pool's labels are known, so at a round
of a *training* dataset one can label a candidate batch, refit, and measure what it bought.
:func:`round_gains` draws batches from the round's candidate set (each proposer's batch and
uniform subsets), fits one learner per batch on the labeled rows plus the batch, all from the
same fit seed (one batched :func:`~rlmba_env.learner.trainer.fit_learners` call), and
measures the fused top-1 accuracy on the pool rows outside the candidate set (the same rows
for every batch; AULC integrates accuracy). :func:`collect` records, per round, the batch
means of the observation's candidate columns and those gains.

:func:`fit_linear` regresses the gain, centred per round (the round's own difficulty drops
out), on the batch means, centred per round and standardised, by ridge regression. A linear
model of batch means is a per-candidate linear score ``w . x``: the batch of top-b candidates
by it maximises the predicted gain. :func:`linear_agent` writes that score exactly into the
shipped :class:`~agents.reinforce.ReinforceAgent` set scorer (one ReLU path kept positive over
the unit cube, every other unit zero), so the result is an ordinary REINFORCE checkpoint that
plays greedy, frozen or keeps learning online. :func:`with_interactions` crosses the columns
with a few entries of the round state (recorded by :func:`collect`), so that the fitted rule can
change with the labeling regime; :func:`bilinear_agent` writes that fit exactly into a
:class:`~agents.networks.BilinearScorer`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from agents.imitation import teacher_pick
from agents.reinforce import ReinforceAgent
from rlmba_env.learner.evidential import fuse
from rlmba_env.learner.trainer import fit_learners, predict_learners
from rlmba_env.selection.metrics import top1

IGNORED_COLUMNS = ("picked",)
"""candidate columns left out of the regression (always 0 at a round's start)"""


def scored_columns(env: gym.Env) -> tuple[list[str], list[int]]:
    """The env's candidate columns and the positions of those the regression uses (all but
    :data:`IGNORED_COLUMNS`)."""
    columns = list(env.unwrapped.candidate_columns)
    return columns, [j for j, c in enumerate(columns) if c not in IGNORED_COLUMNS]


@dataclass
class RoundSample:
    """One round's look-ahead: batch means of the candidate columns and each batch's gain."""

    features: np.ndarray
    """(S, F) batch means of the candidate columns"""
    gains: np.ndarray
    """(S,) fused top-1 on the evaluation rows after labeling the batch"""
    dataset: str
    """the env's dataset name"""
    state: np.ndarray | None = None
    """(G,) the observation's round state at the round's start (None where not recorded)"""


def draw_batches(obs: dict[str, np.ndarray], columns: Sequence[str], per_round: int, n_random: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """Candidate positions of each proposer's batch (its ``proposed_*`` flag set) and of
    ``n_random`` uniform subsets of the allowed candidates, each of ``per_round`` (or fewer)."""
    allowed = np.flatnonzero(np.asarray(obs["action_mask"]).astype(bool))
    if allowed.size == 0:
        raise ValueError("draw_batches() got an observation with no allowed candidate")
    cand = np.asarray(obs["candidates"])
    batches = []
    for j, name in enumerate(columns):
        if name.startswith("proposed_"):
            chosen = allowed[cand[allowed, j] > 0.5][:per_round]
            if chosen.size:
                batches.append(chosen)
    b = min(per_round, allowed.size)
    batches += [np.sort(rng.choice(allowed, b, replace=False)) for _ in range(n_random)]
    return batches


def round_gains(env: gym.Env, batches: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """Fused top-1 on the pool rows outside the candidate set after a fit on the labeled rows
    plus each batch (candidate positions), every fit from ``seed``; the env is not changed."""
    u = env.unwrapped
    result = u._result
    cand_rows = result.candidates.cpu().numpy()
    labeled = u.labeled_rows
    pool = result.pool_rows.cpu().numpy()
    held = np.setdiff1d(pool, cand_rows)
    rows = [torch.as_tensor(np.concatenate([labeled, cand_rows[b]])) for b in batches]
    # one schedule per row count: pad nothing, group by size (fit_learners groups equal sizes)
    learners = [copy.deepcopy(u.learner) for _ in batches]
    fit_learners(learners, u.data.features, u.data.labels, rows, [u._weights] * len(batches),
                 [int(seed)] * len(batches))
    alphas = predict_learners(learners, u.data.features, torch.as_tensor(held))  # (S, M, n, K)
    labels = u.data.labels[torch.as_tensor(held)]
    fusion = u.learner.config.fusion
    return np.array([top1(fuse(a, u._weights, fusion), labels) for a in alphas])


def collect(env: gym.Env, seeds: Sequence[int], n_random: int = 6, behaviour: str = "margin_rank",
            rng_seed: int = 0) -> list[RoundSample]:
    """Play one episode per reset seed, picking each round's batch by the largest ``behaviour``
    column; before each round's picks, measure the look-ahead gains of its candidate batches."""
    u = env.unwrapped
    columns, keep = scored_columns(env)
    lead = columns.index(behaviour)
    rng = np.random.default_rng(rng_seed)
    samples = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        done, picks = False, 0
        while not done:
            if picks % u.budget == 0:
                batches = draw_batches(obs, columns, u.budget, n_random, rng)
                gains = round_gains(env, batches, int(rng.integers(2**31 - 1)))
                cand = np.asarray(obs["candidates"])
                feats = np.stack([cand[b][:, keep].mean(0) for b in batches])
                samples.append(RoundSample(feats, gains, u.dataset.name, np.asarray(obs["state"], np.float32)))
            obs, _, terminated, truncated, _ = env.step(teacher_pick(obs, lead))
            done, picks = terminated or truncated, picks + 1
    return samples


def fit_linear(samples: Sequence[RoundSample], ridge: float = 1.0, prior: int | None = None) -> np.ndarray:
    """Weights ``w`` (F_kept,) of the per-candidate score ``w . x`` over the kept raw columns:
    ridge regression of the per-round-centred gain on the per-round-centred, standardised batch
    means (equal weight per round: each round's gains are divided by their spread).

    The penalty shrinks towards zero, or with ``prior`` (a kept column's position, e.g. that of
    ``margin_rank``) towards the rule that column plays: its own least-squares coefficient
    (at least 0) on it, 0 elsewhere. A large ``ridge`` then plays that rule, a small one the
    free fit."""
    if not samples:
        raise ValueError("fit_linear() got no samples; collect() look-ahead rounds first")
    xs, ys = [], []
    for s in samples:
        spread = s.gains.std()
        if s.gains.size < 2 or spread == 0:
            continue
        xs.append(s.features - s.features.mean(0))
        ys.append((s.gains - s.gains.mean()) / spread)
    if not xs:
        raise ValueError("fit_linear(): every round's batches had the same gain; nothing to learn")
    x, y = np.concatenate(xs), np.concatenate(ys)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    z = x / scale
    centre = np.zeros(z.shape[1])
    if prior is not None:
        centre[prior] = max(0.0, float(z[:, prior] @ y) / max(float(z[:, prior] @ z[:, prior]), 1e-12))
    # penalty relative to the correlation matrix z'z / n, so it does not depend on the sample count
    w = np.linalg.solve(z.T @ z / len(y) + ridge * np.eye(z.shape[1]), z.T @ y / len(y) + ridge * centre)
    return w / scale


def selected_gain(samples: Sequence[RoundSample], weights: np.ndarray) -> float:
    """Mean, over rounds, of the gain of the batch ``weights`` ranks first minus the round's mean
    gain: how much choosing among a round's batches by the scorer buys."""
    return float(np.mean([s.gains[np.argmax(s.features @ weights)] - s.gains.mean() for s in samples]))


def choose_ridge(samples: Sequence[RoundSample], ridges: Sequence[float],
                 prior: int | None = None) -> tuple[float, dict[float, float]]:
    """The ridge penalty with the best leave-one-dataset-out :func:`selected_gain` over the
    datasets of ``samples`` (each dataset scored by a fit on the others; the mean over datasets),
    and every candidate's score. The smallest penalty wins ties."""
    names = sorted({s.dataset for s in samples})
    if len(names) < 2:
        raise ValueError(f"choose_ridge() needs samples of at least two datasets, got {names}")
    scores = {}
    for ridge in ridges:
        scores[ridge] = float(np.mean([
            selected_gain([s for s in samples if s.dataset == d],
                          fit_linear([s for s in samples if s.dataset != d], ridge, prior))
            for d in names]))
    best = max(sorted(ridges), key=lambda r: scores[r])
    return best, scores


def linear_agent(env: gym.Env, weights: np.ndarray, seed: int = 0) -> ReinforceAgent:
    """A :class:`ReinforceAgent` for ``env`` whose candidate logit is exactly ``weights . x``
    over the kept columns (plus a constant), independent of the round state."""
    columns, keep = scored_columns(env)
    if len(weights) != len(keep):
        raise ValueError(f"linear_agent() got {len(weights)} weights; the observation has {len(keep)} "
                         f"scored columns ({[columns[j] for j in keep]})")
    agent = ReinforceAgent.from_env(env, seed=seed)
    net = agent.scorer
    w = torch.zeros(net.n_features, dtype=torch.float32)
    w[keep] = torch.as_tensor(weights, dtype=torch.float32)
    # every column lies in [0, 1], so w . x + sum(max(-w, 0)) >= 0 and the ReLUs pass it unchanged
    offset = float(torch.clamp(-w, min=0).sum()) + 1.0
    with torch.no_grad():
        for p in net.candidate_net.parameters():
            p.zero_()
        first, second = net.candidate_net[0], net.candidate_net[2]
        first.weight[0, : net.n_features] = w
        first.bias[0] = offset
        second.weight[0, 0] = 1.0
        net.score_head.weight.zero_()
        net.score_head.weight[0, 0] = 1.0
        net.score_head.bias.zero_()
    return agent


def save_samples(path, samples: Sequence[RoundSample]) -> None:
    """Write ``samples`` to one ``.npz`` (rounds concatenated, ``round`` gives each row's round;
    ``state`` one row per round, written when every sample has one)."""
    states = {"state": np.stack([s.state for s in samples])} if all(s.state is not None for s in samples) else {}
    np.savez(path, features=np.concatenate([s.features for s in samples]),
             gains=np.concatenate([s.gains for s in samples]),
             round=np.concatenate([np.full(s.gains.size, i) for i, s in enumerate(samples)]),
             dataset=np.array([s.dataset for s in samples]), **states)


def load_samples(path) -> list[RoundSample]:
    """The samples written by :func:`save_samples`."""
    with np.load(path) as f:
        rounds, names = f["round"], f["dataset"]
        states = f["state"] if "state" in f else [None] * names.size
        return [RoundSample(f["features"][rounds == i], f["gains"][rounds == i], str(names[i]), states[i])
                for i in range(names.size)]


def with_interactions(samples: Sequence[RoundSample], state_terms: Sequence[int]) -> list[RoundSample]:
    """The samples with each batch mean ``x`` replaced by ``x (x) [1, s_j1, ..., s_jn]`` (column
    major: column c's terms are adjacent), the round state ``s`` at ``state_terms``. The state is
    constant within a round, so this is the batch mean of the per-candidate products, and a
    linear fit on it is a :class:`~agents.networks.BilinearScorer` (see :func:`bilinear_agent`)."""
    out = []
    for s in samples:
        if s.state is None:
            raise ValueError(f"with_interactions() needs the round state; a {s.dataset} sample has none "
                             "(collect() records it)")
        terms = np.concatenate([[1.0], np.asarray(s.state, np.float64)[list(state_terms)]])
        feats = (s.features[:, :, None] * terms[None, None, :]).reshape(len(s.features), -1)
        out.append(RoundSample(feats, s.gains, s.dataset, s.state))
    return out


def bilinear_agent(env: gym.Env, weights: np.ndarray, state_terms: Sequence[int], seed: int = 0) -> ReinforceAgent:
    """A :class:`ReinforceAgent` with a :class:`~agents.networks.BilinearScorer` whose logit is
    exactly the fit of :func:`fit_linear` on :func:`with_interactions` samples (``weights``
    of length kept columns x (1 + len(state_terms)))."""
    _, keep = scored_columns(env)
    width = 1 + len(state_terms)
    if len(weights) != len(keep) * width:
        raise ValueError(f"bilinear_agent() got {len(weights)} weights; {len(keep)} scored columns x "
                         f"{width} terms need {len(keep) * width}")
    agent = ReinforceAgent.from_env(env, {"scorer": "bilinear", "state_terms": tuple(state_terms)}, seed=seed)
    with torch.no_grad():
        agent.scorer.weight.zero_()
        agent.scorer.weight[keep] = torch.as_tensor(np.reshape(weights, (len(keep), width)), dtype=torch.float32)
    return agent
