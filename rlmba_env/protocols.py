"""Labeling protocols: how many labels an episode starts with, buys per round, and for how long.

The real-dataset protocols are the paper's (RL-MBA, arXiv 2603.25107, experimental setup):
Food101 and KineticsSound start from 1,000 labels and buy 1,000 per round, VGGSound 2,000 and
2,000, for 6 rounds. AV-Digits uses the low-budget regime where selection strategies differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
