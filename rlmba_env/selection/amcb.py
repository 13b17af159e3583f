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

from rlmba_env.learner.evidential import fuse

FUSION_SELECTS = ("stacked", "nested", "none")
"""how a round chooses the fused opinion's weights on ``val`` after AMCB (``EnvConfig.fusion_select``)"""


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


def fusion_subset(val_alphas: torch.Tensor, val_labels: torch.Tensor, weights: torch.Tensor, fusion: str,
                  tolerance: float = 0.0) -> torch.Tensor:
    """The modalities the fused opinion keeps, a boolean mask ``(M,)``: the best nested subset on ``val``.

    Candidates are the ``M`` nested subsets of the modalities ordered by their own validation
    top-1 (best first; equal top-1 keeps the modality order): the best modality alone, the best
    two, ..., all of them. Each is fused with ``weights`` restricted to it, and the subset whose
    fused validation top-1 is highest wins; a larger subset within ``tolerance`` of it wins over
    a smaller one (ties go to the larger subset, since a difference of a few validation samples
    is noise). The best modality alone is a candidate, so on ``val`` fusion never trails its
    best modality; ``M`` fusions rather than ``2^M - 1`` subsets keep it cheap for many views.
    """
    n_mod = val_alphas.shape[0]
    unimodal = (val_alphas.argmax(-1) == val_labels).to(torch.float64).mean(-1)
    order = torch.argsort(-unimodal, stable=True)
    masks = torch.zeros(n_mod, n_mod, dtype=torch.bool, device=val_alphas.device)
    for k in range(n_mod):
        masks[k, order[: k + 1]] = True
    w = torch.as_tensor(weights, dtype=val_alphas.dtype, device=val_alphas.device)
    top1 = torch.stack([(fuse(val_alphas, w * mask, fusion).argmax(-1) == val_labels).to(torch.float64).mean()
                        for mask in masks])
    best = int(torch.nonzero(top1 >= top1.max() - tolerance - 1e-12).max())  # the largest near-best subset
    return masks[best]


STACKING_SHRINK = 10.0
"""prior strength of :func:`stacked_weights`: the factors' spread costs ``shrink / n_val`` per unit
of squared deviation (dev suite, seeds 5-9 of prokaryotic, msrc, movies and mnist4, weights
re-fitted on saved opinions: worst fused - best view over budgets -.019 (msrc) / -.006
(movies) / -.009 (mnist4) with shrink 0 / 10 / 30)"""


WEIGHT_GRID = 0.01
"""resolution of :func:`stacked_weights` (a weight below half of it is 0)"""


def stacked_weights(val_alphas: torch.Tensor, val_labels: torch.Tensor, weights: torch.Tensor,
                    shrink: float = STACKING_SHRINK) -> torch.Tensor:
    """Geometric-pool weights ``(M,)`` fitted on ``val``: ``weights`` times factors ``a_m >= 0``.

    The geometric pool's expected probabilities are ``softmax_k(sum_m r_m log alpha_m,k)``, a
    log-linear model of the views' log evidence, so its exponents can be fitted as a stacking
    layer (Wolpert 1992): ``a`` minimises the validation cross-entropy of
    ``softmax(sum_m a_m (M w_m / sum w) log alpha_m)`` plus ``shrink / n_val * sum_m (a_m -
    mean a)^2``, a prior that pulls the factors together (towards the AMCB weights ``w``) and
    weakens as ``val`` grows. ``a`` carries the pool's overall temperature too, which the
    returned weights ``w * a / sum(w * a)`` drop (the geometric pool uses ``w / max w``). A
    factor may reach 0: a view that does not help drops out. Unlike choosing a subset by
    validation top-1, which moves on a few validation rows, the cross-entropy uses every row's
    whole opinion; with a 4-class set whose weaker views are overconfident it keeps the best
    view's exponent and shrinks the others. Fitted by L-BFGS-B in float64 on the CPU
    (``M`` parameters, a convex objective), deterministic; the weights returned are multiples
    of :data:`WEIGHT_GRID`.
    """
    from scipy.optimize import minimize  # imported here: only rounds that fit weights need it

    w = torch.as_tensor(weights, dtype=torch.float64).cpu()
    w = w * (w.numel() / w.sum())
    logs = val_alphas.detach().to("cpu", torch.float64).log() * w[:, None, None]  # (M, n, K)
    y = val_labels.detach().to("cpu", torch.long)
    out = w  # no validation rows, or every factor fitted at 0: val says nothing, keep the AMCB weights
    if y.numel():
        coef = shrink / y.numel()

        def objective(a):
            a = torch.tensor(a, dtype=torch.float64, requires_grad=True)
            loss = torch.nn.functional.cross_entropy(torch.einsum("m,mnk->nk", a, logs), y) \
                + coef * (a - a.mean()).square().sum()
            loss.backward()
            return loss.item(), a.grad.numpy()

        n_mod = logs.shape[0]
        fit = minimize(objective, [1.0] * n_mod, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * n_mod,
                       options={"ftol": 1e-13, "gtol": 1e-9})
        fitted = w * torch.as_tensor(fit.x, dtype=torch.float64)
        if fitted.sum() > 0:
            out = fitted
    # On a grid of WEIGHT_GRID: opinions that differ in the last float bits (a learner inferred
    # alone or batched with others, predict_learners) give the same weights, so the same round.
    out = torch.round(out / out.sum() / WEIGHT_GRID)
    return (out / out.sum()).to(device=val_alphas.device, dtype=torch.as_tensor(weights).dtype)
