"""BALD with Monte-Carlo dropout.

Bayesian Active Learning by Disagreement (Houlsby, Huszar, Ghahramani & Lengyel, "Bayesian
Active Learning for Classification and Preference Learning", 2011, eq. 2) scores a row by the
mutual information between its label and the model parameters,

    I(y; w | x) = H(E_w[p(y | x, w)]) - E_w[H(p(y | x, w))],

estimated with T stochastic forward passes with dropout on (Gal, Islam & Ghahramani, "Deep
Bayesian Active Learning with Image Data", ICML 2017, eq. 6). Here ``p`` is the expected
probability of the *fused* opinion of each pass (per-modality heads fused with the round's AMCB
weights and fusion rule), so disagreement between dropout masks in any modality counts as it
moves the fused prediction.
"""

from __future__ import annotations

import numpy as np
import torch

from rlmba_env.chunked import CHUNK_ROWS, top_positions
from rlmba_env.learner.evidential import expected_probs, fuse
from rlmba_env.seeding import forked_torch_rng
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.common import check_budget, draw_seed, entropy, gather_features, module_mode, to_rows


@torch.no_grad()
def bald_scores(state: PoolState, mc_samples: int, seed: int, batch_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Mutual information (nats) of every unlabeled row, ``(n,)``, from ``mc_samples`` dropout passes.

    The T passes of a chunk of rows run as one batch of ``T * rows`` inputs; the dropout masks
    come from torch's RNG seeded with ``seed`` inside a fork (the global RNG is left untouched).
    """
    net = state.learner.net
    rows = state.unlabeled
    n = rows.shape[0]
    chunk = max(1, batch_rows // mc_samples)
    scores = torch.empty(n, device=rows.device)
    with forked_torch_rng(rows.device, seed), module_mode(net, True):
        for lo in range(0, n, chunk):
            x = gather_features(state, rows[lo : lo + chunk])
            c = next(iter(x.values())).shape[0]
            # pass t of row i sits at t * c + i
            alphas = net({m: v.repeat(mc_samples, 1) for m, v in x.items()})
            fused = fuse(alphas, state.weights, state.fusion)
            p = expected_probs(fused).view(mc_samples, c, -1)
            scores[lo : lo + c] = entropy(p.mean(0)) - entropy(p).mean(0)
    return scores


class BALDStrategy(Strategy):
    """BALD (Houlsby et al. 2011) with MC dropout (Gal et al. 2017) on the fused prediction.

    Args:
        mc_samples: stochastic forward passes T.
        batch_rows: inputs per forward pass (``batch_rows // T`` pool rows at a time).

    Needs ``LearnerConfig.dropout > 0``; with no dropout every pass is identical and every
    score is 0 (the picks are then the lowest pool positions).
    """

    name = "bald"

    def __init__(self, mc_samples: int = 10, batch_rows: int = CHUNK_ROWS):
        if mc_samples < 2:
            raise ValueError(f"BALD needs at least 2 MC-dropout passes, got mc_samples={mc_samples}")
        self.mc_samples = int(mc_samples)
        self.batch_rows = int(batch_rows)

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        scores = bald_scores(state, self.mc_samples, draw_seed(rng), self.batch_rows)
        return to_rows(state, top_positions(scores, budget))
