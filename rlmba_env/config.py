"""EnvConfig: every setting of :class:`~rlmba_env.env.MultimodalALEnv`, written once.

The env's constructor, its ``describe()``, the registered ids' keyword arguments, the batched
vector env's sub-envs and the ``relative`` reward's reference twin all read this one
dataclass, so a setting is declared, defaulted, documented and validated here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from os import PathLike
from typing import Any

import torch

from rlmba_env.checks import check_choice, check_int, check_real, check_seed, fail
from rlmba_env.learner.trainer import LearnerConfig
from rlmba_env.protocols import INITIAL_SETS
from rlmba_env.selection.amcb import FUSION_SELECTS
from rlmba_env.selection.portfolio import CANDIDATE_SETS, candidate_set_size
from rlmba_env.selection.score import SCORE_VARIANTS

REWARDS = ("gain", "relative", "absolute")
"""The reward functions of :class:`~rlmba_env.env.MultimodalALEnv` (see its ``## Rewards``)."""
PRECISIONS = ("float32", "bfloat16")
"""How the env holds features on its device (see ``EnvConfig.precision``)."""
RENDER_MODES = ("ansi",)


def check_device(device: Any) -> str:
    """``device`` as the name of a torch device this machine has: ``cpu``, ``cuda[:i]`` with a
    CUDA device ``i``, or ``mps`` where available; one ValueError naming it otherwise (torch's
    own errors come later and name neither the argument nor the way out)."""
    allowed = "'cpu', 'cuda' or 'cuda:<index>' (with a CUDA device) or 'mps' (on Apple silicon)"
    if not isinstance(device, (str, torch.device)):
        fail("device", device, allowed)
    try:
        parsed = torch.device(device)
    except RuntimeError:
        fail("device", device, allowed)
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            fail("device", device, "'cpu' here: no CUDA device is available (torch.cuda.is_available() is False)")
        if parsed.index is not None and parsed.index >= count:
            fail("device", device, f"'cuda' or 'cuda:<index>' with index < {count} (CUDA devices here)")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            fail("device", device, "'cpu' here: MPS is not available")
    elif parsed.type != "cpu":
        fail("device", device, allowed)
    return str(parsed)


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
    candidates: str = "portfolio"
    """the candidate set: ``"portfolio"``, the union of the batches six cheap rules would label
    (top q, fused margin, the weakest modality's margin, k-center greedy, cluster
    representatives, random; K = 6 x per_round), or ``"score"``, the paper's top
    ``kappa x per_round`` rows by q (see :mod:`rlmba_env.selection.portfolio`)"""
    kappa: int = 5
    """candidate set size as a multiple of ``per_round`` with ``candidates="score"`` (K = kappa x per_round)"""
    score: str = "margin-none"
    """the selection score q, ``"<uncertainty>-<diversity>"`` (see :mod:`rlmba_env.selection.score`):
    the default, AMCB-weighted per-modality margin, measured best on the development suite;
    ``"paper"`` (= ``"vacuity-outlier"``) is the paper's Dirichlet vacuity plus distance to the
    nearest k-means centre"""
    beta: float = 1.0
    """weight of the diversity term in the selection score q"""
    tau: float = 1.0
    """AMCB softmax temperature (the paper's 0.1 moves most weight to the best modality, which
    suits EFDA's additive fusion; the product of geometric fusion gains from every view that
    is not dropped by ``fusion_select``: dev suite, 2 seeds, leaves100 fused AULC .816 / .862
    with 0.1 / 1)"""
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
    fusion_select: str = "stacked"
    """how each round sets the fused opinion's modality weights on ``val`` after AMCB:
    ``"stacked"`` (default), the geometric pool's exponents fitted by the fused validation
    cross-entropy, shrunk towards the AMCB weights, a view that does not help going to 0
    (:func:`~rlmba_env.selection.amcb.stacked_weights`; with ``efda`` or ``ds`` fusion, as
    ``"nested"``); ``"nested"``, AMCB weights inside the best nested subset of modalities by
    fused validation top-1 (ties to the larger subset); ``"none"``, every modality at least at
    the ``epsilon`` floor, as the paper"""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check and normalise every field; raise one ValueError for the first bad one."""
        if isinstance(self.learner, dict):
            known = [f.name for f in fields(LearnerConfig)]
            unknown = sorted(set(self.learner) - set(known), key=str)
            if unknown:
                fail("learner", self.learner, f"a dict of LearnerConfig fields {known} (unknown: {unknown})")
            self.learner = LearnerConfig(**self.learner)
        elif not isinstance(self.learner, LearnerConfig):
            fail("learner", self.learner, "a LearnerConfig or a dict of its fields, e.g. {'fusion': 'ds'}")
        self.reward = check_choice("reward", self.reward, REWARDS)
        self.balance_weight = check_real("balance_weight", self.balance_weight)
        self.kappa = check_int("kappa", self.kappa, 1)
        self.candidates = check_choice("candidates", self.candidates, CANDIDATE_SETS)
        self.score = check_choice("score", self.score, SCORE_VARIANTS)
        self.beta = check_real("beta", self.beta, low=0.0)
        self.tau = check_real("tau", self.tau, low=0.0, low_open=True)
        self.epsilon = check_real("epsilon", self.epsilon, low=0.0, high=1.0, high_open=True)
        self.kmeans_iterations = check_int("kmeans_iterations", self.kmeans_iterations, 0)
        self.device = check_device(self.device)
        self.precision = check_choice("precision", self.precision, PRECISIONS)
        self.initial = check_choice("initial", self.initial, INITIAL_SETS)
        self.fusion_select = check_choice("fusion_select", self.fusion_select, FUSION_SELECTS)
        if self.render_mode is not None:
            check_choice("render_mode", self.render_mode, (None, *RENDER_MODES))
        # the names themselves are checked against the registry by rewards.check_reference_strategies
        # (the strategies sit above this layer)
        strategies = self.reference_strategies
        if isinstance(strategies, str) or not isinstance(strategies, (list, tuple)) or \
                not all(isinstance(s, str) for s in strategies):
            fail("reference_strategies", strategies, "a sequence of strategy names, e.g. ('random',)")
        self.reference_strategies = tuple(strategies)
        if self.reward == "relative" and not self.reference_strategies:
            fail("reference_strategies", strategies, "at least one strategy name when reward='relative'")
        if self.reference_cache is not None:
            if not isinstance(self.reference_cache, (str, PathLike)):
                fail("reference_cache", self.reference_cache, "None or a folder path")
            self.reference_cache = str(self.reference_cache)

    def candidate_count(self, per_round: int) -> int:
        """K, the candidates offered per round for a protocol labeling ``per_round`` rows."""
        return candidate_set_size(self.candidates, self.kappa, per_round)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values; ``EnvConfig(**config.to_dict()) == config``."""
        out = asdict(self)
        out["reference_strategies"] = list(self.reference_strategies)
        return out

    @classmethod
    def with_settings(cls, config: "EnvConfig | None", settings: dict[str, Any]) -> "EnvConfig":
        """``config`` (the defaults when None) with the keyword ``settings`` replaced; an
        unknown name raises one TypeError that lists the settings there are."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"unknown env setting(s) {unknown}; the settings are {names}")
        return cls(**settings) if config is None else replace(config, **settings)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EnvConfig":
        """The config in ``values`` (e.g. an env's ``describe()``), ignoring keys that are not
        settings (``dataset``, ``protocol``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


RESET_OPTIONS = ("episode_seed",)


def check_reset_options(options) -> dict:
    """``reset``'s ``options``: None or a dict of known keys (a typo is not silently ignored),
    ``episode_seed`` a seed."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        fail("options", options, f"None or a dict with the keys {list(RESET_OPTIONS)}")
    unknown = sorted(set(options) - set(RESET_OPTIONS), key=str)
    if unknown:
        fail("options", options, f"None or a dict with the keys {list(RESET_OPTIONS)} (unknown: {unknown})")
    if "episode_seed" in options:
        options = {**options, "episode_seed": check_seed("episode_seed", options["episode_seed"])}
    return options
