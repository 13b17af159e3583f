"""Stochastic batch acquisition: sample the batch by score rank instead of taking the top b.

Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, "Stochastic Batch Acquisition:
A Simple Baseline for Deep Active Learning" (TMLR 2023): taking the top ``b`` rows of a
one-row score labels near-duplicates and outliers together; sampling ``b`` rows without
replacement with probability ``p_i ~ rank_i ** -beta`` (softrank; rank 1 is the highest score)
keeps most of the score's picks and spreads the rest over the pool. ``beta = 1`` is the paper's
default; ``beta -> inf`` is top-``b`` selection and ``beta = 0`` uniform sampling.

The sample is the Gumbel-top-k trick (Kool, van Hoof & Welling, ICML 2019): the ``b`` largest
``log p_i + G_i`` with ``G_i`` i.i.d. standard Gumbel draws from the strategy's generator.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch

from rlmba_env.checks import check_real
from rlmba_env.chunked import top_positions
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.common import check_budget, to_rows
from rlmba_env.strategies.uncertainty import MarginStrategy

SOFTRANK_BETA = 1.0
"""softrank's default exponent ``beta`` (Kirsch et al. 2023's default; not tuned here)"""


def softrank_positions(scores: torch.Tensor, k: int, beta: float, rng: np.random.Generator) -> torch.Tensor:
    """``k`` distinct positions sampled without replacement with probability ``~ rank ** -beta``
    by ``scores`` (highest first, ties to the lower position, NaN last)."""
    n = int(scores.shape[0])
    order = top_positions(scores, n).cpu()
    rank = torch.empty(n, dtype=torch.float64)
    rank[order] = torch.arange(1, n + 1, dtype=torch.float64)
    keys = -beta * torch.log(rank) + torch.from_numpy(rng.gumbel(size=n))
    return top_positions(keys, k).to(scores.device)


class _Softrank(Strategy):
    """Softrank sampling of ``budget`` rows by a one-row score ``(state) -> (n,)``."""

    def __init__(self, beta: float = SOFTRANK_BETA):
        self.beta = check_real("beta", beta, 0.0)

    @abstractmethod
    def scores(self, state: PoolState) -> torch.Tensor:
        """The ranking's score of every unlabeled row (n,), higher first."""

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        return to_rows(state, softrank_positions(self.scores(state), budget, self.beta, rng))


class SoftrankMarginStrategy(_Softrank):
    """Margin sampling's ranking, sampled by softrank (Kirsch et al. 2023) instead of top-b."""

    name = "softrank-margin"

    def scores(self, state: PoolState) -> torch.Tensor:
        return MarginStrategy().pool_scores(state)


class SoftrankScoreStrategy(_Softrank):
    """The RL-MBA score q's ranking (``state.score``), sampled by softrank instead of top-b."""

    name = "softrank-score"

    def scores(self, state: PoolState) -> torch.Tensor:
        return state.score
