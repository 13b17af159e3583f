"""EnvConfig: every setting of :class:`~rlmba_env.env.MultimodalALEnv`, written once.

The env's constructor, its ``describe()``, the registered ids' keyword arguments, the batched
vector env's sub-envs and the ``relative`` reward's reference twin all read this one
dataclass, so a setting is declared, defaulted, documented and validated here only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from os import PathLike
from typing import Any

import torch

from rlmba_env.learner.trainer import LearnerConfig
from rlmba_env.protocols import INITIAL_SETS

REWARDS = ("gain", "relative", "absolute")
"""The reward functions of :class:`~rlmba_env.env.MultimodalALEnv` (see its ``## Rewards``)."""
PRECISIONS = ("float32", "bfloat16")
"""How the env holds features on its device (see ``EnvConfig.precision``)."""
RENDER_MODES = ("ansi",)



def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is not allowed; {name} must be {allowed}")


def _check_real(name: str, value: Any, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float, or one ValueError naming the argument, the value and the range."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    allowed = "a finite real number" + (" " if lo or hi else "") + " and ".join(s for s in (lo, hi) if s)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(name, value, allowed)
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        _fail(name, value, allowed)
    if high is not None and (value > high or (high_open and value == high)):
        _fail(name, value, allowed)
    return value


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        _fail(name, value, f"an integer >= {low}")
    return int(value)


def _check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        _fail(name, value, f"one of {list(choices)}")
    return value


@dataclass
class EnvConfig:
    """Every setting of :class:`~rlmba_env.env.MultimodalALEnv` (the dataset and the protocol
    are not settings: they are the env's two positional arguments).

    ``MultimodalALEnv(dataset, protocol, learner=..., reward=...)`` and
    ``gym.make(id, learner=..., reward=...)`` take these fields as keyword arguments; values are
    validated here, each bad one with a ValueError naming it, its value and what is allowed.
    """

    learner: LearnerConfig | dict = field(default_factory=LearnerConfig)
    """the evidential classifier's hyperparameters (a ``LearnerConfig`` or a dict of its fields)"""
    reward: str = "gain"
    """``"gain"`` (top-1 gain plus ``balance_weight`` x balance), ``"relative"`` (top-1 minus the
    reference strategies' at the same round) or ``"absolute"`` (top-1)"""
    balance_weight: float = 0.1
    """lambda of the ``gain`` reward: weight of the modality balance"""
    kappa: int = 5
    """candidate set size as a multiple of ``per_round`` (K = kappa x per_round)"""
    beta: float = 1.0
    """weight of the k-means diversity in the selection score q"""
    tau: float = 0.1
    """AMCB softmax temperature"""
    epsilon: float = 0.05
    """AMCB floor of each modality weight"""
    kmeans_iterations: int = 5
    """Lloyd iterations after k-means++ seeding"""
    device: str = "cpu"
    """torch device of the classifier and every round computation (a ``torch.device`` is
    accepted and stored as its string)"""
    precision: str = "float32"
    """``"float32"``, or ``"bfloat16"``: features held on ``device`` centred and rounded to
    bfloat16, the learner's first layer at inference and k-means' distance products in bfloat16"""
    render_mode: str | None = None
    """``None`` or ``"ansi"``"""
    reference_strategies: tuple[str, ...] = ("random",)
    """strategies whose mean validation top-1 curve the ``relative`` reward subtracts"""
    reference_cache: str | None = None
    """folder of cached reference curves (None: ``<data root>/reference``)"""
    initial: str = "random"
    """``"random"`` (the paper's protocols): the initial labeled rows drawn uniformly from the
    pool; ``"stratified"``: one row of each class first (of as many classes as there are
    initial labels, drawn at random, when there are fewer), then uniformly"""
    fusion_subset: bool = True
    """fuse only the best nested subset of modalities on ``val`` (by their own val top-1; ties
    to the larger subset): a modality that does not help gets weight 0 (AMCB weights inside the
    subset); False keeps every modality at least at the ``epsilon`` floor, as the paper"""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalise every field; raise one ValueError for the first bad one."""
        if isinstance(self.learner, dict):
            self.learner = LearnerConfig(**self.learner)
        elif not isinstance(self.learner, LearnerConfig):
            _fail("learner", self.learner, "a LearnerConfig or a dict of its fields")
        self.reward = _check_choice("reward", self.reward, REWARDS)
        self.balance_weight = _check_real("balance_weight", self.balance_weight)
        self.kappa = _check_int("kappa", self.kappa, 1)
        self.beta = _check_real("beta", self.beta, low=0.0)
        self.tau = _check_real("tau", self.tau, low=0.0, low_open=True)
        self.epsilon = _check_real("epsilon", self.epsilon, low=0.0, high=1.0, high_open=True)
        self.kmeans_iterations = _check_int("kmeans_iterations", self.kmeans_iterations, 0)
        if not isinstance(self.device, (str, torch.device)):
            _fail("device", self.device, "a torch device or its name, e.g. 'cpu' or 'cuda:0'")
        try:
            self.device = str(torch.device(self.device))
        except RuntimeError:
            _fail("device", self.device, "a torch device or its name, e.g. 'cpu' or 'cuda:0'")
        self.precision = _check_choice("precision", self.precision, PRECISIONS)
        self.initial = _check_choice("initial", self.initial, INITIAL_SETS)
        if not isinstance(self.fusion_subset, bool):
            _fail("fusion_subset", self.fusion_subset, "True or False")
        if self.render_mode is not None:
            _check_choice("render_mode", self.render_mode, (None, *RENDER_MODES))
        strategies = self.reference_strategies
        if isinstance(strategies, str) or not all(isinstance(s, str) for s in strategies):
            _fail("reference_strategies", strategies, "a sequence of strategy names")
        self.reference_strategies = tuple(strategies)
        if self.reward == "relative" and not self.reference_strategies:
            _fail("reference_strategies", strategies, "at least one strategy name when reward='relative'")
        if self.reference_cache is not None:
            if not isinstance(self.reference_cache, (str, PathLike)):
                _fail("reference_cache", self.reference_cache, "None or a folder path")
            self.reference_cache = str(self.reference_cache)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values; ``EnvConfig(**config.to_dict()) == config``."""
        out = asdict(self)
        out["reference_strategies"] = list(self.reference_strategies)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EnvConfig":
        """The config in ``values`` (e.g. an env's ``describe()``), ignoring keys that are not
        settings (``dataset``, ``protocol``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
