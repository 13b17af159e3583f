"""Evidential Fusion for Difficulty-Aware scoring (EFDA), RL-MBA (arXiv 2603.25107), steps 4-5.

The fused Dirichlet alpha_f = 1 + sum_m w_m (alpha_m - 1) carries the difficulty of a sample:
U(x) = mean_c Var[p_c] under Dir(alpha_f) is large where evidence is scarce or spread. The
selection score mixes each modality's evidential uncertainty u_m = K / S_m, weighted by the
AMCB weights, with the diversity term d(x):

    q(x) = sum_m w_m * minmax(u_m(x)) + beta * minmax(d(x))
"""

from __future__ import annotations

import torch

from rlmba_env.learner.evidential import dirichlet_mean_variance


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Rescale to [0, 1] over the pool; a constant vector maps to zeros."""
    lo, hi = x.min(), x.max()
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def max_dirichlet_variance(n_classes: int) -> float:
    """U of the vacuous opinion Dir(1, ..., 1): the largest value EFDA's U can take."""
    k = float(n_classes)
    return (1.0 / k) * (1.0 - 1.0 / k) / (k + 1.0)


def fused_uncertainty(alpha_fused: torch.Tensor) -> torch.Tensor:
    """EFDA's U(x), normalised by its maximum so it lies in [0, 1] for any class count."""
    return dirichlet_mean_variance(alpha_fused) / max_dirichlet_variance(alpha_fused.shape[-1])


def selection_score(
    modality_uncertainty: torch.Tensor, weights: torch.Tensor, distance: torch.Tensor, beta: float
) -> torch.Tensor:
    """q(x) for every pool row.

    Args:
        modality_uncertainty: u_m(x) = K / S_m, shape (M, N).
        weights: AMCB weights, shape (M,).
        distance: d(x), distance to the nearest k-means centroid, shape (N,).
        beta: weight of the diversity term.
    """
    u = torch.stack([minmax(u_m) for u_m in modality_uncertainty])
    return (weights[:, None] * u).sum(0) + beta * minmax(distance)
