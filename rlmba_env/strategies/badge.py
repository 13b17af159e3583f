"""BADGE and BMMAL: k-means++ seeding on last-layer gradient embeddings.

BADGE (Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds", ICLR 2020, Algorithm 1) embeds each unlabeled row as the
gradient of the loss under its hypothesised label ``yhat`` (the model's prediction) with respect
to the last layer, ``g = (p - onehot(yhat)) (x) h`` for a softmax head on hidden features ``h``,
and picks the batch by k-means++ seeding: the first row has the largest gradient norm, each next
one is drawn with probability proportional to its squared distance to the nearest pick. Large
norms mean uncertainty, D^2 sampling means diversity.

BMMAL (Shen, Huang, Yin, Zou, Rajan & See, "Towards Balanced Active Learning for Multimodal
Classification", ACM MM 2023) concatenates the per-modality gradient embeddings and rescales each
modality's block by the modalities' Shapley contributions before the same k-means++ seeding.

Our multimodal network has one evidential head per modality, so the gradient embedding is the
concatenation over modalities m of

    g_m = (p_m - onehot(yhat)) (x) h_m,

with ``p_m = alpha_m / S_m`` the expected probabilities of modality m's head (``state.alphas``),
``h_m`` its encoder output with dropout off, and ``yhat = argmax alpha_f`` the *fused* prediction
(``state.fused_alpha``), so every block is a gradient towards the same hypothesised label.
``p_m - onehot(yhat)`` is exactly the gradient of ``-log p_m[yhat]`` with respect to logits
``log alpha_m`` (``softmax(log alpha) = alpha / S``), i.e. BADGE's softmax formula applied to the
evidential head's expected probabilities; we leave out the softplus Jacobian
``sigmoid(z) / alpha`` of the real head so that, as in BADGE, confident rows get small and
uncertain rows large norms whatever the evidence scale. Bias gradients are left out, as in BADGE.

Memory: the ``(n, M K hidden)`` embedding matrix is never formed. Each block is an outer
product, so ``||g_i||^2 = sum_m s_m^2 ||v_im||^2 ||h_im||^2`` and
``<g_i, g_j> = sum_m s_m^2 <v_im, v_jm> <h_im, h_jm>`` (``v = p - onehot``, ``s_m`` the block
scale); k-means++ keeps the ``(M, n, K)`` and ``(M, n, hidden)`` factors and updates distances
with two matrix-vector products per modality and pick.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rlmba_env.learner.evidential import expected_probs
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.common import check_budget, embeddings, to_rows, torch_generator


def gradient_embedding_factors(state: PoolState) -> tuple[Tensor, Tensor]:
    """The factors of every unlabeled row's gradient embedding, ``g_m = v_m (x) h_m``.

    Returns:
        v: ``(M, n, K)``, ``p_m - onehot(argmax alpha_f)``.
        h: ``(M, n, hidden)``, per-modality encoder outputs (dropout off).
    """
    h = torch.stack(embeddings(state.learner.net, state, state.unlabeled))
    p = expected_probs(state.alphas.float())
    yhat = state.fused_alpha.argmax(-1)
    v = p - torch.nn.functional.one_hot(yhat, p.shape[-1]).to(p.dtype)
    return v, h


def outer_kmeans_plus_plus(v: Tensor, h: Tensor, scale: Tensor, budget: int,
                           generator: torch.Generator) -> Tensor:
    """k-means++ seeding on rows ``g_i = concat_m scale_m v_im (x) h_im`` without forming ``g``.

    The first pick is the row with the largest norm (BADGE's choice), every next one is drawn
    with probability proportional to the squared distance to the nearest pick, among rows not
    yet picked. Returns ``budget`` distinct row positions.
    """
    n = v.shape[1]
    if not 1 <= budget <= n:
        raise ValueError(f"k-means++ needs 1 <= budget <= rows, got budget={budget} for {n} rows")
    w = (scale.to(v.dtype) ** 2).view(-1, 1)
    sq_norm = (w * (v * v).sum(-1) * (h * h).sum(-1)).sum(0)  # (n,)

    def sq_dist_to(c: Tensor) -> Tensor:
        vv = torch.einsum("mnk,mk->mn", v, v[:, c])
        hh = torch.einsum("mnd,md->mn", h, h[:, c])
        return (sq_norm + sq_norm[c] - 2.0 * (w * vv * hh).sum(0)).clamp_min(0)

    first = sq_norm.argmax()
    chosen = [first.view(1)]
    available = torch.ones(n, dtype=v.dtype, device=v.device)
    available[first] = 0
    d2 = sq_dist_to(first)
    for _ in range(1, budget):
        # the floor keeps the draw defined when every remaining row coincides with a pick
        probs = (d2 + 1e-12) * available
        nxt = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(v.device)
        chosen.append(nxt)
        available[nxt] = 0
        d2 = torch.minimum(d2, sq_dist_to(nxt[0]))
    return torch.cat(chosen)


class BADGEStrategy(Strategy):
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on multimodal gradient embeddings.

    The embedding of a row concatenates one block per modality, ``(p_m - onehot(yhat)) (x) h_m``
    with the fused prediction ``yhat``; see the module docstring for the exact choice.
    """

    name = "badge"

    def block_scale(self, state: PoolState) -> Tensor:
        """Scale of each modality's block of the gradient embedding, ``(M,)``."""
        return torch.ones(len(state.modalities), device=state.device)

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        v, h = gradient_embedding_factors(state)
        scale = self.block_scale(state).to(v.device, v.dtype)
        generator = torch_generator(rng, v.device)
        return to_rows(state, outer_kmeans_plus_plus(v, h, scale, budget, generator))


DAMPING = ("weaker", "dominant")


def bmmal_scale(contributions: Tensor, damp: str = "weaker") -> Tensor:
    """Per-modality block scales from Shapley contributions ``(M,)``, each clamped to [0, 1].

    ``"weaker"``: ``s_m = 1 - (c_max - c_m)``; with two modalities the stronger block keeps
    scale 1 and the weaker gets ``1 - (c_strong - c_weak)``. For M > 2 every modality is damped
    by its shortfall to the strongest one, so the rule reduces to the two-modality one and
    equal contributions give BADGE.
    ``"dominant"``: ``s_m = 1 - (c_m - c_min)``: the mirror image, damping the stronger blocks.
    """
    if damp not in DAMPING:
        raise ValueError(f"damp must be one of {DAMPING}, got {damp!r}")
    c = contributions.float()
    gap = (c.max() - c) if damp == "weaker" else (c - c.min())
    return (1.0 - gap).clamp(0.0, 1.0)


class BMMALStrategy(BADGEStrategy):
    """BMMAL (Shen et al., ACM MM 2023): BADGE on gradient embeddings rescaled per modality by
    the modalities' Shapley contributions (``state.contributions``, on the validation split).

    Args:
        damp: which blocks the contribution gap scales down (:func:`bmmal_scale`); the default
            ``"weaker"`` keeps the strongest modality's block and scales the others by
            ``1 - (c_strong - c_m)``.

    The contributions are the dataset-level Shapley values the env computes each round (fused
    top-1 on ``val`` with absent modalities made vacuous), not per-sample values.
    """

    name = "bmmal"

    def __init__(self, damp: str = "weaker"):
        if damp not in DAMPING:
            raise ValueError(f"damp must be one of {DAMPING}, got {damp!r}")
        self.damp = damp

    def block_scale(self, state: PoolState) -> Tensor:
        return bmmal_scale(state.contributions.to(state.device), self.damp)
