"""The interface between the environment and selection strategies.

A strategy sees the round's :class:`PoolState` (what the env measured after training) and a
budget b, and returns b distinct dataset rows from the unlabeled pool; the env's
``label(rows)`` then closes the round. Strategies never see the labels of unlabeled rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from rlmba_env.learner.trainer import EvidentialLearner


@dataclass
class PoolState:
    """Everything a strategy may use to choose rows, for the current round."""

    unlabeled: torch.Tensor
    """dataset rows of the unlabeled pool (n,), in ascending order"""
    labeled: torch.Tensor
    """dataset rows labeled so far (l,)"""
    labeled_labels: torch.Tensor
    """labels of ``labeled`` (l,)"""
    features: dict[str, torch.Tensor]
    """modality -> whole-dataset features (N, d_m) on the learner's device"""
    learner: EvidentialLearner
    """the classifier trained this round (embeddings, MC dropout, gradients)"""
    alphas: torch.Tensor
    """per-modality Dirichlet parameters of the unlabeled rows (M, n, K)"""
    fused_alpha: torch.Tensor
    """fused Dirichlet parameters of the unlabeled rows (n, K), AMCB-weighted"""
    weights: torch.Tensor
    """AMCB modality weights (M,)"""
    contributions: torch.Tensor
    """Shapley contribution of each modality to fused val top-1 (M,)"""
    score: torch.Tensor
    """RL-MBA score q of the unlabeled rows (n,)"""
    fusion: str
    """fusion method of the learner ("efda" or "ds")"""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def device(self) -> torch.device:
        return self.unlabeled.device


class Strategy(ABC):
    """Chooses ``budget`` distinct unlabeled rows from a :class:`PoolState`."""

    name: str = "strategy"

    @abstractmethod
    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Return ``budget`` distinct dataset rows from ``state.unlabeled``."""
