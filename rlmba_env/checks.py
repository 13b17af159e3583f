"""Argument checks with one error format: the argument, its value and what is allowed.

Every setting a user passes (env arguments, dataset generators, learner hyperparameters) is
checked once, where it enters, by these functions, so that a bad value fails at construction
with ``ValueError: tau=0.0 is not allowed; tau must be a finite real number > 0`` instead of
later, as NaN rewards or an exception deep inside a round.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def fail(name: str, value: Any, allowed: str) -> None:
    """Raise the one ``ValueError`` of a bad argument."""
    raise ValueError(f"{name}={value!r} is not allowed; {name} must be {allowed}")


def check_real(name: str, value: Any, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float, or one ValueError naming the argument, the value and the range
    (NaN, infinities, booleans and strings are never real numbers here)."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    allowed = "a finite real number" + (" " if lo or hi else "") + " and ".join(s for s in (lo, hi) if s)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        fail(name, value, allowed)
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        fail(name, value, allowed)
    if high is not None and (value > high or (high_open and value == high)):
        fail(name, value, allowed)
    return value


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (booleans and integral floats are not ints)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low
            or (high is not None and value > high)):
        fail(name, value, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""))
    return int(value)


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        fail(name, value, f"one of {list(choices)}")
    return value


SEED_MAX = 2**63 - 1
"""largest seed: numpy takes any non-negative int, torch's ``manual_seed`` 64 bits"""


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer in ``[0, 2**63 - 1]``."""
    return check_int(name, value, 0, SEED_MAX)
