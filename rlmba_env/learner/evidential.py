"""Dirichlet opinions, the evidential (EDL) loss and evidence fusion.

Implements

* Evidential deep learning (Sensoy, Kaplan & Kandemir, "Evidential Deep Learning to Quantify
  Classification Uncertainty", NeurIPS 2018): evidence ``e >= 0`` -> Dirichlet ``alpha = e + 1``,
  subjective-logic opinion ``b = e / S``, ``u = K / S`` with ``S = sum_k alpha_k`` (eq. 1), the
  digamma form of the expected cross-entropy (eq. 4) and the KL regulariser towards the uniform
  Dirichlet on the misleading evidence (eq. 5 / 6).
* The reduced Dempster-Shafer combination of two opinions used by Trusted Multi-view
  Classification (Han, Zhang, Fu & Zhou, ICLR 2021, Definition 3.1 / eq. 2).
* EFDA's weighted evidence fusion ``alpha_f = 1 + sum_m w_m (alpha_m - 1)`` and its difficulty
  score ``U(x)``, the mean Dirichlet variance of the fused opinion (RL-MBA, arXiv 2603.25107).
* Geometric fusion ``alpha_f,k = prod_m alpha_m,k^(w_m / max_j w_j)``, the log-linear pool
  (Genest & Zidek, Statistical Science 1986; Hinton's product of experts, 2002) of the opinions'
  Dirichlet strengths, next to the arithmetic pool of evidence that cumulative and averaging
  fusion of subjective logic compute (Josang, "Subjective Logic", Springer 2016, ch. 12).

Shapes: ``alpha`` is ``(..., K)``; stacked per-modality opinions are ``(M, N, K)``. Every function
is a pure, batched torch function, differentiable, and runs on whatever device its inputs are on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlmba_env.checks import fail

FUSION_METHODS = ("efda", "ds", "geometric")

EVIDENCE_FUNCTIONS = ("softplus", "exp")
EXP_LOGIT_CLAMP = 10.0
"""``|logit|`` bound of the ``exp`` evidence (evidence in ``[e^-10, e^10]``), the clamp common PyTorch EDL code uses"""


def evidence(logits: Tensor, kind: str) -> Tensor:
    """Non-negative evidence from a head's logits: ``softplus(z)`` or ``exp(clamp(z, -10, 10))``.

    Softplus evidence grows linearly in the logit, so with K classes (the others at evidence 0)
    the true class needs a logit of about ``(K - 1) p / (1 - p)`` for expected probability ``p``,
    and a fit of a fixed number of epochs stops short of it; ``exp`` evidence makes
    ``log alpha`` about linear in the logit, as a softmax classifier's log-probabilities are.
    """
    if kind == "exp":
        return logits.clamp(-EXP_LOGIT_CLAMP, EXP_LOGIT_CLAMP).exp()
    if kind == "softplus":
        return torch.nn.functional.softplus(logits)
    fail("evidence", kind, f"one of {list(EVIDENCE_FUNCTIONS)}")


def evidence_to_alpha(evidence: Tensor) -> Tensor:
    """Dirichlet parameters from non-negative evidence: ``alpha = evidence + 1``."""
    return evidence + 1.0


def opinion(alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Subjective-logic opinion of ``Dir(alpha)``: belief ``(..., K)`` and uncertainty ``(...)``.

    ``b_k = (alpha_k - 1) / S`` and ``u = K / S``; they sum to one.
    """
    s = alpha.sum(-1, keepdim=True)
    belief = (alpha - 1.0) / s
    uncertainty = alpha.shape[-1] / s.squeeze(-1)
    return belief, uncertainty


def expected_probs(alpha: Tensor) -> Tensor:
    """Expected class probabilities under ``Dir(alpha)``: ``alpha / S``."""
    return alpha / alpha.sum(-1, keepdim=True)


def _broadcast_weights(weights: Tensor, alphas: Tensor) -> Tensor:
    """Modality weights ``(M,)`` (or ``(M, n)`` for opinions ``(M, n, N, K)`` of n models) shaped
    to multiply ``alphas``."""
    weights = torch.as_tensor(weights, dtype=alphas.dtype, device=alphas.device)
    if not 1 <= weights.dim() < alphas.dim() or weights.shape != alphas.shape[: weights.dim()]:
        raise ValueError(
            f"weights has shape {tuple(weights.shape)} but alphas has {alphas.shape[0]} modalities "
            f"(alphas shape {tuple(alphas.shape)}); pass one weight per modality"
        )
    return weights.view(*weights.shape, *([1] * (alphas.dim() - weights.dim())))


def fuse_weighted(alphas: Tensor, weights: Tensor) -> Tensor:
    """EFDA fusion: ``alpha_f = 1 + sum_m w_m (alpha_m - 1)``; ``(M, N, K), (M,) -> (N, K)``.

    Weighting the evidence (not alpha) keeps a zero-weight modality from adding anything, so
    ``w = (1, 0)`` returns the first opinion unchanged.
    """
    w = _broadcast_weights(weights, alphas)
    return 1.0 + (w * (alphas - 1.0)).sum(0)


def reliability(weights: Tensor, alphas: Tensor) -> Tensor:
    """Modality weights as reliabilities ``r_m = w_m / max_j w_j`` (same shape as ``weights``): 1
    for the most trusted modality, 0 for an absent one, all ones for equal weights of any sum."""
    w = torch.as_tensor(weights, dtype=alphas.dtype, device=alphas.device)
    return w / w.amax(0, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def fuse_geometric(alphas: Tensor, weights: Tensor) -> Tensor:
    """Geometric fusion: ``alpha_f,k = prod_m alpha_m,k^(r_m)``, ``r_m = w_m / max_j w_j``;
    ``(M, N, K), (M,) -> (N, K)``.

    Cumulative fusion in subjective logic (Josang 2016, section 12.3) adds the opinions' evidence,
    ``e_f = sum_m e_m``: it multiplies the Dirichlet *densities* over ``p``, but its expected
    probabilities ``alpha_f / S_f`` are an arithmetic pool of the evidence, so a view that is
    sure a class is wrong cannot outvote two views that give it some evidence. Geometric fusion
    pools the Dirichlet strengths log-linearly instead: with equal weights ``alpha_f = prod_m
    alpha_m`` and ``alpha_f / S_f`` is proportional to ``prod_m alpha_m / S_m``, the product of
    the opinions' expected probabilities (the fused classifier of per-view probabilistic models,
    a product of experts), so every view can veto a class. ``r_m`` is the Shafer reliability of
    :func:`fuse` ``"ds"``: the most trusted modality enters whole, a zero weight gives the factor
    ``alpha^0 = 1`` (absent, as a vacuous opinion ``alpha = 1`` also is), ``w = (1, 0)`` returns
    the first opinion, and ``alpha_f >= 1`` because every factor is. A view ranks only the
    classes it gives evidence to (the others tie at ``alpha = 1``), so its veto is as graded as
    its wrong-class evidence, which the EDL KL term drives towards zero.

    The product is taken as ``exp(sum_m r_m log alpha_m)``, with the exponent capped so that
    ``S_f`` stays finite in the input dtype (many confident views would otherwise overflow).
    """
    r = _broadcast_weights(reliability(weights, alphas), alphas)
    log_alpha = (r * alphas.log()).sum(0)
    cap = torch.finfo(alphas.dtype).max / (2 * alphas.shape[-1])
    return log_alpha.clamp(max=math.log(cap)).exp()


def ds_combine(alpha_a: Tensor, alpha_b: Tensor) -> Tensor:
    """TMC's reduced Dempster-Shafer combination of two opinions, returned as Dirichlet alpha.

    TMC defines, with ``C = sum_{i != j} b_a,i b_b,j``,

        b_k = (b_a,k b_b,k + b_a,k u_b + b_b,k u_a) / (1 - C),   u = u_a u_b / (1 - C),

    and maps back with ``S = K / u``, ``e = b S``, ``alpha = e + 1``. Substituting
    ``b = e / S`` and ``u = K / S`` for both inputs, ``1 - C`` cancels and

        e_k = e_a,k + e_b,k + e_a,k e_b,k / K.

    We compute this closed form: it is the same value, but stays exact and has finite gradients
    when the two opinions are confident and contradictory (``1 - C -> 0``), where the ratio form
    loses all precision.
    """
    k = alpha_a.shape[-1]
    e_a = alpha_a - 1.0
    e_b = alpha_b - 1.0
    return 1.0 + e_a + e_b + e_a * e_b / k


def ds_conflict(alpha_a: Tensor, alpha_b: Tensor) -> Tensor:
    """Dempster-Shafer conflict ``C = sum_{i != j} b_a,i b_b,j`` of two opinions, shape ``(...)``."""
    b_a, _ = opinion(alpha_a)
    b_b, _ = opinion(alpha_b)
    # sum over all pairs minus the agreeing (diagonal) pairs; no K x K matrix needed.
    return b_a.sum(-1) * b_b.sum(-1) - (b_a * b_b).sum(-1)


def fuse_dempster_shafer(alphas: Tensor) -> Tensor:
    """Dempster-Shafer fusion of ``M`` opinions, reduced pairwise left to right: ``(M, N, K) -> (N, K)``."""
    fused = alphas[0]
    for m in range(1, alphas.shape[0]):
        fused = ds_combine(fused, alphas[m])
    return fused


def discount(alphas: Tensor, reliability: Tensor) -> Tensor:
    """Shafer's reliability discounting of each opinion, ``(M, N, K), (M,) in [0, 1] -> (M, N, K)``.

    Belief is scaled by the reliability ``r`` and the removed mass becomes uncertainty:
    ``b' = r b``, ``u' = 1 - r (1 - u)``. In evidence terms ``e' = r K e / (K + (1 - r) E)`` with
    ``E = sum_k e_k``. ``r = 1`` leaves the opinion unchanged and ``r = 0`` makes it vacuous.
    """
    r = _broadcast_weights(reliability, alphas).clamp(0.0, 1.0)
    k = alphas.shape[-1]
    evidence = alphas - 1.0
    total = evidence.sum(-1, keepdim=True)
    return 1.0 + r * k * evidence / (k + (1.0 - r) * total)


def fuse(alphas: Tensor, weights: Tensor, method: str) -> Tensor:
    """Fuse per-modality opinions ``(M, N, K)`` with modality weights ``(M,)`` into ``(N, K)``
    (or the opinions ``(M, n, N, K)`` of n models with their weights ``(M, n)`` into ``(n, N, K)``).

    ``"efda"``: :func:`fuse_weighted`.

    ``"ds"``: Dempster-Shafer fusion of the opinions after Shafer discounting (:func:`discount`)
    with reliability ``r_m = w_m / max_j w_j``. Discounting is the standard way to express
    source reliability in Dempster-Shafer theory: it only ever moves belief to uncertainty, so
    a low-weight modality cannot invent evidence, the most trusted modality is kept as is,
    equal weights (e.g. all ``1/M``) give plain DS fusion of the unweighted opinions, and a
    zero weight makes the modality vacuous, i.e. absent from the combination.

    ``"geometric"``: :func:`fuse_geometric`, the product of the opinions' Dirichlet strengths
    with the same reliabilities ``r_m``.
    """
    if method == "efda":
        return fuse_weighted(alphas, weights)
    if method == "ds":
        return fuse_dempster_shafer(discount(alphas, reliability(weights, alphas)))
    if method == "geometric":
        return fuse_geometric(alphas, weights)
    raise ValueError(f"unknown fusion method {method!r}; choose one of {list(FUSION_METHODS)}")


def dirichlet_mean_variance(alpha: Tensor) -> Tensor:
    """EFDA's difficulty ``U(x)``: mean over classes of ``Var[p_c]`` under ``Dir(alpha)``, shape ``(...)``.

    ``Var[p_c] = alpha_c (S - alpha_c) / (S^2 (S + 1))``.
    """
    s = alpha.sum(-1, keepdim=True)
    var = alpha * (s - alpha) / (s.square() * (s + 1.0))
    return var.mean(-1)


def kl_to_uniform_dirichlet(alpha: Tensor) -> Tensor:
    """``KL(Dir(alpha) || Dir(1, ..., 1))``, shape ``(...)`` (Sensoy et al. 2018, eq. 5 with ``beta = 1``)."""
    k = alpha.shape[-1]
    s = alpha.sum(-1)
    # log B(1) = -lgamma(K) and lgamma(1) = 0, hence the short normaliser.
    log_norm = torch.lgamma(s) - torch.lgamma(alpha).sum(-1) - torch.lgamma(alpha.new_tensor(float(k)))
    digamma_term = ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(s).unsqueeze(-1))).sum(-1)
    return log_norm + digamma_term


def edl_loss(alpha: Tensor, targets: Tensor, kl_coef: float, reduction: str = "mean") -> Tensor:
    """EDL loss (Sensoy et al. 2018, eq. 4 digamma form + KL regulariser), mean over samples.

    ``sum_k y_k (digamma(S) - digamma(alpha_k)) + kl_coef * KL(Dir(alpha~) || Dir(1))`` with
    ``alpha~ = y + (1 - y) alpha``: the regulariser only penalises evidence for wrong classes, so
    the model learns to say "I don't know" instead of spreading evidence. ``alpha`` may have any
    leading shape ``(..., K)`` with ``targets`` ``(...)``; ``reduction="none"`` returns the
    per-sample terms ``(...)`` instead of their mean.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"edl_loss reduction={reduction!r}; choose 'mean' or 'none'")
    s = alpha.sum(-1)
    alpha_true = alpha.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    # y is one-hot, so the sum over k reduces to the true-class term.
    terms = torch.digamma(s) - torch.digamma(alpha_true)
    if kl_coef != 0:
        y = torch.nn.functional.one_hot(targets, alpha.shape[-1]).to(alpha.dtype)
        alpha_tilde = y + (1.0 - y) * alpha
        terms = terms + kl_coef * kl_to_uniform_dirichlet(alpha_tilde)
    return terms.mean() if reduction == "mean" else terms
