"""The candidate set the agent picks from, RL-MBA (arXiv 2603.25107), method step 5.

The kappa * b pool rows with the highest score q form the candidate set; the agent then
picks b of them. Ties are broken by position so the set is deterministic.
"""

from __future__ import annotations

import torch


def top_candidates(score: torch.Tensor, size: int) -> torch.Tensor:
    """Positions of the ``size`` highest scores, best first (stable under ties)."""
    order = torch.sort(score, descending=True, stable=True).indices
    return order[: min(size, score.shape[0])]
