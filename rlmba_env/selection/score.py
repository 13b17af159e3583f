"""Variants of the RL-MBA selection score q (arXiv 2603.25107, method step 5).

The paper scores a pool row by ``q(x) = sum_m w_m minmax(u_m(x)) + beta minmax(d(x))`` with
u_m the Dirichlet vacuity ``K / S_m`` of modality m and d the distance to the nearest k-means
centre (:func:`rlmba_env.selection.efda.selection_score`). Both terms can rank below uniform
sampling: vacuity is largest where a modality has little evidence at all (often rows far from
the labeled data that the fused model already classifies), and distance to the nearest centre
is largest for outliers, which teach a classifier little. A variant names one per-modality
uncertainty and one diversity term, ``"<uncertainty>-<diversity>"``:

| uncertainty | u_m(x)                                                                       |
|-------------|------------------------------------------------------------------------------|
| vacuity     | ``K / S_m`` (the paper)                                                       |
| margin      | ``1 - (p_m[1] - p_m[2])``, one minus the top-two gap of ``p_m = alpha_m/S_m`` |

| diversity | d(x) before min-max scaling                                                        |
|-----------|------------------------------------------------------------------------------------|
| outlier   | distance to the nearest k-means centre (the paper)                                 |
| density   | minus that distance: rows near a centre represent their cluster                   |
| labeled   | distance to the nearest labeled row (what core-set sampling maximises)             |
| none      | no diversity term                                                                  |

``"paper"`` is ``"vacuity-outlier"``. Every term is min-max scaled over the round's pool, so
q does not depend on the class count, the feature scale or the number of modalities.
"""

from __future__ import annotations

import torch

from rlmba_env.learner.evidential import expected_probs
from rlmba_env.selection.efda import minmax

UNCERTAINTIES = ("vacuity", "margin")
DIVERSITIES = ("outlier", "density", "labeled", "none")
ALIASES = {"paper": "vacuity-outlier"}
SCORE_VARIANTS: tuple[str, ...] = (*ALIASES, *(f"{u}-{d}" for u in UNCERTAINTIES for d in DIVERSITIES))
"""every accepted variant name"""


def parse_score(name: str) -> tuple[str, str]:
    """``(uncertainty, diversity)`` of a score variant name (see the module docstring)."""
    full = ALIASES.get(name, name)
    uncertainty, _, diversity = full.partition("-")
    if uncertainty not in UNCERTAINTIES or diversity not in DIVERSITIES:
        raise ValueError(f"unknown score variant {name!r}; choose one of {list(SCORE_VARIANTS)}")
    return uncertainty, diversity


def top2_margin(p: torch.Tensor) -> torch.Tensor:
    """``p[..., top1] - p[..., top2]`` over the last axis (0 = a tie, 1 = certain)."""
    top2 = p.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def modality_uncertainty(alphas: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-modality uncertainty ``(M, n)`` of Dirichlet parameters ``alphas`` ``(M, n, K)``."""
    if kind == "vacuity":
        return alphas.shape[-1] / alphas.sum(-1)
    if kind == "margin":
        return 1.0 - top2_margin(expected_probs(alphas))
    raise ValueError(f"unknown uncertainty {kind!r}; choose one of {UNCERTAINTIES}")


def diversity_term(kind: str, centre_distance: torch.Tensor,
                   labeled_distance: torch.Tensor | None = None) -> torch.Tensor | None:
    """The raw diversity term d(x) ``(n,)`` (None for ``"none"``); ``labeled_distance`` is
    needed only by ``"labeled"``."""
    if kind == "outlier":
        return centre_distance
    if kind == "density":
        return -centre_distance
    if kind == "labeled":
        if labeled_distance is None:
            raise ValueError("the 'labeled' diversity term needs the distance to the labeled rows")
        return labeled_distance
    if kind == "none":
        return None
    raise ValueError(f"unknown diversity {kind!r}; choose one of {DIVERSITIES}")


def variant_score(name: str, alphas: torch.Tensor, weights: torch.Tensor, beta: float,
                  centre_distance: torch.Tensor,
                  labeled_distance: torch.Tensor | None = None) -> torch.Tensor:
    """q(x) of variant ``name`` for every pool row ``(n,)``:
    ``sum_m w_m minmax(u_m) + beta minmax(d)``."""
    uncertainty, diversity = parse_score(name)
    u = modality_uncertainty(alphas.float(), uncertainty)
    q = (weights[:, None].to(u.dtype) * torch.stack([minmax(u_m) for u_m in u])).sum(0)
    d = diversity_term(diversity, centre_distance, labeled_distance)
    return q if d is None else q + beta * minmax(d.to(q.dtype))
