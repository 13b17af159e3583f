"""RL-MBA's score without the policy: the AMCB + EFDA ablation.

RL-MBA ("Label What Matters: Modality-Balanced and Difficulty-Aware Multimodal Active
Learning", arXiv 2603.25107, method step 5) scores every unlabeled row by
``q(x) = sum_m w_m minmax(u_m(x)) + beta minmax(d(x))`` (AMCB-weighted evidential uncertainty
plus k-means diversity) and lets a learned policy pick among the top ``kappa * b``. This
strategy drops the policy and labels the top ``b`` rows by ``q`` directly.
"""

from __future__ import annotations

import numpy as np

from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.chunked import top_positions
from rlmba_env.strategies.common import check_budget, to_rows


class RLMBAScoreStrategy(Strategy):
    """Top-``budget`` rows by the RL-MBA score ``q`` (``state.score``), no policy (arXiv 2603.25107)."""

    name = "rlmba-score"

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        return to_rows(state, top_positions(state.score, budget))
