"""Adaptive Modality Contribution Balancing (AMCB), RL-MBA (arXiv 2603.25107), method step 2.

Delta_m = top1_m - top1_fused measures how much modality m alone beats (or trails) the fused
model on the validation split; w = softmax(Delta / tau), floored at epsilon and renormalised,
moves fusion weight towards the modality that is carrying the prediction. Because softmax is
shift-invariant, the fused term only sets the reference point: the weights follow the
unimodal accuracies, and a near-useless modality cannot drag the fused opinion below the
strong modality alone (the failure of equal-weight fusion the paper targets).
"""

from __future__ import annotations

import torch


def amcb_weights(
    unimodal_top1: torch.Tensor, fused_top1: float, tau: float = 0.1, epsilon: float = 0.05
) -> torch.Tensor:
    """Modality weights (M,) that sum to 1, each at least ``epsilon / (1 + M * epsilon)``-ish.

    Args:
        unimodal_top1: validation top-1 of each modality's own head, shape (M,).
        fused_top1: validation top-1 of the fused opinion under the current weights.
        tau: softmax temperature; smaller moves more weight to the best modality.
        epsilon: floor applied before renormalising, so no modality is switched off.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    delta = unimodal_top1.to(torch.float64) - float(fused_top1)
    w = torch.softmax(delta / tau, dim=0).clamp_min(epsilon)
    return (w / w.sum()).to(unimodal_top1.dtype)
