"""Core-set selection by k-center greedy.

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
ICLR 2018, Algorithm 1: repeatedly add the unlabeled point farthest from everything chosen so
far (labeled set included), which 2-approximates the minimax-radius cover of the pool. Points
live in the learner's embedding space: the per-modality encoder outputs, concatenated.
"""

from __future__ import annotations

import numpy as np
import torch

from rlmba_env.chunked import CHUNK_ELEMENTS
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.selection.diversity import k_center_greedy
from rlmba_env.strategies.common import check_budget, embeddings, to_rows


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
