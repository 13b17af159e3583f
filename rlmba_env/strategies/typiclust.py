"""Typical-cluster selection for small budgets, and the switch from it to margin sampling.

TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit
High and Low Budgets", ICML 2022): cluster labeled and unlabeled rows together into
``labeled + budget`` clusters; then, ``budget`` times, take the largest cluster holding the fewest
labeled (or already chosen) rows and choose its most *typical* unlabeled row, the one with the
smallest mean distance to its nearest neighbours within the cluster. With few labels per class
this covers the data's dense regions, where uncertainty sampling picks outliers of a poor model.

The points live in a label-free space, as the paper's self-supervised embedding: every
modality's features standardised per column and scaled by ``1 / sqrt(d_m M)`` (each modality
weighs the same whatever its width), concatenated.

TCM (Doucet, Estermann, Aschenbrenner & Wattenhofer, "Bridging Diversity and Uncertainty in
Active Learning with Self-Supervised Pre-Training", ICLR 2024 workshop): TypiClust while the
budget is small, margin sampling afterwards; here the switch is at ``switch_per_class`` labels
per class, so one setting means the same on datasets with any number of classes.
"""

from __future__ import annotations

import numpy as np
import torch

from rlmba_env.chunked import CHUNK_ELEMENTS
from rlmba_env.checks import check_int, check_real
from rlmba_env.selection.diversity import DiversitySpace, coreset_kmeans, fuse_features, kmeans, standardise
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.common import check_budget, to_rows, torch_generator
from rlmba_env.strategies.uncertainty import MarginStrategy

MAX_CLUSTERS = 500
"""most clusters (the paper's implementation caps them at 500)"""
MIN_CLUSTER_SIZE = 5
"""clusters smaller than this are chosen from only when no larger one has unlabeled rows"""
NEIGHBOURS = 20
"""neighbours in the typicality estimate (the paper's K = 20), fewer in smaller clusters"""


def label_free_space(state: PoolState, rows: torch.Tensor) -> torch.Tensor:
    """Standardised features of ``rows``, every modality weighing ``1 / M`` (see the module docstring)."""
    blocks = {m: standardise(state.features[m][rows]) for m in state.modalities}
    return fuse_features(blocks, torch.full((len(blocks),), 1.0 / len(blocks), device=rows.device))


def typicality(x: torch.Tensor, neighbours: int = NEIGHBOURS, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``1 / mean distance to the nearest neighbours`` of every row of ``x`` among the others,
    from blocks of at most ``chunk_elements`` distances.

    With a single row its typicality is 0 (it has no neighbours to be typical of).
    """
    n = x.shape[0]
    k = min(neighbours, n - 1)
    if k < 1:
        return torch.zeros(n, dtype=x.dtype, device=x.device)
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    chunk = max(1, chunk_elements // n)
    for lo in range(0, n, chunk):
        d = torch.cdist(x[lo : lo + chunk], x)
        # the row itself is its own nearest neighbour at distance 0: take k + 1, drop it
        nearest = d.topk(k + 1, dim=1, largest=False).values[:, 1:]
        out[lo : lo + chunk] = 1.0 / nearest.mean(1).clamp_min(1e-12)
    return out


def typiclust_positions(x: torch.Tensor, is_labeled: torch.Tensor, budget: int,
                        generator: torch.Generator, max_clusters: int = MAX_CLUSTERS) -> torch.Tensor:
    """Positions (rows of ``x`` with ``is_labeled`` False) of ``budget`` TypiClust picks.

    Args:
        x: label-free points of the labeled and unlabeled rows (n, D).
        is_labeled: which rows of ``x`` are labeled (n,).
        budget: picks, at most the unlabeled rows.
        generator: seeds the k-means.
        max_clusters: cap on the clusters (``labeled + budget`` otherwise).
    """
    n = x.shape[0]
    k = min(int(is_labeled.sum()) + budget, max_clusters, n)
    if DiversitySpace.is_exact(n, k):
        _, _, assign = kmeans(x, k, generator)
    else:
        _, _, assign = coreset_kmeans(x, k, generator)
    sizes = torch.bincount(assign, minlength=k)
    covered = torch.bincount(assign[is_labeled], minlength=k)
    typical = torch.zeros(n, dtype=x.dtype, device=x.device)
    for c in torch.unique(assign).tolist():
        members = torch.nonzero(assign == c).squeeze(1)
        typical[members] = typicality(x[members])
    free = ~is_labeled
    free_count = torch.bincount(assign[free], minlength=k)
    chosen = []
    for _ in range(budget):
        open_clusters = free_count > 0
        eligible = open_clusters & (sizes >= MIN_CLUSTER_SIZE)
        if not bool(eligible.any()):
            eligible = open_clusters
        # fewest labeled rows first, then the largest cluster (ties to the lower index)
        key = covered.double() * (n + 1) - sizes.double()
        key[~eligible] = float("inf")
        c = int(key.argmin())
        members = torch.nonzero((assign == c) & free).squeeze(1)
        pick = members[typical[members].argmax()]
        chosen.append(pick)
        free[pick] = False
        free_count[c] -= 1
        covered[c] += 1
    return torch.stack(chosen)


class TypiClustStrategy(Strategy):
    """TypiClust (Hacohen et al., ICML 2022): the most typical row of the largest uncovered clusters.

    Args:
        max_clusters: most k-means clusters over the labeled and unlabeled rows.
    """

    name = "typiclust"

    def __init__(self, max_clusters: int = MAX_CLUSTERS):
        self.max_clusters = check_int("max_clusters", max_clusters, low=1)

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        rows = torch.cat([state.unlabeled, state.labeled])
        is_labeled = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
        is_labeled[state.unlabeled.shape[0]:] = True
        x = label_free_space(state, rows)
        positions = typiclust_positions(x, is_labeled, budget, torch_generator(rng, x.device), self.max_clusters)
        return to_rows(state, positions)  # the unlabeled rows come first in ``rows``


class TypiClustMarginStrategy(Strategy):
    """TCM (Doucet et al. 2024): TypiClust below ``switch_per_class`` labels per class, then margin.

    Args:
        switch_per_class: labeled rows per class (labeled / K) from which margin sampling takes over.
    """

    name = "typiclust-margin"

    def __init__(self, switch_per_class: float = 4.0):
        self.switch_per_class = check_real("switch_per_class", switch_per_class, low=0.0)
        self.typiclust = TypiClustStrategy()
        self.margin = MarginStrategy()

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        classes = int(state.fused_alpha.shape[1])
        early = state.labeled.shape[0] < self.switch_per_class * classes
        return (self.typiclust if early else self.margin).select(state, budget, rng)
