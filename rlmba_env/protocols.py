"""Labeling protocols: how many labels an episode starts with, buys per round, and for how long.

The real-dataset protocols are the paper's (RL-MBA, arXiv 2603.25107, experimental setup):
Food101 and KineticsSound start from 1,000 labels and buy 1,000 per round, VGGSound 2,000 and
2,000, for 6 rounds. AV-Digits uses the low-budget regime where selection strategies differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Protocol:
    """One active-learning campaign's budget."""

    initial_labels: int
    """Pool rows labeled (at random) before the first round."""
    per_round: int
    """Budget b: rows labeled at the end of each round."""
    rounds: int
    """Rounds in an episode; the episode ends after the last one."""

    def __post_init__(self) -> None:
        for name in ("initial_labels", "per_round", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Protocol.{name} must be a positive integer, got {value!r}")

    @property
    def total_labels(self) -> int:
        """Labels held at the end of an episode."""
        return self.initial_labels + self.per_round * self.rounds

    def check_pool(self, pool_size: int, dataset: str = "dataset") -> None:
        """Raise if the campaign would need more rows than the pool holds."""
        if self.total_labels > pool_size:
            raise ValueError(
                f"protocol {asdict(self)} needs {self.total_labels} labels "
                f"({self.initial_labels} + {self.rounds} x {self.per_round}) but the {dataset} "
                f"pool holds {pool_size} rows; lower initial_labels, per_round or rounds"
            )


PROTOCOLS: dict[str, Protocol] = {
    "avdigits": Protocol(initial_labels=20, per_round=10, rounds=10),
    "synthetic": Protocol(initial_labels=20, per_round=10, rounds=10),
    "features": Protocol(initial_labels=20, per_round=10, rounds=10),
    "food101": Protocol(initial_labels=1000, per_round=1000, rounds=6),
    "kinetics_sound": Protocol(initial_labels=1000, per_round=1000, rounds=6),
    "vggsound": Protocol(initial_labels=2000, per_round=2000, rounds=6),
}


INITIAL_SETS = ("random", "stratified")
"""How an episode's initial labeled rows are drawn (:func:`initial_rows`)."""


def initial_rows(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, n: int,
                 kind: str = "random") -> np.ndarray:
    """An episode's initial labeled rows: ``n`` distinct rows of ``pool`` drawn with ``rng``.

    ``"random"`` (the paper's protocols): uniformly. ``"stratified"``: one row of each class
    first (of ``n`` classes drawn at random when ``n`` is below the class count), then the rest
    uniformly, so that no class starts unseen (on a 68-class set, 136 uniform draws left 6
    classes without a label). It reads the pool's labels, as a seed set that annotators
    collect class by class would; rows whose label is unknown (``-1``) are drawn only in the
    uniform part.
    """
    if kind == "random":
        return rng.choice(pool, n, replace=False)
    if kind != "stratified":
        raise ValueError(f"initial={kind!r} is not allowed; initial must be one of {list(INITIAL_SETS)}")
    known = np.unique(pool_labels)
    classes = rng.permutation(known[known >= 0])[:n]
    first = np.array([rng.choice(pool[pool_labels == c]) for c in classes], dtype=pool.dtype)
    rest = rng.choice(np.setdiff1d(pool, first), n - first.size, replace=False)
    return np.concatenate([first, rest])
