"""The dataset-agnostic observation (layout v2) of a round's candidates and state.

RL-MBA (arXiv 2603.25107, step 6) describes each candidate to the policy by its modalities'
uncertainties and beliefs, so the paper's observation has one column per modality: a policy
trained on two modalities cannot run on three. Layout v2 pools every per-modality quantity over
the modalities (mean, min, max) and names the strongest and weakest modality by AMCB weight,
so no column depends on the number of modalities M, the class count K or feature dimensions;
distances and scores enter as percentile ranks within the round's pool (0 = lowest, 1 =
highest), which do not depend on the feature scale either.

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
| ``proposed_<p>``                        | 1 if portfolio proposer p proposed it (``score`` only for the top-q set) |
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

import torch

from rlmba_env.learner.evidential import ds_conflict, expected_probs, opinion
from rlmba_env.selection.efda import fused_uncertainty
from rlmba_env.selection.portfolio import PROPOSERS
from rlmba_env.selection.score import top2_margin

LAYOUT = "v2"
_POOLED = [f"{q}_{s}" for q in ("uncertainty", "margin", "belief") for s in ("mean", "min", "max")]
CANDIDATE_COLUMNS: tuple[str, ...] = tuple(
    ["fused_margin", "fused_entropy", "efda_uncertainty"] + _POOLED
    + [f"{w}_{q}" for w in ("strong", "weak") for q in ("uncertainty", "margin", "belief")]
    + ["conflict", "disagreement", "margin_rank", "labeled_distance_rank", "density_rank", "score_rank"]
    + [f"proposed_{p}" for p in PROPOSERS]
    + ["coverage", "picked"]
)
STATE_ENTRIES: tuple[str, ...] = (
    "round_fraction", "picks_left", "budget_used", "val_top1", "val_nll", "val_ece", "chance",
    "balance", "weight_max", "weight_min", "weight_entropy", "contribution_mean",
    "contribution_min", "contribution_max", "gap_min", "gap_max", "class_coverage",
    "label_balance", "mean_fused_margin", "mean_efda_uncertainty", "loss_slope", "log_grad_norm",
)


def percentile_rank(x: torch.Tensor) -> torch.Tensor:
    """Rank of each entry among all of ``x`` scaled to [0, 1] (ties by position); 0 for one entry."""
    n = x.shape[0]
    ranks = torch.empty(n, dtype=torch.float32, device=x.device)
    ranks[torch.sort(x, stable=True).indices] = torch.arange(n, dtype=torch.float32, device=x.device)
    return ranks / max(n - 1, 1)


def _pairwise_mean(values: list[torch.Tensor], n: int, device) -> torch.Tensor:
    return torch.stack(values).mean(0) if values else torch.zeros(n, device=device)


def candidate_features(positions: torch.Tensor, flags: torch.Tensor, pool_alphas: torch.Tensor,
                       fused_alpha: torch.Tensor, weights: torch.Tensor, score: torch.Tensor,
                       centre_distance: torch.Tensor, labeled_distance: torch.Tensor) -> torch.Tensor:
    """``(c, len(CANDIDATE_COLUMNS))`` layout-v2 columns of the pool ``positions``, with
    ``coverage`` and ``picked`` 0 (the env fills them as picks are made).

    Args:
        positions: candidate positions in the pool (c,). flags: proposer flags (c, len(PROPOSERS)).
        pool_alphas: per-modality Dirichlet parameters of the pool (M, n, K).
        fused_alpha: fused parameters (n, K). weights: AMCB weights (M,). score: q (n,).
        centre_distance, labeled_distance: per pool row (n,).
    """
    fused_p = expected_probs(fused_alpha.float())
    fused_margin_all = 1.0 - top2_margin(fused_p)
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
                fused_alpha: torch.Tensor, loss_slope: float, grad_norm: float,
                clip: float = 10.0) -> torch.Tensor:
    """The layout-v2 state (:data:`STATE_ENTRIES`) with ``round_fraction`` and ``picks_left`` 0
    (the env fills them per step)."""
    w = weights.float().cpu()
    m = w.shape[0]
    w_entropy = float(-(w.clamp_min(1e-12) * w.clamp_min(1e-12).log()).sum() / math.log(m)) if m > 1 else 1.0
    counts = torch.bincount(labeled_labels.cpu().long(), minlength=n_classes).float()
    share = counts / counts.sum().clamp_min(1)
    label_balance = float(-(share[share > 0] * share[share > 0].log()).sum() / math.log(n_classes)) if n_classes > 1 else 1.0
    contrib, gaps = contributions.float().cpu(), gaps.float().cpu()
    fused_margin = 1.0 - top2_margin(expected_probs(fused_alpha.float()))
    values = [
        0.0, 0.0, labeled / max(pool, 1), val_top1, val_nll / math.log(n_classes), val_ece,
        1.0 / n_classes, balance, float(w.max()), float(w.min()), w_entropy,
        float(contrib.mean()), float(contrib.min()), float(contrib.max()),
        float(gaps.min()), float(gaps.max()), float((counts > 0).float().mean()), label_balance,
        float(fused_margin.mean()), float(fused_uncertainty(fused_alpha.float()).mean()),
        loss_slope, math.log1p(grad_norm),
    ]
    return torch.tensor(values, dtype=torch.float32).clamp(-clip, clip)
