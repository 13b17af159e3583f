"""Fast training and inference of the evidential task model on cached features.

One call to :meth:`EvidentialLearner.fit` is step 1 of an RL-MBA round (arXiv 2603.25107):
train on the labeled set with the EDL loss (Sensoy et al., NeurIPS 2018, eq. 4 + annealed KL)
on every modality's opinion and on the fused opinion (EFDA weighted evidence or TMC's
Dempster-Shafer rule, Han et al., ICLR 2021). Features and labels stay on the device; the
labeled rows are gathered once per fit, and nothing is copied to the host inside the epoch
loop. Fits are warm-started across rounds unless configured otherwise, and every random draw
(initialisation, dropout, minibatch order) comes from the ``seed`` argument inside a forked RNG,
so the caller's global RNG is untouched and a fit is reproducible from its seed alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlmba_env.learner.evidential import FUSION_METHODS, edl_loss, fuse
from rlmba_env.learner.model import MultimodalEvidentialNet
from rlmba_env.seeding import forked_torch_rng


@dataclass
class LearnerConfig:
    """Hyperparameters of the evidential learner (defaults tuned for 20-120 labels, K = 10)."""

    hidden: int = 64
    """width of each modality's embedding"""
    dropout: float = 0.1
    """dropout after each encoder (training only; MC-dropout strategies reuse it)"""
    epochs: int = 100
    """optimisation epochs of a cold (from scratch) fit"""
    warm_epochs: int = 40
    """optimisation epochs of a warm-started fit (continues from the previous round's parameters)"""
    lr: float = 5e-3
    """Adam learning rate"""
    weight_decay: float = 1e-4
    """Adam L2 weight decay"""
    kl_anneal_epochs: int = 50
    """epochs over which the EDL KL coefficient rises linearly from 0 to 1 (0 = always 1)"""
    batch_size: int | None = None
    """minibatch size; None trains full batch (one step per epoch)"""
    fusion: str = "efda"
    """fused opinion used in the loss: "efda" (weighted evidence) or "ds" (Dempster-Shafer)"""
    warm_start: bool = False
    """continue from the previous fit's parameters instead of re-initialising every round"""
    fused_loss_weight: float = 1.0
    """weight of the EDL loss on the fused opinion, next to the per-modality losses"""

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_METHODS:
            raise ValueError(f"LearnerConfig.fusion={self.fusion!r}; choose one of {list(FUSION_METHODS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"LearnerConfig.batch_size={self.batch_size}; use a positive int or None (full batch)")


@dataclass
class FitStats:
    """What one :meth:`EvidentialLearner.fit` did."""

    losses: list[float] = field(default_factory=list)
    """training loss of every epoch (mean over its minibatches)"""
    grad_norm: float = 0.0
    """total L2 norm of the gradient at the last optimisation step"""
    epochs: int = 0
    """epochs run in this fit"""
    seconds: float = 0.0
    """wall-clock time of the fit"""


class EvidentialLearner:
    """Trains and queries a :class:`MultimodalEvidentialNet` on cached features.

    Args:
        feature_dims: modality name -> feature dimension (the dataset's ``feature_dims``).
        n_classes: number of classes.
        config: hyperparameters; ``LearnerConfig()`` when None.
        device: where the network lives; the features passed to ``fit``/``predict`` must be there.
    """

    def __init__(
        self,
        feature_dims: dict[str, int],
        n_classes: int,
        config: LearnerConfig | None = None,
        device: str | torch.device = "cpu",
    ):
        self.config = config if config is not None else LearnerConfig()
        self.device = torch.device(device)
        self.n_classes = int(n_classes)
        # built under a fixed seed so that constructing a learner neither consumes nor depends on
        # the caller's global RNG; fit() and reset() re-initialise from their own seeds anyway
        with self._rng(0):
            self.net = MultimodalEvidentialNet(
                feature_dims, n_classes, hidden=self.config.hidden, dropout=self.config.dropout
            ).to(self.device)
        self.modalities = self.net.modalities
        self._fitted = False
        self._epochs_done = 0  # epochs since the last cold fit; drives KL annealing

    # -- randomness -----------------------------------------------------------------------
    def _rng(self, seed: int):
        """Draws (initialisation, dropout, minibatch order) inside depend on ``seed`` only."""
        return forked_torch_rng(self.device, seed)

    def _init_parameters(self) -> None:
        for module in self.net.modules():
            if module is not self.net and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def reset(self, seed: int) -> None:
        """Re-initialise the network's parameters deterministically from ``seed``."""
        with self._rng(seed):
            self._init_parameters()
        self._fitted = False
        self._epochs_done = 0

    # -- training -------------------------------------------------------------------------
    def _as_index(self, indices) -> Tensor:
        return torch.as_tensor(indices, dtype=torch.long).to(self.device, non_blocking=True)

    def fit(
        self,
        features: dict[str, Tensor],
        labels: Tensor,
        indices: Tensor,
        modality_weights: Tensor,
        seed: int,
    ) -> FitStats:
        """Train on the rows ``indices`` of the whole-dataset ``features``/``labels``.

        The first fit (or every fit when ``config.warm_start`` is False) re-initialises from
        ``seed``, standardises inputs with the statistics of all rows and runs
        ``config.epochs``; later fits continue from the current parameters for
        ``config.warm_epochs``, with the KL annealing continuing where it stopped.
        """
        cfg = self.config
        start = time.perf_counter()
        idx = self._as_index(indices)
        if idx.numel() == 0:
            raise ValueError("fit() got no labeled rows (indices is empty)")
        x = {m: features[m][idx].float() for m in self.modalities}
        y = labels[idx].to(self.device, torch.long)
        w = torch.as_tensor(modality_weights, dtype=torch.float32).to(self.device)
        n = y.shape[0]
        batch = n if cfg.batch_size is None else min(cfg.batch_size, n)

        with self._rng(seed):
            cold = not (cfg.warm_start and self._fitted)
            if cold:
                self._init_parameters()
                # statistics of every row (labeled or not): the pool is known in pool-based AL
                self.net.set_input_stats(features)
                self._epochs_done = 0
            epochs = cfg.epochs if cold else cfg.warm_epochs
            # a fresh optimiser each fit: Adam's moments from last round's labeled set do not
            # describe this round's loss surface
            optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            self.net.train()
            losses = torch.zeros(epochs, device=self.device)
            grad_norm = torch.zeros((), device=self.device)
            for epoch in range(epochs):
                t = self._epochs_done + epoch
                kl_coef = 1.0 if cfg.kl_anneal_epochs <= 0 else min(1.0, t / cfg.kl_anneal_epochs)
                order = torch.randperm(n, device=self.device) if batch < n else None
                for lo in range(0, n, batch):
                    rows = order[lo : lo + batch] if order is not None else None
                    xb = x if rows is None else {m: v[rows] for m, v in x.items()}
                    yb = y if rows is None else y[rows]
                    loss = self._loss(xb, yb, w, kl_coef)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses[epoch] += loss.detach() * (yb.shape[0] / n)
                if epoch == epochs - 1:
                    grads = [p.grad for p in self.net.parameters() if p.grad is not None]
                    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            self._epochs_done += epochs
            self._fitted = True
        # one host transfer per fit, after the loop
        loss_list = losses.tolist()
        return FitStats(
            losses=loss_list,
            grad_norm=float(grad_norm),
            epochs=epochs,
            seconds=time.perf_counter() - start,
        )

    def _loss(self, x: dict[str, Tensor], y: Tensor, weights: Tensor, kl_coef: float) -> Tensor:
        alphas = self.net(x)
        loss = sum(edl_loss(alphas[m], y, kl_coef) for m in range(alphas.shape[0]))
        if self.config.fused_loss_weight:
            fused = fuse(alphas, weights, self.config.fusion)
            loss = loss + self.config.fused_loss_weight * edl_loss(fused, y, kl_coef)
        return loss

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        features: dict[str, Tensor],
        indices: Tensor | None = None,
        batch_size: int = 65536,
    ) -> Tensor:
        """Per-modality Dirichlet parameters ``(M, n, K)`` of the rows ``indices`` (all rows if None)."""
        self.net.eval()
        idx = None if indices is None else self._as_index(indices)
        n = next(iter(features.values())).shape[0] if idx is None else idx.shape[0]
        out = []
        for lo in range(0, n, batch_size):
            rows = slice(lo, lo + batch_size) if idx is None else idx[lo : lo + batch_size]
            out.append(self.net({m: features[m][rows].float() for m in self.modalities}))
        if not out:
            return torch.empty(len(self.modalities), 0, self.n_classes, device=self.device)
        return torch.cat(out, dim=1)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The network's state dict (parameters and input standardisation)."""
        return self.net.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict written by :meth:`state_dict`; the next fit warm-starts from it."""
        self.net.load_state_dict(state_dict)
        self._fitted = True
        # a saved model was trained past the KL warm-up; do not re-warm it
        self._epochs_done = max(self._epochs_done, self.config.kl_anneal_epochs)
