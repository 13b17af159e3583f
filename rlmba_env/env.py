"""MultimodalALEnv: one pool-based multimodal active-learning campaign as a Gymnasium env.

RL-MBA (arXiv 2603.25107): the round computations are in :mod:`rlmba_env.round`, the
observation layout in :mod:`rlmba_env.observation`, the rewards in :mod:`rlmba_env.rewards`,
the settings in :mod:`rlmba_env.config` and the device copy of the data in
:mod:`rlmba_env.device`; this module holds the episode's state and the Gymnasium API.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlmba_env.config import RENDER_MODES, EnvConfig, check_reset_options
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.device import device_data
from rlmba_env.learner.trainer import EvidentialLearner, FitRequest, FitStats
from rlmba_env.observation import (
    render_ansi,
    CandidateSpace,
    LAYOUT,
    CandidateView,
    candidate_columns,
    observation_space,
    round_info,
    state_entries,
)
from rlmba_env.protocols import Protocol, initial_rows
from rlmba_env.resume import ResumeMixin, check_rows_labeled, check_splits_labeled
from rlmba_env.rewards import check_reference_strategies, reference_curve, round_reward
from rlmba_env.round import PoolState, RoundResult, check_label_rows, evaluate_round


class MultimodalALEnv(ResumeMixin, gym.Env):
    """
    ## Description

    One episode is one labeling campaign on a multimodal dataset, following RL-MBA
    ("Label What Matters: Modality-Balanced and Difficulty-Aware Multimodal Active
    Learning", arXiv 2603.25107). The episode starts with ``protocol.initial_labels`` random
    pool rows labeled. Every round an evidential multimodal classifier is trained on the
    labeled rows, the modality weights are rebalanced (AMCB), every unlabeled pool row is
    scored by ``q(x) = sum_m w_m minmax(u_m(x)) + beta minmax(d(x))`` (``score``: the paper's
    Dirichlet vacuity and k-means outlier distance, or the default, AMCB-weighted per-modality
    margin; :mod:`rlmba_env.selection.score`) and a candidate set is formed (``candidates``:
    by default the portfolio, the union of the batches six cheap rules would label, each
    candidate flagged by the rules that proposed it; or the paper's ``kappa * b`` best rows by
    q; :mod:`rlmba_env.selection.portfolio`). The agent picks ``b = protocol.per_round`` of
    them, one per step; after the b-th pick they are labeled, the classifier is retrained and
    the round's reward is paid.

    ## Action Space

    ``Discrete(K)`` with ``K = env.config.candidate_count(per_round)`` (``6 * per_round`` for
    the portfolio, ``kappa * per_round`` for the top-q set): the position of a candidate in
    the current candidate set (a ``Discrete`` subclass whose ``sample()`` draws an allowed
    candidate). A candidate already picked this round, or a padding slot when the set is
    smaller than K, is masked; picking it raises ``ValueError``. The mask is in
    ``obs["action_mask"]``, ``info["action_mask"]`` and ``env.action_masks()`` (for
    sb3-contrib's ``MaskablePPO``).

    ## Observation Space

    A ``Dict`` with three entries in layout ``v2`` (``describe()["observation"]``), which
    depends on neither the number of modalities, the class count nor feature dimensions: one
    policy runs on every dataset (only K follows the protocol). Every column and entry is
    documented in :mod:`rlmba_env.observation`.

    ``candidates``: ``Box(0, 1, (K, 32), float32)``, one row per candidate (padding rows 0):
    fused margin, entropy and EFDA uncertainty; vacuity, margin and largest belief of the
    modalities pooled (mean, min, max) and of the strongest and weakest modality by AMCB
    weight; Dempster-Shafer conflict and disagreement between modalities; pool percentile
    ranks of the fused margin, the distance to the nearest labeled row, the density (minus the
    distance to the nearest k-means centre) and q; one flag per portfolio proposer; the share
    of the candidate's cluster labeled or picked (``coverage``); ``picked``.

    ``state``: ``Box(-10, 10, (22,), float32)``: round fraction, picks left, share of the pool
    labeled, val top-1 / NLL / ECE, chance level 1/K, modality balance, AMCB weights (max, min,
    entropy), Shapley contributions and unimodal-minus-fused val top-1 gaps (pooled), class
    coverage and class balance of the labeled set, mean fused margin and EFDA uncertainty over
    the pool, the last fit's loss slope and gradient norm.

    ``action_mask``: ``MultiBinary(K)``, 1 where a pick is allowed.

    ## Rewards

    Paid at the end of each round (0 for the other picks), from the fused model on ``val``:

    - ``"gain"`` (default): ``top1_t - top1_{t-1} + balance_weight * balance_t``.
    - ``"relative"``: ``top1_t`` minus the mean top-1 of ``reference_strategies`` replaying the
      same episode at round t (computed once per dataset, configuration and episode seed,
      cached on disk under ``reference_cache``, default ``<data root>/reference``).
    - ``"absolute"``: ``top1_t``.

    ``info`` carries every term (``reward_terms``) and the test-split metrics.

    ## Starting State

    ``initial_labels`` rows drawn from the pool with the env's RNG (``initial="random"``:
    uniformly, as the paper's protocols; ``"stratified"``: one row per class first, then
    uniformly), a classifier trained on them from a seeded initialisation, equal modality
    weights before AMCB.

    ## Episode End

    ``terminated`` after the ``rounds``-th round, when ``initial_labels + rounds * per_round``
    rows are labeled. Never truncated by the env itself.

    ## Arguments

    - ``dataset``: a :class:`~rlmba_env.data.MultimodalDataset`.
    - ``protocol``: a :class:`~rlmba_env.protocols.Protocol` or a dict with its fields.
    - ``config``: an :class:`~rlmba_env.config.EnvConfig`; or its fields as keyword arguments
      (``learner``, ``reward``, ``balance_weight``, ``candidates``, ``kappa``, ``score``,
      ``beta``, ``tau``, ``epsilon``,
      ``kmeans_iterations``, ``device``, ``precision``, ``render_mode``,
      ``reference_strategies``, ``reference_cache``, ``initial``, ``fusion_select``; each
      documented there), which override
      ``config``'s. ``env.config`` holds the validated settings.

    ``env.unwrapped.label(rows)`` closes a round with an externally chosen batch of dataset
    rows from the whole unlabeled pool (classic strategies, human-in-the-loop labeling).
    ``begin_reset``/``begin_step``/``begin_label`` and ``finish`` split ``reset``/``step``/
    ``label`` around the round's fit: the ``begin_*`` call returns a :class:`FitRequest` (or,
    for a pick that does not close the round, the step's 5-tuple), the caller fits the learner
    (``fit_learners`` fits many envs' learners at once) and passes the result to ``finish``.
    ``env.unwrapped.round_callbacks`` is a list of functions called with the ``info`` of every
    closed round, whether it was closed by ``step`` or ``label``. Unlabeled pool rows (-1) and
    ``resume``/``pick_rows``, for :mod:`rlmba_env.labeling`: see :mod:`rlmba_env.resume`.

    ## Speed

    Everything from training to the candidate set runs on ``device`` on features put there once
    (:mod:`rlmba_env.device`); the candidate columns are computed once per round, after which a
    pick only updates the host copy. ``env.unwrapped.last_timings`` holds the last round's
    ``train_s`` and ``score_s``; with ``env.unwrapped.profile = True`` also ``infer_s``,
    ``cluster_s`` and ``candidates_s`` (device synchronised at each phase boundary). For many
    envs on one GPU see :class:`rlmba_env.vector.BatchedMultimodalALVectorEnv`; for the
    scalable k-means of large pools, :mod:`rlmba_env.selection.diversity`.

    ## Version History

    - v0: initial release; observation layout v2 (dataset-agnostic), portfolio candidates and
      the margin score by default (``candidates="score", score="paper"`` restore the paper's
      candidate set and score).
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 1}

    def __init__(self, dataset: MultimodalDataset, protocol: Protocol | dict, config: EnvConfig | None = None,
                 **settings):
        if not isinstance(dataset, MultimodalDataset):
            raise TypeError(f"dataset must be a MultimodalDataset, got {type(dataset).__name__}")
        check_splits_labeled(dataset)
        self.protocol = Protocol(**protocol) if isinstance(protocol, dict) else protocol
        self.protocol.check_pool(len(dataset.splits["pool"]), dataset.name)
        if config is not None and not isinstance(config, EnvConfig):
            raise TypeError(f"config must be an EnvConfig (or pass settings as keywords, e.g. learner=...), "
                            f"got {type(config).__name__}")
        self.config = EnvConfig.with_settings(config, settings)
        check_reference_strategies(self.config.reference_strategies)
        self.dataset = dataset
        self.device = torch.device(self.config.device)
        self.render_mode = self.config.render_mode

        self.modalities = dataset.modalities
        self.budget = self.protocol.per_round
        self.n_candidates = self.config.candidate_count(self.budget)
        # The whole dataset lives on the device once; rounds index into it.
        self.data = device_data(dataset, self.device, self.budget, self.config.precision)
        self._pool = np.asarray(dataset.splits["pool"])
        self.learner = EvidentialLearner(dataset.feature_dims, dataset.n_classes, self.config.learner, self.device)

        self.candidate_columns = candidate_columns(self.modalities)
        self.state_entries = state_entries(self.modalities)
        self.observation_space = observation_space(self.modalities, self.n_candidates)
        self.action_space = CandidateSpace(
            self.n_candidates, lambda: self._action_mask() if self._result is not None else None
        )

        self._labeled: np.ndarray | None = None
        self._round = 0
        self._picks: list[int] = []
        self._picked = np.zeros(self.n_candidates, dtype=bool)
        self._result: RoundResult | None = None
        self._view: CandidateView | None = None
        self._reference: np.ndarray | None = None
        self._pending: tuple | None = None  # what finish() completes: ("reset",) or ("close", before, rows)
        self.episode_seed: int | None = None
        self._weights: torch.Tensor | None = None  # AMCB weights, equal before the first round
        self.last_timings: dict[str, float] = {}
        self.profile = False
        # Called with the info of every closed round, however it was closed (step or label);
        # progress bars and loggers hook in here without wrapping every way an agent plays.
        self.round_callbacks: list = []

    # -- Gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a campaign. ``options={"episode_seed": s}`` replays episode ``s`` exactly.

        Every random draw of an episode comes from one generator seeded by the episode seed,
        itself drawn from the env's ``np_random``; the order of draws does not depend on which
        rows are picked, so all agents given the same seed start from the same labeled set and
        round-0 model and see the same training seeds in later rounds.
        """
        return self._fit_and_finish(self.begin_reset(seed=seed, options=options))

    def step(self, action):
        request = self.begin_step(action)
        return self._fit_and_finish(request) if isinstance(request, FitRequest) else request

    def label(self, rows: Sequence[int]):
        """Close the current round by labeling ``rows`` (dataset row indices) chosen outside the env.

        ``rows`` must be ``per_round`` distinct, unlabeled pool rows, and no pick may be pending
        this round. Returns the same 5-tuple as :meth:`step` for the round's last pick.
        """
        return self._fit_and_finish(self.begin_label(rows))

    def action_masks(self) -> np.ndarray:
        """Boolean mask of allowed picks, as sb3-contrib's ``MaskablePPO`` expects."""
        if self._result is None:
            raise RuntimeError("call reset() before action_masks(): there are no candidates yet")
        return self._action_mask().astype(bool)

    def render(self):
        if self.render_mode != "ansi":
            return None
        return render_ansi(self.dataset, self.protocol, self._round, int(self._labeled.sum()), len(self._picks),
                           self._result)

    # -- the same calls in two phases, around the round's fit -----------------------------------
    def begin_reset(self, *, seed: int | None = None, options: dict | None = None) -> FitRequest:
        """:meth:`reset` up to the first fit (seeds ``np_random``, draws the initial labels)."""
        options = check_reset_options(options)
        super().reset(seed=seed)
        self._start_episode(options)
        return self._fit_request()

    def _start_episode(self, options: dict | None) -> None:
        options = check_reset_options(options)  # also on begin_resume's path
        if "episode_seed" in options:
            self.episode_seed = options["episode_seed"]
        else:
            self.episode_seed = int(self.np_random.integers(2**63 - 1))
        self._episode_rng = np.random.default_rng(self.episode_seed)
        initial = initial_rows(self._episode_rng, self._pool, self.dataset.labels[self._pool],
                               self.protocol.initial_labels, self.config.initial)
        self._labeled, self._held = np.zeros((2, self.dataset.n_samples), dtype=bool)  # held: begin_resume
        self._labeled[initial] = True
        self._n_labeled = int(initial.size)
        self._round = 0
        self._clear_picks()
        self._weights = torch.full((len(self.modalities),), 1.0 / len(self.modalities), device=self.device)
        self.learner.reset(self._draw_seed())
        self._pending = ("reset",)

    def check_action(self, action) -> None:
        """Raise the ValueError :meth:`step` would raise for ``action``, recording nothing."""
        self._require_running()
        self._view.check_pick(action, self._picked)

    def begin_step(self, action) -> FitRequest | tuple:
        """:meth:`step` up to the fit: the step's 5-tuple when the pick does not close the
        round, else the closing round's :class:`FitRequest`."""
        self._require_running()
        self._picks.append(self._view.pick(action, self._picked))
        if len(self._picks) < self.budget:
            return self.observation(), 0.0, False, False, self._get_info(reward_terms={})
        return self._begin_close(self._view.rows[self._picks])

    def begin_label(self, rows: Sequence[int]) -> FitRequest:
        """:meth:`label` up to the fit (checks ``rows``, labels them)."""
        self._require_running()
        if self._picks:
            raise RuntimeError(
                f"{len(self._picks)} candidate(s) already picked this round through step(); "
                f"finish the round with step() before calling label()"
            )
        rows = check_label_rows(rows, self.budget, self.dataset, self._labeled)
        return self._begin_close(rows)

    def finish(self, fit: FitStats, alphas: torch.Tensor | None = None):
        """Score the round with the fit of the last ``begin_*`` request and return what
        ``reset`` (obs, info) or ``step``/``label`` (the 5-tuple) return. ``alphas``: the
        fitted learner's opinions ``(M, N, K)`` on every dataset row, when already computed."""
        if self._pending is None:
            raise RuntimeError("finish() needs a begin_reset(), begin_step() or begin_label() first")
        pending, self._pending = self._pending, None
        self._score(fit, alphas)
        if pending[0] == "reset":
            self._reference = reference_curve(self, self.episode_seed) if self.config.reward == "relative" else None
            return self.observation(), self._get_info(reward_terms={})
        _, before, rows = pending
        reference = float(self._reference[self._round]) if self._reference is not None else None
        reward, terms = round_reward(self.config, self._result, before, reference)
        terminated = self._round >= self.protocol.rounds
        info = self._get_info(terms, rows)
        for callback in self.round_callbacks:
            callback(info)
        return self.observation(), float(reward), terminated, False, info

    # -- round mechanics ----------------------------------------------------------------------
    def _draw_seed(self) -> int:
        return int(self._episode_rng.integers(2**31 - 1))

    def _labeled_rows(self) -> torch.Tensor:
        return torch.as_tensor(np.flatnonzero(self._labeled), device=self.device)

    def _fit_request(self) -> FitRequest:
        """Step 1's inputs (draws the fit seed); the learner trains on known labels only."""
        check_rows_labeled(self.dataset, self.labeled_rows)
        return FitRequest(self.learner, self.data.features, self.data.labels, self._labeled_rows(),
                          self._weights, self._draw_seed())

    def _fit_and_finish(self, r: FitRequest):
        t0 = time.perf_counter()
        fit = r.learner.fit(r.features, r.labels, r.rows, r.weights, r.seed)
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        out = self.finish(fit)
        self.last_timings = {"train_s": t1 - t0, "score_s": time.perf_counter() - t1, **self.last_timings}
        return out

    def _clear_picks(self) -> None:
        self._picks = []
        self._picked[:] = False

    def _score(self, fit: FitStats, alphas: torch.Tensor | None = None) -> None:
        """Steps 2-5 after a fit (draws the k-means seed)."""
        labeled = self._labeled_rows()
        unlabeled = torch.as_tensor(self._pool[~(self._labeled | self._held)[self._pool]], device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(self._draw_seed())
        timings = {} if self.profile else None
        self._result = evaluate_round(self.config, self.budget, self.learner, self.data, labeled, unlabeled,
                                      self._weights, fit, generator, alphas=alphas, timings=timings)
        self._weights = self._result.weights
        self._view = CandidateView.from_round(self._result, self.modalities, self.n_candidates)
        self.last_timings = {}
        if timings is not None:
            self.last_timings = {"infer_s": timings["infer_s"], "cluster_s": timings["cluster_s"],
                                 "candidates_s": timings["score_s"]}

    def _begin_close(self, rows: np.ndarray) -> FitRequest:
        """Label ``rows`` and start the next round, up to its fit."""
        self._pending = ("close", self._result.val.top1, rows)
        self._labeled[rows] = True
        self._n_labeled += int(np.asarray(rows).size)
        self._round += 1
        self._clear_picks()
        return self._fit_request()

    def _require_running(self) -> None:
        if self._result is None:
            raise RuntimeError("call reset() before step() or label()")
        if self._round >= self.protocol.rounds:
            raise RuntimeError(
                f"the episode ended after round {self.protocol.rounds} "
                f"({int(self._labeled.sum())} labels); call reset() to start another"
            )

    # -- observation and info -----------------------------------------------------------------
    def _action_mask(self) -> np.ndarray:
        return self._view.action_mask(self._picked)

    def observation(self) -> dict[str, np.ndarray]:
        """The current observation (as the last ``reset``/``step`` returned it)."""
        return self._view.observation(self._round / self.protocol.rounds,
                                      (self.budget - len(self._picks)) / self.budget, self._picked)

    def _get_info(self, reward_terms: dict[str, float], labeled_rows: np.ndarray | None = None) -> dict[str, Any]:
        return round_info(self._result, self._view, self._round, self._n_labeled, self._action_mask(),
                          reward_terms, labeled_rows)

    def pool_state(self) -> PoolState:
        """What this round measured, for a strategy that chooses rows for :meth:`label`."""
        if self._result is None:
            raise RuntimeError("call reset() before pool_state()")
        return PoolState.from_round(self._result, self._labeled_rows(), self.data, self.learner)

    @property
    def labeled_rows(self) -> np.ndarray:
        """Dataset rows labeled so far in this episode."""
        return np.flatnonzero(self._labeled)

    def describe(self) -> dict[str, Any]:
        """The env's dataset, protocol and configuration, for logging as hyperparameters;
        ``EnvConfig.from_dict(env.describe()) == env.config``."""
        return {"dataset": self.dataset.name, "protocol": asdict(self.protocol), "observation": LAYOUT,
                **self.config.to_dict()}
