"""Evaluation metrics of a round: top-1, NLL, ECE, Shapley modality contributions, balance.

The contributions are the exact Shapley values of the modalities in the cooperative game
"top-1 of the fused opinion of a subset of modalities" (RL-MBA, arXiv 2603.25107, the balance
term of the reward; the same construction as BMMAL's Shapley-based modality contributions). A
modality outside the coalition is replaced by the vacuous opinion ``alpha = 1`` (``u = 1``, no
evidence), which both fusion rules treat as absent; the empty coalition scores chance, ``1/K``.
Calibration follows Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (ECE with
equal-width confidence bins). Inputs are Dirichlet parameters from
:mod:`rlmba_env.learner.evidential`; all computation stays on the inputs' device, and each
function returns to the host once.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from rlmba_env.learner.evidential import expected_probs, fuse


def _labels_like(labels, alpha: Tensor) -> Tensor:
    return torch.as_tensor(labels, dtype=torch.long).to(alpha.device)


def _top1(alpha: Tensor, labels: Tensor) -> Tensor:
    return (alpha.argmax(-1) == labels).to(alpha.dtype).mean()


def top1(alpha: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of the opinions ``alpha`` ``(N, K)``."""
    return float(_top1(alpha, _labels_like(labels, alpha)))


def nll(alpha: Tensor, labels: Tensor) -> float:
    """Mean negative log expected probability of the true class, ``-log(alpha_y / S)``."""
    y = _labels_like(labels, alpha)
    log_p = alpha.gather(-1, y.unsqueeze(-1)).squeeze(-1).log() - alpha.sum(-1).log()
    return float(-log_p.mean())


def ece(alpha: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins of confidence = max expected prob."""
    y = _labels_like(labels, alpha)
    conf, pred = expected_probs(alpha).max(-1)
    correct = (pred == y).to(conf.dtype)
    # bins are (lo, hi]; confidence is > 1/K > 0, so bin 0 is never left open at 0
    edges = torch.linspace(0.0, 1.0, n_bins + 1, device=alpha.device, dtype=conf.dtype)[1:-1]
    bins = torch.bucketize(conf, edges, right=False)
    count = torch.zeros(n_bins, device=alpha.device, dtype=conf.dtype).index_add_(0, bins, torch.ones_like(conf))
    conf_sum = torch.zeros_like(count).index_add_(0, bins, conf)
    acc_sum = torch.zeros_like(count).index_add_(0, bins, correct)
    # sum_b n_b/N |acc_b - conf_b| == sum_b |acc_sum_b - conf_sum_b| / N
    return float((acc_sum - conf_sum).abs().sum() / conf.shape[0])


def shapley_contributions(alphas: Tensor, labels: Tensor, weights: Tensor, fusion: str) -> Tensor:
    """Exact Shapley value of each modality for fused top-1, shape ``(M,)``; sums to ``v(all) - 1/K``.

    ``v(S)`` is the top-1 of ``fuse`` applied to all ``M`` opinions with those outside ``S``
    made vacuous (same weights throughout, so only the coalition changes), and
    ``v(empty) = 1/K``. Costs ``2^M`` fusions, which is a handful for the 2-3 modalities of
    audio-visual and image-text data.
    """
    n_mod, _, k = alphas.shape
    y = _labels_like(labels, alphas)
    subsets = list(itertools.product((False, True), repeat=n_mod))
    masks = torch.tensor(subsets, device=alphas.device).view(len(subsets), n_mod, 1, 1)
    vacuous = torch.ones_like(alphas)
    values = torch.stack(
        [
            _top1(fuse(torch.where(masks[i], alphas, vacuous), weights, fusion), y)
            if any(subset)
            # all-vacuous fusion ties every class; score the empty coalition as chance instead
            else alphas.new_tensor(1.0 / k)
            for i, subset in enumerate(subsets)
        ]
    )
    # phi_m = sum_{S not containing m} |S|! (M-|S|-1)! / M! * (v(S + m) - v(S)), as one
    # (M, 2^M) coefficient matrix built on the host (constants) and applied on the device.
    coef = torch.zeros(n_mod, len(subsets), dtype=torch.float64)
    position = {s: i for i, s in enumerate(subsets)}
    for m in range(n_mod):
        for subset in subsets:
            if subset[m]:
                continue
            size = sum(subset)
            w = math.factorial(size) * math.factorial(n_mod - size - 1) / math.factorial(n_mod)
            with_m = subset[:m] + (True,) + subset[m + 1 :]
            coef[m, position[with_m]] += w
            coef[m, position[subset]] -= w
    return coef.to(alphas.device, values.dtype) @ values


def balance_score(contributions: Tensor) -> float:
    """Balance of modality contributions in ``[0, 1]``: ``1 - (max p - min p)`` of the clipped shares.

    Negative contributions (a modality that hurts) count as zero; 1 means equal shares, 0 means
    one modality carries everything. Returns 0.0 when no modality contributes.
    """
    c = torch.as_tensor(contributions).clamp_min(0.0)
    total = c.sum()
    if float(total) <= 0.0:
        return 0.0
    p = c / total
    return float(1.0 - (p.max() - p.min()))
