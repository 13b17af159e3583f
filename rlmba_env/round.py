"""What one round computes before anyone picks, RL-MBA (arXiv 2603.25107), method steps 1-5.

:func:`evaluate_round` trains nothing: given the learner's opinions it measures the model on
``val`` and ``test``, rebalances the modality weights (AMCB), and scores the unlabeled pool
(EFDA uncertainty, k-means diversity, score q), returning everything the environment needs
for the observation, the candidate set and the reward. The observation's columns are
assembled once per round by :mod:`rlmba_env.observation`. :class:`PoolState` is what a round
hands to a selection strategy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from rlmba_env.chunked import nearest_sq
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.learner.evidential import expected_probs, fuse
from rlmba_env.learner.trainer import EvidentialLearner, FitStats
from rlmba_env.observation import candidate_features, round_state
from rlmba_env.resume import check_rows_labeled
from rlmba_env.selection.amcb import amcb_weights, fusion_subset, stacked_weights
from rlmba_env.selection.portfolio import PROPOSERS, candidate_set, proposals
from rlmba_env.selection.score import top2_margin, variant_score
from rlmba_env.selection.metrics import _top1, balance_score, ece, nll, shapley_contributions, top1

if TYPE_CHECKING:
    from rlmba_env.config import EnvConfig
    from rlmba_env.device import DeviceData


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
    """(G,) round-state entries that do not depend on picks; see
    :func:`~rlmba_env.observation.state_entries`."""
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


@dataclass
class PoolState:
    """Everything a selection strategy may use to choose rows, for the current round (what the
    env measured after training; :meth:`MultimodalALEnv.pool_state`)."""

    unlabeled: torch.Tensor
    """dataset rows of the unlabeled pool (n,), in ascending order"""
    labeled: torch.Tensor
    """dataset rows labeled so far (l,)"""
    labeled_labels: torch.Tensor
    """labels of ``labeled`` (l,)"""
    features: dict[str, torch.Tensor]
    """modality -> whole-dataset features (N, d_m) on the learner's device"""
    learner: EvidentialLearner
    """the classifier trained this round (embeddings, MC dropout, gradients)"""
    alphas: torch.Tensor
    """per-modality Dirichlet parameters of the unlabeled rows (M, n, K)"""
    fused_alpha: torch.Tensor
    """fused Dirichlet parameters of the unlabeled rows (n, K), AMCB-weighted"""
    weights: torch.Tensor
    """AMCB modality weights (M,)"""
    contributions: torch.Tensor
    """Shapley contribution of each modality to fused val top-1 (M,)"""
    score: torch.Tensor
    """RL-MBA score q of the unlabeled rows (n,)"""
    fusion: str
    """fusion method of the learner (:data:`~rlmba_env.learner.FUSION_METHODS`)"""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def device(self) -> torch.device:
        return self.unlabeled.device

    @classmethod
    def from_round(cls, r: RoundResult, labeled: torch.Tensor, data: DeviceData,
                   learner: EvidentialLearner) -> "PoolState":
        """The pool state of a scored round, ``labeled`` the rows labeled before it."""
        return cls(unlabeled=r.pool_rows, labeled=labeled, labeled_labels=data.labels[labeled],
                   features=data.features, learner=learner, alphas=r.pool_alphas, fused_alpha=r.pool_fused_alpha,
                   weights=r.weights, contributions=r.contribution_tensor, score=r.pool_score,
                   fusion=learner.config.fusion)


def check_label_rows(rows, budget: int, dataset: MultimodalDataset, labeled: np.ndarray) -> np.ndarray:
    """``rows`` chosen outside the env to close a round, as an array: ``budget`` distinct
    integer rows of the ``dataset``'s pool not yet ``labeled``, each with a known label; else one
    ValueError naming the bad row."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be a 1-D sequence of integer row indices, got {rows.dtype} {rows.shape}")
    if rows.size != budget:
        raise ValueError(f"label() needs exactly per_round={budget} rows, got {rows.size}")
    if np.unique(rows).size != rows.size:
        raise ValueError("label() got the same row more than once")
    in_pool = np.isin(rows, dataset.splits["pool"])
    if not in_pool.all():
        raise ValueError(f"row {int(rows[~in_pool][0])} is not in the dataset's pool split")
    already = labeled[rows]
    if already.any():
        raise ValueError(f"row {int(rows[already][0])} is already labeled")
    check_rows_labeled(dataset, rows)
    return rows


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
                   tau: float, epsilon: float, select: str = "stacked", tolerance: float = 0.0) -> torch.Tensor:
    """Step 2, AMCB: modality weights ``(M,)`` from the gap between each modality alone and the
    fused model (under the previous ``weights``) on ``val``; then, by ``select``
    (``EnvConfig.fusion_select``): ``"stacked"``, the geometric pool's weights fitted on ``val``
    around the AMCB weights (:func:`stacked_weights`; with another fusion rule, as
    ``"nested"``); ``"nested"``, zero outside the best nested subset of modalities on ``val``
    (:func:`fusion_subset`) and renormalised; ``"none"``, the AMCB weights as they are."""
    unimodal = torch.stack([_top1(a, val_labels) for a in val_alphas])
    w = amcb_weights(unimodal, top1(fuse(val_alphas, weights, fusion), val_labels), tau=tau, epsilon=epsilon)
    if select == "none":
        return w
    if select == "stacked" and fusion == "geometric":
        return stacked_weights(val_alphas, val_labels, w)
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
    config: EnvConfig,
    per_round: int,
    learner: EvidentialLearner,
    data: DeviceData,
    labeled_rows: torch.Tensor,
    unlabeled_rows: torch.Tensor,
    weights: torch.Tensor,
    fit: FitStats,
    generator: torch.Generator,
    alphas: torch.Tensor | None = None,
    timings: dict[str, float] | None = None,
) -> RoundResult:
    """Measure the freshly trained learner and score the unlabeled pool (steps 2-5).

    Args:
        config: the env's settings (``beta``, ``tau``, ``epsilon``, ``kmeans_iterations``,
            ``kappa``; the fusion rule is the learner's).
        per_round: the protocol's budget b; the candidate set holds
            ``config.candidate_count(b)`` rows (``config.candidates``), ranked by ``config.score``.
        data: the dataset on the device (features, diversity space, labels, val/test rows).
        labeled_rows, unlabeled_rows: this round's pool partition (dataset row indices).
        weights: the modality weights before AMCB; ``fit``: what the round's fit did.
        generator: k-means' random draws.
        alphas: the learner's opinions ``(M, N, K)`` on every dataset row when already
            computed (the batched vector env infers all its learners at once); else the
            learner is run over the rows this round needs.
        timings: when given, filled with ``infer_s``, ``cluster_s`` and ``score_s``.

    Everything up to the candidate set stays on the learner's device; the host receives the
    validation and test metrics and, once at the end, the round state.
    """
    features, diversity, labels = data.features, data.diversity, data.labels
    val_rows, test_rows = data.val_rows, data.test_rows
    budget = per_round
    modalities = tuple(features)
    fusion = learner.config.fusion
    clock = _Clock(timings, labels.device)

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
    weights = fusion_weights(val_alphas, val_labels, weights, fusion, config.tau, config.epsilon,
                             select=config.fusion_select).to(labels.device)
    val, _ = split_metrics(val_alphas, val_labels, weights, fusion, modalities)
    contrib = shapley_contributions(val_alphas, val_labels, weights, fusion)
    test, _ = split_metrics(test_alphas, labels[test_rows], weights, fusion, modalities)

    # Steps 3-5 on the unlabeled pool.
    fused_alpha = fuse(pool_alphas, weights, fusion)
    # the fused prediction's top-two gap, once: the margin proposer, the candidate columns and the state read it
    fused_gap = top2_margin(expected_probs(fused_alpha.float()))

    n_pool = unlabeled_rows.shape[0]
    if n_pool:
        x_pool = diversity.fused(weights, unlabeled_rows)
        x_labeled = diversity.fused(weights, labeled_rows)
        k = min(budget, n_pool)
        centroids, distance, assign = diversity.kmeans(x_pool, k, generator, config.kmeans_iterations)
        _, labeled_assign = diversity.nearest(x_labeled, centroids)
        cluster_labeled = torch.bincount(labeled_assign, minlength=k).to(torch.float32)
        cluster_size = torch.bincount(assign, minlength=k).to(torch.float32)
        labeled_distance = nearest_sq(x_pool, x_labeled)[0].sqrt_()
        clock("cluster_s")

        q = variant_score(config.score, pool_alphas, weights, config.beta, distance, labeled_distance)
        # The proposers' batches (drawn after k-means, so the score's draws do not depend on them)
        proposed = proposals(budget, q, fused_gap, pool_alphas, weights, x_pool, x_labeled, distance,
                             assign, generator)
        del x_pool, x_labeled
        top, flags = candidate_set(config.candidates, config.candidate_count(per_round), q, proposed)
    else:
        # A protocol may label the whole pool: after its last round nothing is left to score,
        # and the round still reports its metrics and an empty candidate set.
        q = distance = labeled_distance = torch.zeros(0, device=labels.device)
        assign = top = torch.zeros(0, dtype=torch.long, device=labels.device)
        cluster_labeled = cluster_size = torch.zeros(0, device=labels.device)
        flags = torch.zeros(0, len(PROPOSERS), device=labels.device)
        clock("cluster_s")

    cand_features = candidate_features(top, flags, pool_alphas, fused_alpha, fused_gap, weights, q, distance,
                                       labeled_distance)

    # One transfer of everything the state needs from the device.
    host = torch.cat([weights.float(), contrib.float()]).cpu()
    m_count = len(modalities)
    weights_h = host[:m_count].tolist()
    contrib_h = host[m_count:].tolist()
    balance = balance_score(host[m_count:])
    gaps = torch.tensor([val.top1_modality[m] - val.top1 for m in modalities])
    state = round_state(val.top1, val.nll, val.ece, balance, host[:m_count], host[m_count:], gaps,
                        labels[labeled_rows], pool_alphas.shape[-1], int(labeled_rows.shape[0]),
                        int(labeled_rows.shape[0] + unlabeled_rows.shape[0]), fused_alpha, fused_gap,
                        loss_slope(fit.losses), fit.grad_norm)
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
