"""Random sampling and the classic uncertainty-sampling strategies on the fused prediction.

Entropy, margin and least-confidence sampling (surveyed in Settles, "Active Learning Literature
Survey", 2009, section 3.1) score each unlabeled row by the expected class probabilities of its
fused Dirichlet opinion, ``p = alpha_f / S_f`` (``state.fused_alpha``: the AMCB-weighted fusion
the env measured this round), and take the ``budget`` highest scores (ties to the lower pool
position).
"""

from __future__ import annotations

import numpy as np
import torch

from rlmba_env.learner.evidential import expected_probs
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.chunked import top_positions
from rlmba_env.strategies.common import check_budget, entropy, to_rows


class RandomStrategy(Strategy):
    """Uniform sampling without replacement: the baseline every active learner must beat."""

    name = "random"

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        positions = rng.choice(int(state.unlabeled.shape[0]), size=budget, replace=False)
        return to_rows(state, positions)


class _FusedUncertainty(Strategy):
    """Top-``budget`` rows by a score of the fused expected probabilities ``(n, K) -> (n,)``."""

    def score(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool_scores(self, state: PoolState) -> torch.Tensor:
        """The score of every unlabeled row (n,) from the round's fused opinions."""
        return self.score(expected_probs(state.fused_alpha.float()))

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        return to_rows(state, top_positions(self.pool_scores(state), budget))


class EntropyStrategy(_FusedUncertainty):
    """Maximum-entropy sampling (Shannon 1948 entropy as an AL criterion; Settles 2009, eq. 3.3).

    Score: ``H(p) = -sum_k p_k log p_k`` of the fused expected probabilities.
    """

    name = "entropy"

    def score(self, p: torch.Tensor) -> torch.Tensor:
        return entropy(p)


class MarginStrategy(_FusedUncertainty):
    """Margin sampling (Scheffer, Decomain & Wrobel, "Active Hidden Markov Models for Information
    Extraction", IDA 2001): the smallest gap between the two most probable fused classes.
    """

    name = "margin"

    def score(self, p: torch.Tensor) -> torch.Tensor:
        top2 = p.topk(2, dim=-1).values
        return -(top2[:, 0] - top2[:, 1])


class LeastConfidenceStrategy(_FusedUncertainty):
    """Least-confidence sampling (Lewis & Gale, "A Sequential Algorithm for Training Text
    Classifiers", SIGIR 1994; Culotta & McCallum 2005): ``1 - max_k p_k`` of the fused prediction.
    """

    name = "least-confidence"

    def score(self, p: torch.Tensor) -> torch.Tensor:
        return 1.0 - p.max(-1).values
