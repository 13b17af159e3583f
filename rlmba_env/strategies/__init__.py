"""Selection strategies behind one interface: a PoolState and a budget in, dataset rows out."""

from rlmba_env.strategies.base import PoolState, Strategy

__all__ = ["PoolState", "Strategy"]
