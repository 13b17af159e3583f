"""The observation of :class:`~rlmba_env.env.MultimodalALEnv`: its layout, built in one place.

This module alone defines what an agent sees (RL-MBA, arXiv 2603.25107, the policy's state):
the names and order of the ``candidates`` columns (:func:`candidate_columns`) and of the
``state`` entries (:func:`state_entries`), the spaces, the device-side assembly of both from a
round's measurements (:func:`candidate_features`, :func:`round_state`), and the host-side
copy that picks update in place (:class:`CandidateView`): within a round only the
``coverage`` and ``picked`` columns and the ``picks_left`` entry change.

Layout ``v2`` (:data:`LAYOUT`), dataset-agnostic. The paper describes each candidate by its
modalities' uncertainties and beliefs, one column per modality, so a policy trained on two
modalities cannot run on three. Here every per-modality quantity is pooled over the modalities
(mean, min, max) or taken from the strongest and weakest modality by AMCB weight, so no column
or entry depends on the number of modalities M, the class count or feature dimensions;
distances and scores enter as percentile ranks within the round's unlabeled pool (0 = lowest,
1 = highest), which do not depend on the feature scale either. Only the number of candidates
K depends on the protocol (``EnvConfig.candidate_count``).

Candidate columns (:data:`CANDIDATE_COLUMNS`, all in [0, 1]):

| column                                  | meaning                                                      |
|-----------------------------------------|--------------------------------------------------------------|
| ``fused_margin``                        | 1 - top-two gap of the fused prediction p = alpha_f / S_f    |
| ``fused_entropy``                       | entropy of p / log K                                         |
| ``efda_uncertainty``                    | EFDA U(x) / its maximum                                      |
| ``uncertainty_{mean,min,max}``          | Dirichlet vacuity K / S_m, pooled over modalities            |
| ``margin_{mean,min,max}``               | 1 - top-two gap of p_m, pooled over modalities               |
| ``belief_{mean,min,max}``               | largest belief mass of modality m, pooled                    |
| ``strong_{uncertainty,margin,belief}``  | the same three of the modality with the largest AMCB weight  |
| ``weak_{uncertainty,margin,belief}``    | ... of the modality with the smallest AMCB weight            |
| ``conflict``                            | Dempster-Shafer conflict, mean over modality pairs           |
| ``disagreement``                        | total-variation distance of the modalities' p, mean over pairs |
| ``margin_rank``                         | pool percentile of ``fused_margin``                          |
| ``labeled_distance_rank``               | pool percentile of the distance to the nearest labeled row   |
| ``density_rank``                        | pool percentile of minus the distance to the nearest k-means centre |
| ``score_rank``                          | pool percentile of the selection score q                     |
| ``proposed_<p>``                        | 1 if proposer p (:data:`~rlmba_env.selection.portfolio.PROPOSERS`) would label it this round |
| ``coverage``                            | share of the candidate's cluster labeled or picked this round |
| ``picked``                              | 1 if picked this round                                       |

Round state (:data:`STATE_ENTRIES`, clipped to [-10, 10]):

| entry                                   | meaning                                                      |
|-----------------------------------------|--------------------------------------------------------------|
| ``round_fraction``, ``picks_left``      | rounds done / rounds; picks left this round / per_round      |
| ``budget_used``                         | labeled pool rows / pool rows                                |
| ``val_top1``, ``val_nll``, ``val_ece``  | fused model on val (NLL / log K)                             |
| ``chance``                              | 1 / K                                                        |
| ``balance``                             | modality balance in [0, 1]                                   |
| ``weight_{max,min,entropy}``            | AMCB weights; entropy / log M (1 for a single modality)      |
| ``contribution_{mean,min,max}``         | Shapley contributions to fused val top-1                     |
| ``gap_{min,max}``                       | val top-1 of a modality minus fused val top-1                |
| ``class_coverage``                      | share of classes with at least one labeled row               |
| ``label_balance``                       | entropy of the labeled class counts / log K                  |
| ``mean_fused_margin``                   | mean ``fused_margin`` over the pool                          |
| ``mean_efda_uncertainty``               | mean EFDA U / max over the pool                              |
| ``loss_slope``, ``log_grad_norm``       | the last fit's loss trend and log(1 + gradient norm)         |
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
from rlmba_env.selection.efda import fused_uncertainty
from rlmba_env.selection.portfolio import PROPOSERS
from rlmba_env.selection.score import top2_margin

LAYOUT = "v2"
"""version of the observation layout, named by the env's ``describe()``"""
STATE_CLIP = 10.0
"""bound of every ``state`` entry"""
_POOLED = [f"{q}_{s}" for q in ("uncertainty", "margin", "belief") for s in ("mean", "min", "max")]
CANDIDATE_COLUMNS: tuple[str, ...] = tuple(
    ["fused_margin", "fused_entropy", "efda_uncertainty"] + _POOLED
    + [f"{w}_{q}" for w in ("strong", "weak") for q in ("uncertainty", "margin", "belief")]
    + ["conflict", "disagreement", "margin_rank", "labeled_distance_rank", "density_rank", "score_rank"]
    + [f"proposed_{p}" for p in PROPOSERS]
    + ["coverage", "picked"]
)
"""the ``candidates`` columns, in order"""
STATE_ENTRIES: tuple[str, ...] = (
    "round_fraction", "picks_left", "budget_used", "val_top1", "val_nll", "val_ece", "chance",
    "balance", "weight_max", "weight_min", "weight_entropy", "contribution_mean",
    "contribution_min", "contribution_max", "gap_min", "gap_max", "class_coverage",
    "label_balance", "mean_fused_margin", "mean_efda_uncertainty", "loss_slope", "log_grad_norm",
)
"""the ``state`` entries, in order"""
COVERAGE_COLUMN = CANDIDATE_COLUMNS.index("coverage") - len(CANDIDATE_COLUMNS)
PICKED_COLUMN = CANDIDATE_COLUMNS.index("picked") - len(CANDIDATE_COLUMNS)


def candidate_columns(modalities: tuple[str, ...] = ()) -> list[str]:
    """Names of the ``candidates`` observation columns, in order (the same for any modalities)."""
    return list(CANDIDATE_COLUMNS)


def state_entries(modalities: tuple[str, ...] = ()) -> list[str]:
    """Names of the ``state`` observation entries, in order (the same for any modalities)."""
    return list(STATE_ENTRIES)


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


def percentile_rank(x: torch.Tensor) -> torch.Tensor:
    """Rank of each entry among all of ``x`` scaled to [0, 1] (ties by position); 0 for one entry."""
    n = x.shape[0]
    ranks = torch.empty(n, dtype=torch.float32, device=x.device)
    ranks[torch.sort(x, stable=True).indices] = torch.arange(n, dtype=torch.float32, device=x.device)
    return ranks / max(n - 1, 1)


def _pairwise_mean(values: list[torch.Tensor], n: int, device) -> torch.Tensor:
    return torch.stack(values).mean(0) if values else torch.zeros(n, device=device)


def candidate_features(positions: torch.Tensor, flags: torch.Tensor, pool_alphas: torch.Tensor,
                       fused_alpha: torch.Tensor, fused_gap: torch.Tensor, weights: torch.Tensor, score: torch.Tensor,
                       centre_distance: torch.Tensor, labeled_distance: torch.Tensor) -> torch.Tensor:
    """``(c, len(CANDIDATE_COLUMNS))`` layout-v2 columns of the pool ``positions``, with
    ``coverage`` and ``picked`` 0 (the env fills them as picks are made).

    Args:
        positions: candidate positions in the pool (c,). flags: proposer flags (c, len(PROPOSERS)).
        pool_alphas: per-modality Dirichlet parameters of the pool (M, n, K).
        fused_alpha: fused parameters (n, K). fused_gap: top-two gap of its prediction (n,).
        weights: AMCB weights (M,). score: q (n,).
        centre_distance, labeled_distance: per pool row (n,).
    """
    fused_p = expected_probs(fused_alpha.float())
    fused_margin_all = 1.0 - fused_gap
    k = fused_alpha.shape[-1]
    a = pool_alphas[:, positions].float()  # (M, c, K)
    p = expected_probs(a)
    belief, vacuity = opinion(a)
    per = {"uncertainty": vacuity, "margin": 1.0 - top2_margin(p), "belief": belief.max(-1).values}
    pooled = [f(per[q], 0) for q in ("uncertainty", "margin", "belief")
              for f in (lambda t, d: t.mean(d), lambda t, d: t.min(d).values, lambda t, d: t.max(d).values)]
    strong, weak = int(torch.argmax(weights)), int(torch.argmin(weights))
    named = [per[q][m] for m in (strong, weak) for q in ("uncertainty", "margin", "belief")]
    c, m_count = positions.shape[0], a.shape[0]
    conflicts, disagreements = [], []
    for i in range(m_count):
        for j in range(i + 1, m_count):
            conflicts.append(ds_conflict(a[i], a[j]))
            disagreements.append(0.5 * (p[i] - p[j]).abs().sum(-1))
    fp = fused_p[positions]
    entropy = -(fp * fp.clamp_min(1e-12).log()).sum(-1) / math.log(k)
    cols = (
        [fused_margin_all[positions], entropy, fused_uncertainty(fused_alpha[positions].float())]
        + pooled + named
        + [_pairwise_mean(conflicts, c, a.device), _pairwise_mean(disagreements, c, a.device),
           percentile_rank(fused_margin_all)[positions], percentile_rank(labeled_distance)[positions],
           percentile_rank(-centre_distance)[positions], percentile_rank(score)[positions]]
    )
    out = torch.cat([torch.stack(cols, 1), flags.to(a.device, torch.float32),
                     torch.zeros(c, 2, device=a.device)], 1)
    return out.clamp(0.0, 1.0)


def round_state(val_top1: float, val_nll: float, val_ece: float, balance: float,
                weights: torch.Tensor, contributions: torch.Tensor, gaps: torch.Tensor,
                labeled_labels: torch.Tensor, n_classes: int, labeled: int, pool: int,
                fused_alpha: torch.Tensor, fused_gap: torch.Tensor, loss_slope: float, grad_norm: float,
                clip: float = STATE_CLIP) -> torch.Tensor:
    """The layout-v2 state (:data:`STATE_ENTRIES`) with ``round_fraction`` and ``picks_left`` 0
    (the env fills them per step)."""
    w = weights.float().cpu()
    m = w.shape[0]
    w_entropy = float(-(w.clamp_min(1e-12) * w.clamp_min(1e-12).log()).sum() / math.log(m)) if m > 1 else 1.0
    counts = torch.bincount(labeled_labels.cpu().long(), minlength=n_classes).float()
    share = counts / counts.sum().clamp_min(1)
    label_balance = float(-(share[share > 0] * share[share > 0].log()).sum() / math.log(n_classes)) if n_classes > 1 else 1.0
    contrib, gaps = contributions.float().cpu(), gaps.float().cpu()
    fused_margin = 1.0 - fused_gap
    pool_left = fused_alpha.shape[0] > 0
    values = [
        0.0, 0.0, labeled / max(pool, 1), val_top1, val_nll / math.log(n_classes), val_ece,
        1.0 / n_classes, balance, float(w.max()), float(w.min()), w_entropy,
        float(contrib.mean()), float(contrib.min()), float(contrib.max()),
        float(gaps.min()), float(gaps.max()), float((counts > 0).float().mean()), label_balance,
        # an empty pool (a protocol that labeled all of it) has no mean: 0
        float(fused_margin.mean()) if pool_left else 0.0,
        float(fused_uncertainty(fused_alpha.float()).mean()) if pool_left else 0.0,
        loss_slope, math.log1p(grad_norm),
    ]
    return torch.tensor(values, dtype=torch.float32).clamp(-clip, clip)


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
        # padded with -1 to K entries, so that vector envs can stack it
        "candidate_rows": np.concatenate([view.rows, np.full(action_mask.shape[0] - view.rows.shape[0], -1,
                                                             view.rows.dtype)]),
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
