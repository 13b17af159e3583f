"""Core-set selection by k-center greedy.

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
ICLR 2018, Algorithm 1: repeatedly add the unlabeled point farthest from everything chosen so
far (labeled set included), which 2-approximates the minimax-radius cover of the pool. Points
live in the learner's embedding space: the per-modality encoder outputs, concatenated.
"""

from __future__ import annotations

import numpy as np
import torch

from rlmba_env.chunked import CHUNK_ELEMENTS, nearest_sq
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.common import check_budget, embeddings, to_rows


def k_center_greedy(pool: torch.Tensor, labeled: torch.Tensor, budget: int,
                    rng: np.random.Generator, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Positions of ``budget`` rows of ``pool`` chosen by k-center greedy from the ``labeled`` centres.

    Distances to the labeled set are computed in chunks; each greedy step then costs one pass
    over the pool. With no labeled rows the first centre is drawn uniformly with ``rng``.
    """
    n = pool.shape[0]
    d2 = nearest_sq(pool, labeled, chunk_elements)[0]
    chosen = []
    if labeled.shape[0] == 0:
        first = torch.tensor([int(rng.integers(n))], device=pool.device)
        chosen.append(first)
        d2 = nearest_sq(pool, pool[first], chunk_elements)[0]
        d2[first] = float("-inf")
    for _ in range(budget - len(chosen)):
        # argmax returns the first maximum, on every device
        nxt = d2.argmax().view(1)
        chosen.append(nxt)
        d2 = torch.minimum(d2, ((pool - pool[nxt]) ** 2).sum(1))
        # a chosen row must never come back, even when the remaining rows coincide with centres
        d2[nxt] = float("-inf")
    return torch.cat(chosen)


class CoresetStrategy(Strategy):
    """Core-set (Sener & Savarese, ICLR 2018): k-center greedy on the concatenated embeddings.

    Args:
        chunk_elements: largest block of the unlabeled-by-labeled distance matrix held at once.
    """

    name = "coreset"

    def __init__(self, chunk_elements: int = CHUNK_ELEMENTS):
        self.chunk_elements = int(chunk_elements)

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        net = state.learner.net
        pool = torch.cat(embeddings(net, state, state.unlabeled), dim=1)
        labeled = torch.cat(embeddings(net, state, state.labeled), dim=1)
        return to_rows(state, k_center_greedy(pool, labeled, budget, rng, self.chunk_elements))
