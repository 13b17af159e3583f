"""What one round computes before anyone picks, RL-MBA (arXiv 2603.25107), method steps 1-5.

:func:`evaluate_round` trains nothing: given the learner's opinions it measures the model on
``val`` and ``test``, rebalances the modality weights (AMCB), and scores the unlabeled pool
(EFDA uncertainty, k-means diversity, score q), returning everything the environment needs
for the observation, the candidate set and the reward. The per-candidate feature columns are
computed here once per round; within a round only the ``coverage`` and ``picked`` columns
change as picks are made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rlmba_env.learner.evidential import ds_conflict, expected_probs, fuse, opinion
from rlmba_env.learner.trainer import EvidentialLearner, FitStats
from rlmba_env.selection.amcb import amcb_weights, fusion_subset
from rlmba_env.selection.candidates import top_candidates
from rlmba_env.selection.diversity import DiversitySpace
from rlmba_env.selection.efda import fused_uncertainty, selection_score
from rlmba_env.selection.metrics import _top1, balance_score, ece, nll, shapley_contributions, top1

STATE_CLIP = 10.0


def candidate_columns(modalities: tuple[str, ...]) -> list[str]:
    """Names of the ``candidates`` observation columns, in order."""
    cols = []
    for m in modalities:
        cols += [f"uncertainty_{m}", f"belief_{m}"]
    return cols + ["fused_uncertainty", "conflict", "disagreement", "diversity", "coverage",
                   "score", "picked"]


def state_entries(modalities: tuple[str, ...]) -> list[str]:
    """Names of the ``state`` observation entries, in order."""
    return (
        ["round_fraction", "picks_left", "val_top1", "val_nll", "val_ece", "balance"]
        + [f"gap_{m}" for m in modalities]
        + [f"weight_{m}" for m in modalities]
        + [f"contribution_{m}" for m in modalities]
        + ["mean_fused_uncertainty", "mean_diversity", "loss_slope", "log_grad_norm"]
    )


@dataclass
class SplitMetrics:
    """Fused and per-modality quality of the model on one split."""

    top1: float
    top1_modality: dict[str, float]
    nll: float
    ece: float


@dataclass
class RoundResult:
    """Everything measured and scored in one round."""

    weights: torch.Tensor
    """AMCB modality weights (M,)."""
    val: SplitMetrics
    test: SplitMetrics
    contributions: dict[str, float]
    """Shapley contribution of each modality to fused val top-1."""
    balance: float
    candidates: torch.Tensor
    """Dataset row indices of the candidate set, best score first (<= K rows)."""
    candidate_features: torch.Tensor
    """(n_candidates, F) observation columns, ``coverage`` and ``picked`` at round start."""
    candidate_cluster: torch.Tensor
    """k-means cluster of each candidate, for the coverage column."""
    cluster_labeled: torch.Tensor
    """Labeled rows nearest to each cluster centre (k,)."""
    cluster_size: torch.Tensor
    """Unlabeled rows in each cluster (k,)."""
    state: torch.Tensor
    """(G,) round-state entries that do not depend on picks; see :func:`state_entries`."""
    contribution_tensor: torch.Tensor
    """Shapley contributions as a tensor (M,)."""
    pool_rows: torch.Tensor
    """Dataset rows of the unlabeled pool this round (n,)."""
    pool_alphas: torch.Tensor
    """Per-modality Dirichlet parameters of the unlabeled pool (M, n, K)."""
    pool_fused_alpha: torch.Tensor
    """Fused Dirichlet parameters of the unlabeled pool (n, K)."""
    pool_score: torch.Tensor
    """Score q of every unlabeled pool row (n,)."""
    weights_list: list[float] = field(default_factory=list)
    """``weights`` on the host."""


def split_metrics(alphas: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, fusion: str,
                  modalities: tuple[str, ...]) -> tuple[SplitMetrics, torch.Tensor]:
    fused = fuse(alphas, weights, fusion)
    metrics = SplitMetrics(
        top1=top1(fused, labels),
        top1_modality={m: top1(a, labels) for m, a in zip(modalities, alphas)},
        nll=nll(fused, labels),
        ece=ece(fused, labels),
    )
    return metrics, fused


def loss_slope(losses: list[float], window: int = 10) -> float:
    """Relative change of the training loss over its last ``window`` epochs (negative = still falling)."""
    if len(losses) < 2:
        return 0.0
    w = min(window, len(losses) - 1)
    before, after = losses[-1 - w], losses[-1]
    return (after - before) / max(abs(before), 1e-8)


def fusion_weights(val_alphas: torch.Tensor, val_labels: torch.Tensor, weights: torch.Tensor, fusion: str,
                   tau: float, epsilon: float, select: bool = True, tolerance: float = 0.0) -> torch.Tensor:
    """Step 2, AMCB: modality weights ``(M,)`` from the gap between each modality alone and the
    fused model (under the previous ``weights``) on ``val``; with ``select``, zero outside the
    best nested subset of modalities on ``val`` (:func:`fusion_subset`) and renormalised."""
    unimodal = torch.stack([_top1(a, val_labels) for a in val_alphas])
    w = amcb_weights(unimodal, top1(fuse(val_alphas, weights, fusion), val_labels), tau=tau, epsilon=epsilon)
    if not select:
        return w
    w = w * fusion_subset(val_alphas, val_labels, w, fusion, tolerance)
    return w / w.sum()


class _Clock:
    """Wall time of the phases of a round into ``timings`` (when given), synchronising the
    device at each mark so that queued GPU work is charged to the phase that queued it. With
    ``timings`` None it does nothing: no synchronisation in the hot path."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device):
        self.timings, self.device = timings, device
        self.last = time.perf_counter() if timings is not None else 0.0

    def __call__(self, phase: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[phase] = now - self.last
        self.last = now


def evaluate_round(
    learner: EvidentialLearner,
    features: dict[str, torch.Tensor],
    diversity: DiversitySpace | dict[str, torch.Tensor],
    labels: torch.Tensor,
    val_rows: torch.Tensor,
    test_rows: torch.Tensor,
    unlabeled_rows: torch.Tensor,
    labeled_rows: torch.Tensor,
    weights: torch.Tensor,
    fit: FitStats,
    budget: int,
    n_candidates: int,
    beta: float,
    tau: float,
    epsilon: float,
    kmeans_iterations: int,
    generator: torch.Generator,
    alphas: torch.Tensor | None = None,
    timings: dict[str, float] | None = None,
    fusion_subset: bool = True,
) -> RoundResult:
    """Measure the freshly trained learner and score the unlabeled pool (steps 2-5).

    Args:
        diversity: the env's :class:`~rlmba_env.selection.diversity.DiversitySpace` (a dict of
            standardised features means the exact space).
        alphas: the learner's opinions ``(M, N, K)`` on every dataset row when already
            computed (the batched vector env infers all its learners at once); else the
            learner is run over the rows this round needs.
        timings: when given, filled with ``infer_s``, ``cluster_s`` and ``score_s``.
        fusion_subset: drop from the fused opinion the modalities outside the best nested
            subset on ``val`` (weight 0, :func:`~rlmba_env.selection.amcb.fusion_subset`).

    Everything up to the candidate set stays on the learner's device; the host receives the
    validation and test metrics and, once at the end, the round state.
    """
    modalities = tuple(features)
    fusion = learner.config.fusion
    clock = _Clock(timings, labels.device)
    if isinstance(diversity, dict):
        diversity = DiversitySpace(diversity, scalable=False)

    # Opinions of the rows this round needs, in large contiguous chunks when they are most of
    # the dataset (no gathered copy of the features), else by row.
    if alphas is None:
        n_rows = labels.shape[0]
        needed = val_rows.shape[0] + test_rows.shape[0] + unlabeled_rows.shape[0]
        if needed * 2 >= n_rows:
            alphas = learner.predict(features)  # every row, (M, N, K)
        else:
            val_alphas = learner.predict(features, val_rows)
            test_alphas = learner.predict(features, test_rows)
            pool_alphas = learner.predict(features, unlabeled_rows)
    if alphas is not None:
        val_alphas, test_alphas, pool_alphas = alphas[:, val_rows], alphas[:, test_rows], alphas[:, unlabeled_rows]
    clock("infer_s")

    val_labels = labels[val_rows]
    weights = fusion_weights(val_alphas, val_labels, weights, fusion, tau, epsilon,
                             select=fusion_subset).to(labels.device)
    val, _ = split_metrics(val_alphas, val_labels, weights, fusion, modalities)
    contrib = shapley_contributions(val_alphas, val_labels, weights, fusion)
    test, _ = split_metrics(test_alphas, labels[test_rows], weights, fusion, modalities)

    # Steps 3-5 on the unlabeled pool.
    fused_alpha = fuse(pool_alphas, weights, fusion)
    uncertainty = pool_alphas.shape[-1] / pool_alphas.sum(-1)  # u_m = K / S_m, (M, n)
    U = fused_uncertainty(fused_alpha)

    x_pool = diversity.fused(weights, unlabeled_rows)
    k = min(budget, x_pool.shape[0])
    centroids, distance, assign = diversity.kmeans(x_pool, k, generator, kmeans_iterations)
    del x_pool
    _, labeled_assign = diversity.nearest(diversity.fused(weights, labeled_rows), centroids)
    cluster_labeled = torch.bincount(labeled_assign, minlength=k).to(torch.float32)
    cluster_size = torch.bincount(assign, minlength=k).to(torch.float32)
    clock("cluster_s")

    q = selection_score(uncertainty, weights, distance, beta)
    top = top_candidates(q, n_candidates)

    # Per-candidate columns, computed once per round.
    top_alphas = pool_alphas[:, top]
    beliefs, _ = opinion(top_alphas)  # (M, c, K)
    probs = expected_probs(top_alphas)  # (M, c, K)
    m_count = len(modalities)
    conflict = torch.zeros(top.shape[0], device=q.device)
    disagreement = torch.zeros(top.shape[0], device=q.device)
    pairs = 0
    for i in range(m_count):
        for j in range(i + 1, m_count):
            conflict += ds_conflict(top_alphas[i], top_alphas[j])
            disagreement += 0.5 * (probs[i] - probs[j]).abs().sum(-1)
            pairs += 1
    conflict /= pairs
    disagreement /= pairs
    d_max = distance.max().clamp_min(1e-12)
    columns = []
    for m in range(m_count):
        columns += [uncertainty[m, top], beliefs[m].max(-1).values]
    columns += [
        U[top],
        conflict,
        disagreement,
        distance[top] / d_max,
        torch.zeros_like(conflict),  # coverage, filled in by the env as picks are made
        q[top] / q.max().clamp_min(1e-12),
        torch.zeros_like(conflict),  # picked flag
    ]
    cand_features = torch.stack(columns, dim=1).clamp(0.0, 1.0)

    # One transfer of everything the state needs from the device.
    host = torch.cat([weights.float(), contrib.float(), U.mean().view(1),
                      (distance / d_max).mean().view(1)]).cpu()
    weights_h = host[:m_count].tolist()
    contrib_h = host[m_count : 2 * m_count].tolist()
    mean_u, mean_d = host[2 * m_count :].tolist()
    balance = balance_score(host[m_count : 2 * m_count])
    state = torch.tensor(
        [0.0, 0.0, val.top1, val.nll, val.ece, balance]
        + [val.top1_modality[m] - val.top1 for m in modalities]
        + weights_h
        + contrib_h
        + [mean_u, mean_d, loss_slope(fit.losses),
           float(torch.log1p(torch.tensor(fit.grad_norm)))],
        dtype=torch.float32,
    ).clamp(-STATE_CLIP, STATE_CLIP)
    clock("score_s")

    return RoundResult(
        weights=weights,
        val=val,
        test=test,
        contributions=dict(zip(modalities, contrib_h)),
        balance=float(balance),
        candidates=unlabeled_rows[top],
        candidate_features=cand_features,
        candidate_cluster=assign[top],
        cluster_labeled=cluster_labeled,
        cluster_size=cluster_size,
        state=state,
        contribution_tensor=contrib,
        pool_rows=unlabeled_rows,
        pool_alphas=pool_alphas,
        pool_fused_alpha=fused_alpha,
        pool_score=q,
        weights_list=weights_h,
    )
