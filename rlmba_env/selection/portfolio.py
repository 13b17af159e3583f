"""Portfolio candidate sets: the union of the batches several cheap selection rules would label.

RL-MBA (arXiv 2603.25107, step 5) lets the policy pick among the top ``kappa * b`` rows by its
score q. When q ranks badly the policy cannot recover: every candidate is a bad pick. A
portfolio instead asks each of :data:`PROPOSERS` for the ``b`` rows it would label this round
and offers their union, flagging each candidate with the proposers that proposed it, so a
policy can at least imitate whichever rule suits the dataset (and a uniform pick within the set
is a mixture of the rules).

| proposer    | its b rows                                                                     |
|-------------|--------------------------------------------------------------------------------|
| score       | highest q                                                                      |
| margin      | smallest top-two gap of the fused prediction (Scheffer et al. 2001)            |
| weak-margin | smallest top-two gap of the modality with the lowest AMCB weight               |
| kcenter     | k-center greedy from the labeled rows in the diversity space (Sener & Savarese; |
|             | over a uniform sample of :data:`KCENTER_MAX_ROWS` rows of a larger pool)        |
| cluster     | the row nearest each of the b k-means centres (the largest clusters first)     |
| random      | uniform without replacement                                                    |

All positions are positions in the round's unlabeled pool, so every candidate is unlabeled.
"""

from __future__ import annotations

import numpy as np
import torch

from rlmba_env.learner.evidential import expected_probs
from rlmba_env.selection.score import top2_margin
from rlmba_env.chunked import top_positions
from rlmba_env.selection.diversity import k_center_greedy

PROPOSERS = ("score", "margin", "weak-margin", "kcenter", "cluster", "random")
KCENTER_MAX_ROWS = 10_000
"""pool rows k-center greedy runs over; larger pools are subsampled uniformly (it costs one pass
over its rows per pick: 1,000 picks over 1e5 rows took a minute on one core)"""


def cluster_representatives(distance: torch.Tensor, assign: torch.Tensor, n: int) -> torch.Tensor:
    """For the ``n`` largest non-empty clusters (by size), the position nearest its centre."""
    k = int(assign.max()) + 1 if assign.numel() else 0
    size = torch.bincount(assign, minlength=k)
    # nearest member of each cluster: sort by (cluster, distance), first of each run
    order = torch.argsort(assign.to(torch.float64) * (distance.max().double() + 1) + distance.double())
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = assign[order][1:] != assign[order][:-1]
    nearest = order[first]  # one per non-empty cluster, clusters ascending
    clusters = assign[nearest]
    by_size = torch.sort(size[clusters], descending=True, stable=True).indices
    return nearest[by_size][:n]


def proposals(n: int, score: torch.Tensor, fused_gap: torch.Tensor, alphas: torch.Tensor,
              weights: torch.Tensor, pool_x: torch.Tensor, labeled_x: torch.Tensor,
              distance: torch.Tensor, assign: torch.Tensor,
              generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Each proposer's ``n`` pool positions (see the module docstring).

    Args:
        score: q of every pool row (P,). fused_gap: top-two gap of the fused prediction (P,)
        (``top2_margin``). alphas: per modality (M, P, K).
        weights: AMCB weights (M,). pool_x, labeled_x: fused diversity features of the pool
        and of the labeled rows. distance, assign: distance to and index of the nearest
        k-means centre of every pool row. generator: the round's generator (random proposer).
    """
    weak = int(torch.argmin(weights))
    order = torch.randperm(score.shape[0], generator=generator, device=generator.device).to(score.device)
    rand = order[:n]
    # k-center greedy costs n passes over its rows: on a large pool, over a uniform sample of it
    sample = order[:KCENTER_MAX_ROWS] if score.shape[0] > KCENTER_MAX_ROWS else None
    # k-center greedy draws only when nothing is labeled: its first centre, from the same generator
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))
    if sample is None:
        kcenter = k_center_greedy(pool_x, labeled_x, min(n, pool_x.shape[0]), rng)
    else:
        kcenter = sample[k_center_greedy(pool_x[sample], labeled_x, min(n, sample.shape[0]), rng)]
    return {
        "score": top_positions(score, n),
        "margin": top_positions(-fused_gap, n),
        "weak-margin": top_positions(-top2_margin(expected_probs(alphas[weak].float())), n),
        "kcenter": kcenter,
        "cluster": cluster_representatives(distance, assign, n),
        "random": rand.to(score.device),
    }


def _check_proposals(proposed: dict[str, torch.Tensor], names: tuple[str, ...]) -> None:
    missing = [p for p in names if p not in proposed]
    if missing:
        raise ValueError(f"no proposals from {missing}; got {sorted(proposed)}")


def membership(positions: torch.Tensor, proposed: dict[str, torch.Tensor],
               names: tuple[str, ...] = PROPOSERS) -> torch.Tensor:
    """``(c, len(names))`` flags: 1 where proposer ``names[j]`` proposed ``positions[i]``."""
    _check_proposals(proposed, names)
    return torch.stack([torch.isin(positions, proposed[p].to(positions.device)) for p in names], 1).float()


def union_with_flags(proposed: dict[str, torch.Tensor],
                     names: tuple[str, ...] = PROPOSERS) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct positions proposed by any of ``names`` (in proposer order, each proposer's
    own order kept) and their :func:`membership` flags."""
    _check_proposals(proposed, names)
    allpos = torch.cat([proposed[p].reshape(-1).long() for p in names])
    # first occurrence of each position, keeping the concatenation order
    uniq, inverse = torch.unique(allpos, return_inverse=True)
    first = torch.full((uniq.shape[0],), allpos.shape[0], dtype=torch.long, device=allpos.device)
    first.scatter_reduce_(0, inverse, torch.arange(allpos.shape[0], device=allpos.device), "amin")
    positions = allpos[torch.sort(first).values]
    return positions, membership(positions, proposed, names)


CANDIDATE_SETS = ("score", "portfolio")


def candidate_set_size(kind: str, kappa: int, per_round: int) -> int:
    """Candidates offered per round: ``kappa * b`` for ``"score"``, one batch of ``b`` per
    proposer for ``"portfolio"``."""
    if kind == "score":
        return kappa * per_round
    if kind == "portfolio":
        return len(PROPOSERS) * per_round
    raise ValueError(f"candidates={kind!r} is not allowed; candidates must be one of {list(CANDIDATE_SETS)}")


def candidate_set(kind: str, size: int, score: torch.Tensor,
                  proposed: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool positions of the round's candidates and their proposer flags: the top ``size`` by
    q (``"score"``, the paper) or the union of the proposers' batches (``"portfolio"``)."""
    if kind == "score":
        positions = top_positions(score, size)
        return positions, membership(positions, proposed)
    if kind == "portfolio":
        positions, flags = union_with_flags(proposed)
        return positions[:size], flags[:size]
    raise ValueError(f"candidates={kind!r} is not allowed; candidates must be one of {list(CANDIDATE_SETS)}")
