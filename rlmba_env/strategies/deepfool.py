"""DeepFool active learning: label the rows closest to the decision boundary.

Ducoffe & Precup, "Adversarial Active Learning for Deep Networks: a Margin Based Approach",
2018 (DFAL): the distance of a row to the decision boundary is approximated by the norm of its
DeepFool adversarial perturbation (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and
accurate method to fool deep neural networks", CVPR 2016, Algorithm 2), and the rows with the
smallest perturbations are labeled.

One DeepFool step linearises the classifier around the current point and moves to the nearest
linearised boundary among the candidate classes ``k != k0``:

    l = argmin_k |f_k - f_k0| / ||grad f_k - grad f_k0||,
    r = (|f_l - f_k0| + 1e-4) / ||w_l||^2 * w_l,      w_l = grad f_l - grad f_k0,

accumulating ``r`` until the prediction changes (the step is applied with a ``1 + overshoot``
factor, as in the reference implementation). The classifier is the fused opinion (the round's
AMCB weights and fusion rule) with scores ``f = log alpha_f``, whose argmax is the fused
prediction. The perturbation acts on all modalities' inputs jointly, in the network's
standardised input space (each feature column divided by its pool standard deviation, the
network's own first step), so that no modality counts more because of its raw feature scale.

Batched: a chunk of rows is attacked at once (rows are independent in eval mode), with one
backward pass per candidate class; rows stop moving once their prediction has flipped. As in
the reference implementation only the ``n_classes`` most probable classes are candidates.
Rows that have not flipped after ``max_iterations`` rank after every flipped row, by the
distance travelled so far.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rlmba_env.learner.evidential import fuse
from rlmba_env.strategies.base import PoolState, Strategy
from rlmba_env.strategies.common import check_budget, gather_features, module_mode, to_rows


def deepfool_distances(state: PoolState, max_iterations: int = 10, overshoot: float = 0.02,
                       n_classes: int = 10, batch_rows: int = 4096) -> tuple[Tensor, Tensor]:
    """DeepFool perturbation norm and flip flag of every unlabeled row, ``(n,), (n,) bool``."""
    net = state.learner.net
    rows = state.unlabeled
    n = rows.shape[0]
    k_total = state.fused_alpha.shape[-1]
    n_cand = max(1, min(n_classes, k_total) - 1)
    means = [getattr(net, f"input_mean_{i}") for i in range(len(net.modalities))]
    stds = [getattr(net, f"input_std_{i}") for i in range(len(net.modalities))]
    mods = net.modalities
    norms = torch.empty(n, device=rows.device)
    flipped = torch.empty(n, dtype=torch.bool, device=rows.device)

    def scores(z: list[Tensor]) -> Tensor:
        x = {m: mu + zi * sd for m, zi, mu, sd in zip(mods, z, means, stds)}
        return fuse(net(x), state.weights, state.fusion).log()

    with module_mode(net, False), torch.enable_grad():
        for lo in range(0, n, batch_rows):
            x = gather_features(state, rows[lo : lo + batch_rows])
            z0 = [((x[m] - mu) / sd).detach() for m, mu, sd in zip(mods, means, stds)]
            c = z0[0].shape[0]
            r_tot = [torch.zeros_like(z) for z in z0]
            with torch.no_grad():
                f0 = scores(z0)
            k0 = f0.argmax(-1)
            others = f0.scatter(1, k0[:, None], float("-inf"))
            cand = others.topk(n_cand, dim=-1).indices  # (c, n_cand)
            active = torch.ones(c, dtype=torch.bool, device=rows.device)
            for it in range(max_iterations + 1):
                z = [(z_0 + (1.0 + overshoot) * r).requires_grad_(True) for z_0, r in zip(z0, r_tot)]
                f = scores(z)
                active = active & (f.argmax(-1) == k0)
                if it == max_iterations or not bool(active.any()):
                    break
                g0 = torch.autograd.grad(f.gather(1, k0[:, None]).sum(), z, retain_graph=True)
                f_k0 = f.gather(1, k0[:, None]).detach()
                best_ratio = torch.full((c,), float("inf"), device=rows.device)
                best_step = [torch.zeros_like(zi) for zi in z0]
                for j in range(n_cand):
                    k = cand[:, j : j + 1]
                    fk = f.gather(1, k)
                    gk = torch.autograd.grad(fk.sum(), z, retain_graph=j < n_cand - 1)
                    w = [a - b for a, b in zip(gk, g0)]
                    w_sq = sum((wi * wi).sum(1) for wi in w).clamp_min(1e-12)
                    gap = (fk.detach() - f_k0).abs().squeeze(1)
                    ratio = gap / w_sq.sqrt()
                    better = ratio < best_ratio
                    best_ratio = torch.where(better, ratio, best_ratio)
                    coef = ((gap + 1e-4) / w_sq)[:, None]
                    best_step = [torch.where(better[:, None], coef * wi, s) for wi, s in zip(w, best_step)]
                keep = active[:, None].to(z0[0].dtype)
                r_tot = [r + keep * s for r, s in zip(r_tot, best_step)]
            norms[lo : lo + c] = ((1.0 + overshoot) ** 2 * sum((r * r).sum(1) for r in r_tot)).sqrt()
            flipped[lo : lo + c] = ~active
    return norms, flipped


class DeepFoolStrategy(Strategy):
    """DFAL (Ducoffe & Precup 2018): the rows with the smallest DeepFool perturbation of the
    fused prediction, in standardised input space.

    Args:
        max_iterations: DeepFool steps per row.
        overshoot: step factor ``1 + overshoot`` that pushes a row across the boundary.
        n_classes: candidate classes (the predicted one and the next most probable ones).
        batch_rows: rows attacked at once.
    """

    name = "deepfool"

    def __init__(self, max_iterations: int = 10, overshoot: float = 0.02, n_classes: int = 10,
                 batch_rows: int = 4096):
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)
        self.overshoot = float(overshoot)
        self.n_classes = int(n_classes)
        self.batch_rows = int(batch_rows)

    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(state, budget)
        norms, flipped = deepfool_distances(state, self.max_iterations, self.overshoot,
                                            self.n_classes, self.batch_rows)
        # flipped rows first, each group by perturbation norm (stable: ties to the lower position)
        order = torch.sort(norms, stable=True).indices
        order = order[torch.sort((~flipped[order]).to(torch.int8), stable=True).indices]
        return to_rows(state, order[:budget])
