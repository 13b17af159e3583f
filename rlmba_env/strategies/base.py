"""The interface between the environment and selection strategies.

A strategy sees the round's :class:`PoolState` (what the env measured after training) and a
budget b, and returns b distinct dataset rows from the unlabeled pool; the env's
``label(rows)`` then closes the round. Strategies never see the labels of unlabeled rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from rlmba_env.round import PoolState

__all__ = ["PoolState", "Strategy"]


class Strategy(ABC):
    """Chooses ``budget`` distinct unlabeled rows from a :class:`PoolState`."""

    name: str = "strategy"

    @abstractmethod
    def select(self, state: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Return ``budget`` distinct dataset rows from ``state.unlabeled``."""
