"""The observation of :class:`~rlmba_env.env.MultimodalALEnv`: its layout, built in one place.

This module alone defines what an agent sees (RL-MBA, arXiv 2603.25107, the policy's state):
the names and order of the ``candidates`` columns (:func:`candidate_columns`) and of the
``state`` entries (:func:`state_entries`), the spaces, the device-side assembly of both from a
round's measurements (:func:`candidate_features`, :func:`round_state`), and the host-side
copy that picks update in place (:class:`CandidateView`): within a round only the
``coverage`` and ``picked`` columns and the ``picks_left`` entry change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from rlmba_env.learner.evidential import ds_conflict, expected_probs, opinion

STATE_CLIP = 10.0
"""bound of every ``state`` entry"""
POOL_COLUMNS = ["fused_uncertainty", "conflict", "disagreement", "diversity", "coverage", "score", "picked"]
"""the ``candidates`` columns after the per-modality ones"""
COVERAGE_COLUMN = POOL_COLUMNS.index("coverage") - len(POOL_COLUMNS)
PICKED_COLUMN = POOL_COLUMNS.index("picked") - len(POOL_COLUMNS)


def candidate_columns(modalities: tuple[str, ...]) -> list[str]:
    """Names of the ``candidates`` observation columns, in order."""
    cols = []
    for m in modalities:
        cols += [f"uncertainty_{m}", f"belief_{m}"]
    return cols + POOL_COLUMNS


def state_entries(modalities: tuple[str, ...]) -> list[str]:
    """Names of the ``state`` observation entries, in order."""
    return (
        ["round_fraction", "picks_left", "val_top1", "val_nll", "val_ece", "balance"]
        + [f"gap_{m}" for m in modalities]
        + [f"weight_{m}" for m in modalities]
        + [f"contribution_{m}" for m in modalities]
        + ["mean_fused_uncertainty", "mean_diversity", "loss_slope", "log_grad_norm"]
    )


def observation_space(modalities: tuple[str, ...], n_candidates: int) -> spaces.Dict:
    """The env's ``Dict`` observation space for ``modalities`` and K = ``n_candidates``."""
    return spaces.Dict({
        "candidates": spaces.Box(0.0, 1.0, (n_candidates, len(candidate_columns(modalities))), np.float32),
        "state": spaces.Box(-STATE_CLIP, STATE_CLIP, (len(state_entries(modalities)),), np.float32),
        "action_mask": spaces.MultiBinary(n_candidates),
    })


class CandidateSpace(spaces.Discrete):
    """``Discrete(K)`` whose ``sample()`` draws only the candidates allowed right now.

    A random agent written as ``env.action_space.sample()`` (and the random steps of
    Gymnasium's and SB3's ``check_env``) then never picks a masked candidate. An explicit
    ``mask`` or ``probability`` argument is honoured as in ``Discrete``; a pickled copy (e.g.
    sent from a subprocess env) no longer sees the env and samples like ``Discrete``.
    """

    def __init__(self, n: int, current_mask: Callable[[], np.ndarray | None] | None, seed=None):
        super().__init__(n, seed=seed)
        self._current_mask = current_mask

    def sample(self, mask=None, probability=None):
        if mask is None and probability is None and self._current_mask is not None:
            mask = self._current_mask()
        return super().sample(mask=mask, probability=probability)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_current_mask"] = None
        return state


def candidate_features(pool_alphas: torch.Tensor, top: torch.Tensor, uncertainty: torch.Tensor,
                       fused_u: torch.Tensor, distance: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """The ``candidates`` rows ``(c, 2M + 7)`` of the pool positions ``top`` at round start
    (``coverage`` and ``picked`` 0), from the pool's opinions ``(M, n, K)``, uncertainties u_m
    ``(M, n)``, fused uncertainty U ``(n,)``, k-means distances ``(n,)`` and scores q ``(n,)``."""
    top_alphas = pool_alphas[:, top]
    beliefs, _ = opinion(top_alphas)  # (M, c, K)
    probs = expected_probs(top_alphas)  # (M, c, K)
    m_count = pool_alphas.shape[0]
    conflict = torch.zeros(top.shape[0], device=score.device)
    disagreement = torch.zeros(top.shape[0], device=score.device)
    pairs = 0
    for i in range(m_count):
        for j in range(i + 1, m_count):
            conflict += ds_conflict(top_alphas[i], top_alphas[j])
            disagreement += 0.5 * (probs[i] - probs[j]).abs().sum(-1)
            pairs += 1
    conflict /= pairs
    disagreement /= pairs
    # an empty pool (a protocol that labeled all of it) has no maximum: nothing is divided by it
    d_max = distance.max().clamp_min(1e-12) if distance.numel() else distance.new_ones(())
    q_max = score.max().clamp_min(1e-12) if score.numel() else score.new_ones(())
    columns = []
    for m in range(m_count):
        columns += [uncertainty[m, top], beliefs[m].max(-1).values]
    columns += [
        fused_u[top],
        conflict,
        disagreement,
        distance[top] / d_max,
        torch.zeros_like(conflict),  # coverage, filled in by the env as picks are made
        score[top] / q_max,
        torch.zeros_like(conflict),  # picked flag
    ]
    return torch.stack(columns, dim=1).clamp(0.0, 1.0)


def round_state(val_top1: float, val_nll: float, val_ece: float, balance: float, gaps: list[float],
                weights: list[float], contributions: list[float], mean_fused_u: float, mean_diversity: float,
                loss_slope: float, grad_norm: float) -> torch.Tensor:
    """The ``state`` entries ``(G,)`` that do not depend on picks (``round_fraction`` and
    ``picks_left`` 0, set per step by :meth:`CandidateView.observation`)."""
    return torch.tensor(
        [0.0, 0.0, val_top1, val_nll, val_ece, balance] + gaps + weights + contributions
        + [mean_fused_u, mean_diversity, loss_slope, float(torch.log1p(torch.tensor(grad_norm)))],
        dtype=torch.float32,
    ).clamp(-STATE_CLIP, STATE_CLIP)


@dataclass
class CandidateView:
    """A round's candidate set and state on the host, copied once per round; picks update the
    ``candidates`` observation in place (their ``picked`` flag and their cluster's coverage)."""

    rows: np.ndarray
    """dataset rows of the candidates, best score first (<= K)"""
    cluster: np.ndarray
    """k-means cluster of each candidate"""
    cluster_labeled: np.ndarray
    """labeled rows nearest to each cluster centre"""
    cluster_size: np.ndarray
    """unlabeled rows in each cluster"""
    state: np.ndarray
    """``state`` entries that do not depend on picks"""
    candidates: np.ndarray
    """the ``candidates`` observation (K, F), padding rows 0"""
    picked_per_cluster: np.ndarray
    """picks of this round in each cluster"""

    @classmethod
    def from_round(cls, result, modalities: tuple[str, ...], n_candidates: int) -> "CandidateView":
        """The host copy of a :class:`~rlmba_env.round.RoundResult`, no pick made."""
        rows = result.candidates.cpu().numpy()
        candidates = np.zeros((n_candidates, len(candidate_columns(modalities))), dtype=np.float32)
        candidates[: rows.shape[0]] = result.candidate_features.cpu().numpy()
        view = cls(rows=rows, cluster=result.candidate_cluster.cpu().numpy(),
                   cluster_labeled=result.cluster_labeled.cpu().numpy(),
                   cluster_size=result.cluster_size.cpu().numpy(), state=result.state.cpu().numpy(),
                   candidates=candidates, picked_per_cluster=np.zeros(0, dtype=np.float32))
        view.picked_per_cluster = np.zeros_like(view.cluster_size)
        view.candidates[: rows.shape[0], COVERAGE_COLUMN] = view.coverage(view.cluster)
        return view

    def check_pick(self, action, picked: np.ndarray) -> int:
        """``action`` as a candidate position, or one ValueError saying why it cannot be picked."""
        a = np.asarray(action)
        whole = a.size == 1 and (np.issubdtype(a.dtype, np.integer) or (
            np.issubdtype(a.dtype, np.floating) and math.isfinite(float(a)) and float(a).is_integer()))
        if not whole:  # NaN, inf, 1.5, strings, None, several values
            raise ValueError(f"action must be one integer candidate position, got {action!r}")
        pos = int(a.reshape(()))
        if not 0 <= pos < picked.shape[0]:
            raise ValueError(f"action {pos} is out of range: candidates are 0..{picked.shape[0] - 1}")
        if picked[pos]:
            raise ValueError(
                f"candidate {pos} was already picked this round (mask it: obs['action_mask'][{pos}] == 0)"
            )
        if pos >= self.rows.shape[0]:
            raise ValueError(
                f"candidate {pos} is a padding slot: only {self.rows.shape[0]} "
                f"unlabeled rows are left (obs['action_mask'][{pos}] == 0)"
            )
        return pos

    def coverage(self, clusters: np.ndarray) -> np.ndarray:
        """Share of each of ``clusters`` labeled before or picked in this round."""
        covered = self.cluster_labeled[clusters] + self.picked_per_cluster[clusters]
        return np.clip(covered / np.maximum(self.cluster_labeled[clusters] + self.cluster_size[clusters], 1), 0, 1)

    def pick(self, action, picked: np.ndarray) -> int:
        """Pick ``action`` (checked by :meth:`check_pick`), set its flag in ``picked``; returns its
        position. A pick changes only its picked flag and the coverage of its cluster's candidates."""
        pos = self.check_pick(action, picked)
        picked[pos] = True
        self.picked_per_cluster[self.cluster[pos]] += 1.0
        self.candidates[pos, PICKED_COLUMN] = 1.0
        same = np.flatnonzero(self.cluster == self.cluster[pos])
        self.candidates[same, COVERAGE_COLUMN] = self.coverage(self.cluster[same])
        return pos

    def action_mask(self, picked: np.ndarray) -> np.ndarray:
        """1 where a candidate exists and was not picked this round."""
        mask = np.zeros(picked.shape[0], dtype=np.int8)
        mask[: self.rows.shape[0]] = 1
        mask[picked] = 0
        return mask

    def observation(self, round_fraction: float, picks_left: float, picked: np.ndarray) -> dict[str, np.ndarray]:
        """The observation, from the host copy: no device work or transfer per step."""
        state = self.state.copy()
        state[0], state[1] = round_fraction, picks_left
        return {"candidates": self.candidates.copy(), "state": state, "action_mask": self.action_mask(picked)}


def round_info(result, view: CandidateView, round_: int, n_labeled: int, action_mask: np.ndarray,
               reward_terms: dict[str, float], labeled_rows: np.ndarray | None = None) -> dict[str, Any]:
    """The env's ``info``: the round's metrics on ``val`` and ``test``, the reward's terms, and
    ``labeled_rows`` when a round was just closed."""
    info = {
        "round": round_,
        "labeled": n_labeled,
        "action_mask": action_mask,
        "candidate_rows": view.rows.copy(),
        "top1": result.val.top1,
        "nll": result.val.nll,
        "ece": result.val.ece,
        "balance": result.balance,
        "test_top1": result.test.top1,
        "reward_terms": dict(reward_terms),
    }
    modalities = tuple(result.val.top1_modality)
    for m in modalities:
        info[f"top1_{m}"] = result.val.top1_modality[m]
        info[f"test_top1_{m}"] = result.test.top1_modality[m]
        info[f"contribution_{m}"] = result.contributions[m]
    for m, w in zip(modalities, result.weights_list):
        info[f"weight_{m}"] = w
        info[f"fused_{m}"] = float(w > 0)
    info["fusion_subset"] = tuple(m for m, w in zip(modalities, result.weights_list) if w > 0)
    if labeled_rows is not None:
        info["labeled_rows"] = np.array(labeled_rows)
    return info


def render_ansi(dataset, protocol, round_: int, n_labeled: int, n_picks: int, result) -> str:
    """The ``render_mode="ansi"`` text of a round: labels, val/test top-1, weights, contributions."""
    r = result
    lines = [
        f"{dataset.name}: round {round_}/{protocol.rounds}, "
        f"{n_labeled} labeled, picks {n_picks}/{protocol.per_round}",
        f"  val top-1 {r.val.top1:.3f} (" + ", ".join(f"{m} {v:.3f}" for m, v in r.val.top1_modality.items())
        + f"), test top-1 {r.test.top1:.3f}",
        "  weights " + ", ".join(f"{m} {w:.2f}" for m, w in zip(dataset.modalities, r.weights_list))
        + "; contributions " + ", ".join(f"{m} {c:+.3f}" for m, c in r.contributions.items())
        + f"; balance {r.balance:.2f}",
    ]
    encoders = dataset.meta.get("encoders")
    if encoders:
        lines.append("  encoders " + ", ".join(f"{m}: {e}" for m, e in encoders.items()))
    return "\n".join(lines)
