"""MultimodalALEnv: one pool-based multimodal active-learning campaign as a Gymnasium env."""

from __future__ import annotations

import functools
import time
import warnings
import weakref
from pathlib import Path
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.learner.trainer import EvidentialLearner, LearnerConfig
from rlmba_env.protocols import Protocol
from rlmba_env.round import (
    STATE_CLIP,
    RoundResult,
    candidate_columns,
    evaluate_round,
    state_entries,
)
from rlmba_env.selection import diversity as diversity_module
from rlmba_env.selection.diversity import DiversitySpace
from rlmba_env.strategies.base import PoolState

REWARDS = ("gain", "relative", "absolute")
INITIAL_SETS = ("random", "stratified")
PRECISIONS = ("float32", "bfloat16")


@dataclass
class DeviceData:
    """A dataset's arrays on one device, built once and shared by every env on that dataset
    and device (the batched vector env's sub-envs, a ``relative`` reward's reference twin).

    With ``precision="float32"`` features keep their storage dtype (float16 stays float16;
    float64 becomes float32) and every consumer converts per chunk. With ``"bfloat16"`` each
    column is centred on its dataset mean and stored in bfloat16 (8 significant bits; centring
    first keeps the rounding relative to a row's deviation, not to a large offset such as
    log-mel energies around -40 dB): half the memory of float32, and the learner's first layer
    and k-means' distance products run as bfloat16 matrix products. Centring changes no
    distance and is absorbed by the learner's own input standardisation. ``diversity`` is step 3's feature space
    (:class:`~rlmba_env.selection.diversity.DiversitySpace`: exact for small pools, randomly
    projected for large pools, see ``DiversitySpace.is_exact``).
    """

    features: dict[str, torch.Tensor]
    diversity: DiversitySpace
    labels: torch.Tensor
    val_rows: torch.Tensor
    test_rows: torch.Tensor


_DEVICE_DATA: dict[tuple, tuple[weakref.ref, weakref.ref]] = {}


def device_data(dataset: MultimodalDataset, device: torch.device, clusters: int,
                precision: str = "float32") -> DeviceData:
    """The :class:`DeviceData` of ``dataset`` on ``device`` for k-means with ``clusters``
    clusters at ``precision``, reused while any env holds it."""
    for key in [k for k, (d, v) in _DEVICE_DATA.items() if d() is None or v() is None]:
        del _DEVICE_DATA[key]
    pool_rows = len(dataset.splits["pool"])
    exact = DiversitySpace.is_exact(pool_rows, clusters)
    key = (id(dataset), str(device), pool_rows, exact, diversity_module.PROJECTION_DIMS, precision)
    if key in _DEVICE_DATA:
        ds_ref, data_ref = _DEVICE_DATA[key]
        data = data_ref()
        if ds_ref() is dataset and data is not None:
            return data
    stored = {}
    for m, x in dataset.features.items():
        t = torch.as_tensor(x, device=device)
        stored[m] = t if t.dtype in (torch.float16, torch.float32) else t.float()
    gemm_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    if precision == "bfloat16" and device.type == "cpu" and cpu_has_bfloat16() is False:
        warnings.warn("precision='bfloat16': this CPU has neither AVX512-BF16 nor AMX, so bfloat16 "
                      "matrix products are emulated and slower than float32; use precision='float32'",
                      stacklevel=3)
    # the diversity space from the stored values, before any rounding to bfloat16
    diversity = DiversitySpace.build(stored, pool_rows, clusters, gemm_dtype=gemm_dtype)
    features = {m: centred_bfloat16(t) for m, t in stored.items()} if precision == "bfloat16" else stored
    del stored
    data = DeviceData(
        features=features,
        diversity=diversity,
        labels=torch.as_tensor(dataset.labels, device=device),
        val_rows=torch.as_tensor(dataset.splits["val"], device=device),
        test_rows=torch.as_tensor(dataset.splits["test"], device=device),
    )
    _DEVICE_DATA[key] = (weakref.ref(dataset), weakref.ref(data))
    return data


@functools.cache
def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); None where the CPU's
    flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def centred_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its column means, in bfloat16, converted in row chunks (no float32 copy)."""
    mean = diversity_module.column_mean(x)
    out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    for lo in range(0, x.shape[0], diversity_module.CHUNK_ROWS):
        out[lo : lo + diversity_module.CHUNK_ROWS] = x[lo : lo + diversity_module.CHUNK_ROWS].float() - mean
    return out


def initial_rows(rng: np.random.Generator, pool: np.ndarray, pool_labels: np.ndarray, n: int,
                 kind: str = "random") -> np.ndarray:
    """The episode's initial labeled rows: ``n`` distinct rows of ``pool`` drawn with ``rng``.

    ``"random"`` (the paper's protocols): uniformly. ``"stratified"``: one row of each class
    first (of ``n`` classes drawn at random when ``n`` is below the class count), then the rest
    uniformly, so that no class starts unseen. It reads the pool's labels, as a seed set drawn
    per class by the annotators would.
    """
    if kind == "random":
        return rng.choice(pool, n, replace=False)
    if kind != "stratified":
        raise ValueError(f"initial must be one of {INITIAL_SETS}, got {kind!r}")
    classes = rng.permutation(np.unique(pool_labels))[:n]
    first = np.array([rng.choice(pool[pool_labels == c]) for c in classes], dtype=pool.dtype)
    rest = rng.choice(np.setdiff1d(pool, first), n - first.size, replace=False)
    return np.concatenate([first, rest])


class CandidateSpace(spaces.Discrete):
    """``Discrete(K)`` whose ``sample()`` draws only the candidates allowed right now.

    A random agent written as ``env.action_space.sample()`` (and the random steps of
    Gymnasium's and SB3's ``check_env``) then never picks a masked candidate. An explicit
    ``mask`` or ``probability`` argument is honoured as in ``Discrete``; a pickled copy (e.g.
    sent from a subprocess env) no longer sees the env and samples like ``Discrete``.
    """

    def __init__(self, n: int, current_mask, seed=None):
        super().__init__(n, seed=seed)
        self._current_mask = current_mask

    def sample(self, mask=None, probability=None):
        if mask is None and probability is None and self._current_mask is not None:
            mask = self._current_mask()
        return super().sample(mask=mask, probability=probability)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_current_mask"] = None
        return state


class MultimodalALEnv(gym.Env):
    """
    ## Description

    One episode is one labeling campaign on a multimodal dataset, following RL-MBA
    ("Label What Matters: Modality-Balanced and Difficulty-Aware Multimodal Active
    Learning", arXiv 2603.25107). The episode starts with ``protocol.initial_labels`` random
    pool rows labeled. Every round an evidential multimodal classifier is trained on the
    labeled rows, the modality weights are rebalanced (AMCB), every unlabeled pool row is
    scored by ``q(x) = sum_m w_m minmax(u_m(x)) + beta minmax(d(x))`` (EFDA uncertainty plus
    k-means diversity), and the ``kappa * b`` best rows form the candidate set. The agent
    picks ``b = protocol.per_round`` of them, one per step; after the b-th pick they are
    labeled, the classifier is retrained and the round's reward is paid.

    ## Action Space

    ``Discrete(K)`` with ``K = kappa * per_round``: the position of a candidate in the current
    candidate set (a ``Discrete`` subclass whose ``sample()`` draws an allowed candidate). A candidate already picked this round, or a padding slot when fewer than
    K unlabeled rows are left, is masked; picking it raises ``ValueError``. The mask is in
    ``obs["action_mask"]``, ``info["action_mask"]`` and ``env.action_masks()`` (for
    sb3-contrib's ``MaskablePPO``).

    ## Observation Space

    A ``Dict`` with three entries; it depends on the number of modalities M but not on feature
    dimensions or class count, so a policy transfers across datasets with the same M.

    ``candidates``: ``Box(0, 1, (K, 2M + 7), float32)``, one row per candidate (padding rows 0):

    | column                  | meaning                                                        |
    |-------------------------|----------------------------------------------------------------|
    | ``uncertainty_<m>``     | evidential uncertainty u_m = K_classes / S_m of modality m     |
    | ``belief_<m>``          | largest belief mass of modality m                              |
    | ``fused_uncertainty``   | EFDA U(x) of the fused opinion, divided by its maximum         |
    | ``conflict``            | Dempster-Shafer conflict between modalities (mean over pairs)  |
    | ``disagreement``        | total-variation distance between modalities' predictions      |
    | ``diversity``           | distance to the nearest k-means centre / largest such distance |
    | ``coverage``            | share of the candidate's cluster labeled or picked this round  |
    | ``score``               | q(x) / max q over the pool                                     |
    | ``picked``              | 1 if picked this round                                         |

    ``state``: ``Box(-10, 10, (6 + 3M + 4,), float32)``:

    | entry                                   | meaning                                          |
    |-----------------------------------------|--------------------------------------------------|
    | ``round_fraction``                      | rounds done / rounds                             |
    | ``picks_left``                          | picks left this round / per_round                |
    | ``val_top1``, ``val_nll``, ``val_ece``  | fused model on the validation split              |
    | ``balance``                             | modality balance in [0, 1] (1 = equal shares)    |
    | ``gap_<m>``                             | val top-1 of modality m minus fused val top-1    |
    | ``weight_<m>``                          | AMCB modality weight (0 outside the fused subset) |
    | ``contribution_<m>``                    | Shapley contribution of m to fused val top-1     |
    | ``mean_fused_uncertainty``              | mean normalised U over the unlabeled pool        |
    | ``mean_diversity``                      | mean normalised d over the unlabeled pool        |
    | ``loss_slope``                          | relative change of the last training loss        |
    | ``log_grad_norm``                       | log(1 + gradient norm) at the end of training    |

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
    - ``learner``: a :class:`~rlmba_env.learner.LearnerConfig` or a dict of its fields.
    - ``reward``: ``"gain"``, ``"relative"`` or ``"absolute"``.
    - ``balance_weight``: lambda of the ``gain`` reward.
    - ``kappa``: candidate set size as a multiple of ``per_round``.
    - ``beta``: weight of diversity in q.
    - ``tau``, ``epsilon``: AMCB softmax temperature and weight floor.
    - ``kmeans_iterations``: Lloyd iterations after k-means++ seeding.
    - ``initial``: ``"random"`` (default) or ``"stratified"``, how the initial labeled rows
      are drawn (see Starting State).
    - ``fusion_subset``: when True (default) the fused opinion keeps only the best nested
      subset of modalities on ``val`` (a modality that does not help gets weight 0; see
      :func:`~rlmba_env.selection.amcb.fusion_subset`); the kept modalities are in
      ``info["fusion_subset"]`` and ``info["fused_<m>"]`` (1 or 0).
    - ``device``: torch device of the classifier and all round computations.
    - ``precision``: ``"float32"`` (default) or ``"bfloat16"``: features held on ``device``
      centred and rounded to bfloat16, the learner's first layer at inference and k-means'
      distance products in bfloat16 (training, scores and the chosen distances stay float32).
      Half the feature memory and, on hardware with native bfloat16 (CPUs with AVX512-BF16 or
      AMX, NVIDIA Ampere or newer), a faster round on large pools; elsewhere slower (the env
      warns on a CPU without either). Results
      differ from float32 by rounding (see ``benchmarks/speed.py``).
    - ``render_mode``: ``None`` or ``"ansi"``.
    - ``reference_strategies``: strategy names whose mean curve the ``relative`` reward subtracts.
    - ``reference_cache``: folder of cached reference curves.

    ``env.unwrapped.label(rows)`` closes a round with an externally chosen batch of dataset
    rows from the whole unlabeled pool (classic strategies, human-in-the-loop labeling).
    ``env.unwrapped.round_callbacks`` is a list of functions called with the ``info`` of every
    closed round, whether it was closed by ``step`` or ``label``.

    ## Speed

    Everything from training to the candidate set runs on ``device``: the features are put there
    once (float16 features stay float16 and are converted per chunk; ``precision="bfloat16"``
    stores them centred in bfloat16), the pool is inferred in large chunks, k-means works in
    chunked matrix products (exact k-means++ for small pools such as AV-Digits', a random
    projection plus a lightweight coreset and batched seeding for large ones; see
    :mod:`rlmba_env.selection.diversity`), and the candidate columns are computed once
    per round, after which a pick only updates the ``coverage`` and ``picked`` columns on the
    host. ``env.unwrapped.last_timings`` holds the last round's ``train_s`` and ``score_s``
    (everything after training); with ``env.unwrapped.profile = True`` also ``infer_s``,
    ``cluster_s`` and ``candidates_s``, the device synchronised at each phase boundary.
    For many envs on one GPU see :class:`rlmba_env.vector.BatchedMultimodalALVectorEnv`.

    ## Version History

    - v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        dataset: MultimodalDataset,
        protocol: Protocol | dict,
        learner: LearnerConfig | dict | None = None,
        reward: str = "gain",
        balance_weight: float = 0.1,
        kappa: int = 5,
        beta: float = 1.0,
        tau: float = 0.1,
        epsilon: float = 0.05,
        kmeans_iterations: int = 5,
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        reference_strategies: Sequence[str] = ("random",),
        reference_cache: str | None = None,
        precision: str = "float32",
        initial: str = "random",
        fusion_subset: bool = True,
    ):
        if not isinstance(dataset, MultimodalDataset):
            raise TypeError(f"dataset must be a MultimodalDataset, got {type(dataset).__name__}")
        self.protocol = Protocol(**protocol) if isinstance(protocol, dict) else protocol
        self.protocol.check_pool(len(dataset.splits["pool"]), dataset.name)
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not isinstance(kappa, int) or kappa < 1:
            raise ValueError(f"kappa must be a positive integer, got {kappa!r}")
        if initial not in INITIAL_SETS:
            raise ValueError(f"initial must be one of {INITIAL_SETS}, got {initial!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}")
        self.dataset = dataset
        self.learner_config = LearnerConfig(**learner) if isinstance(learner, dict) else (learner or LearnerConfig())
        self.reward_type = reward
        self.reference_strategies = tuple(reference_strategies)
        self.reference_cache = reference_cache
        if reward == "relative" and not self.reference_strategies:
            raise ValueError("reward='relative' needs at least one reference strategy")
        self.balance_weight = float(balance_weight)
        self.kappa, self.beta, self.tau, self.epsilon = kappa, float(beta), float(tau), float(epsilon)
        self.kmeans_iterations = int(kmeans_iterations)
        self.device = torch.device(device)
        self.precision = precision
        self.initial = initial
        self.fusion_subset = bool(fusion_subset)
        self.render_mode = render_mode

        self.modalities = dataset.modalities
        self.budget = self.protocol.per_round
        self.n_candidates = kappa * self.budget
        # The whole dataset lives on the device once; rounds index into it.
        self._data = device_data(dataset, self.device, self.budget, precision)
        self._features = self._data.features
        self._diversity = self._data.diversity
        self._labels = self._data.labels
        self._pool = np.asarray(dataset.splits["pool"])
        self._val_rows = self._data.val_rows
        self._test_rows = self._data.test_rows
        self.learner = EvidentialLearner(
            dataset.feature_dims, dataset.n_classes, self.learner_config, self.device
        )

        n_mod = len(self.modalities)
        self.candidate_columns = candidate_columns(self.modalities)
        self.state_entries = state_entries(self.modalities)
        self.observation_space = spaces.Dict(
            {
                "candidates": spaces.Box(0.0, 1.0, (self.n_candidates, len(self.candidate_columns)), np.float32),
                "state": spaces.Box(-STATE_CLIP, STATE_CLIP, (len(self.state_entries),), np.float32),
                "action_mask": spaces.MultiBinary(self.n_candidates),
            }
        )
        assert len(self.candidate_columns) == 2 * n_mod + 7
        self.action_space = CandidateSpace(
            self.n_candidates, lambda: self._action_mask() if self._result is not None else None
        )

        self._labeled: np.ndarray | None = None
        self._round = 0
        self._picks: list[int] = []
        self._picked = np.zeros(self.n_candidates, dtype=bool)
        self._result: RoundResult | None = None
        self._host: _HostRound | None = None
        self._reference: np.ndarray | None = None
        self.episode_seed: int | None = None
        self._weights = torch.full((n_mod,), 1.0 / n_mod, device=self.device)
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
        super().reset(seed=seed)
        self._start_episode(options)
        self._train_and_score()
        return self._finish_reset()

    def step(self, action):
        self._require_running()
        pos = self._check_action(action)
        if not self._record_pick(pos):
            return self._get_obs(), 0.0, False, False, self._get_info(reward_terms={})
        return self._close_round(self._picked_rows())

    def label(self, rows: Sequence[int]):
        """Close the current round by labeling ``rows`` (dataset row indices) chosen outside the env.

        ``rows`` must be ``per_round`` distinct, unlabeled pool rows, and no pick may be pending
        this round. Returns the same 5-tuple as :meth:`step` for the round's last pick.
        """
        self._require_running()
        if self._picks:
            raise RuntimeError(
                f"{len(self._picks)} candidate(s) already picked this round through step(); "
                f"finish the round with step() before calling label()"
            )
        rows = np.asarray(rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"rows must be a 1-D sequence of integer row indices, got {rows.dtype} {rows.shape}")
        if rows.size != self.budget:
            raise ValueError(f"label() needs exactly per_round={self.budget} rows, got {rows.size}")
        if np.unique(rows).size != rows.size:
            raise ValueError("label() got the same row more than once")
        in_pool = np.isin(rows, self._pool)
        if not in_pool.all():
            raise ValueError(f"row {int(rows[~in_pool][0])} is not in the dataset's pool split")
        already = self._labeled[rows]
        if already.any():
            raise ValueError(f"row {int(rows[already][0])} is already labeled")
        return self._close_round(rows)

    def action_masks(self) -> np.ndarray:
        """Boolean mask of allowed picks, as sb3-contrib's ``MaskablePPO`` expects."""
        return self._action_mask().astype(bool)

    def render(self):
        if self.render_mode != "ansi":
            return None
        r = self._result
        lines = [
            f"{self.dataset.name}: round {self._round}/{self.protocol.rounds}, "
            f"{int(self._labeled.sum())} labeled, picks {len(self._picks)}/{self.budget}",
            f"  val top-1 {r.val.top1:.3f} (" + ", ".join(f"{m} {v:.3f}" for m, v in r.val.top1_modality.items())
            + f"), test top-1 {r.test.top1:.3f}",
            "  weights " + ", ".join(f"{m} {w:.2f}" for m, w in zip(self.modalities, r.weights_list))
            + "; contributions " + ", ".join(f"{m} {c:+.3f}" for m, c in r.contributions.items())
            + f"; balance {r.balance:.2f}",
        ]
        encoders = self.dataset.meta.get("encoders")
        if encoders:
            lines.append("  encoders " + ", ".join(f"{m}: {e}" for m, e in encoders.items()))
        return "\n".join(lines)

    # -- round mechanics ----------------------------------------------------------------------
    def _reference_curve(self) -> np.ndarray:
        from rlmba_env.reference import reference_curve

        return reference_curve(self, self.episode_seed)

    def _draw_seed(self) -> int:
        return int(self._episode_rng.integers(2**31 - 1))

    def _labeled_rows(self) -> torch.Tensor:
        return torch.as_tensor(np.flatnonzero(self._labeled), device=self.device)

    def _start_episode(self, options: dict | None) -> None:
        """Everything ``reset`` does before the first fit (after seeding ``np_random``)."""
        options = options or {}
        if "episode_seed" in options:
            self.episode_seed = int(options["episode_seed"])
        else:
            self.episode_seed = int(self.np_random.integers(2**63 - 1))
        self._episode_rng = np.random.default_rng(self.episode_seed)
        initial = initial_rows(self._episode_rng, self._pool, self.dataset.labels[self._pool],
                               self.protocol.initial_labels, self.initial)
        self._labeled = np.zeros(self.dataset.n_samples, dtype=bool)
        self._labeled[initial] = True
        self._n_labeled = int(initial.size)
        self._round = 0
        self._clear_picks()
        self._weights = torch.full((len(self.modalities),), 1.0 / len(self.modalities), device=self.device)
        self.learner.reset(self._draw_seed())

    def _finish_reset(self):
        """Everything ``reset`` does after the first round is scored."""
        self._reference = self._reference_curve() if self.reward_type == "relative" else None
        return self._get_obs(), self._get_info(reward_terms={})

    def _record_pick(self, pos: int) -> bool:
        """Record a checked pick; True when it is the round's last."""
        self._picks.append(pos)
        self._picked[pos] = True
        self._pick_into_obs(pos)
        return len(self._picks) >= self.budget

    def _clear_picks(self) -> None:
        self._picks = []
        self._picked[:] = False

    def _picked_rows(self) -> np.ndarray:
        return self._host.rows[self._picks]

    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _train_and_score(self) -> None:
        t0 = time.perf_counter()
        fit = self._fit()
        self._sync()
        t1 = time.perf_counter()
        self._score(fit)
        self.last_timings = {"train_s": t1 - t0, "score_s": time.perf_counter() - t1, **self.last_timings}

    def _fit(self):
        """Step 1: train the learner on the labeled rows (draws the fit seed)."""
        labeled = self._labeled_rows()
        return self.learner.fit(self._features, self._labels, labeled, self._weights, self._draw_seed())

    def _score(self, fit, alphas: torch.Tensor | None = None) -> None:
        """Steps 2-5 after a fit (draws the k-means seed); ``alphas``: the learner's opinions
        on every row when already computed."""
        labeled = self._labeled_rows()
        unlabeled = torch.as_tensor(self._pool[~self._labeled[self._pool]], device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(self._draw_seed())
        timings = {} if self.profile else None
        self._result = evaluate_round(
            self.learner, self._features, self._diversity, self._labels,
            self._val_rows, self._test_rows, unlabeled, labeled, self._weights, fit,
            self.budget, self.n_candidates, self.beta, self.tau, self.epsilon,
            self.kmeans_iterations, generator, alphas=alphas, timings=timings,
            fusion_subset=self.fusion_subset,
        )
        self._weights = self._result.weights
        self._host = _HostRound.from_result(self._result)
        self._start_round_obs()
        self.last_timings = {}
        if timings is not None:
            self.last_timings = {"infer_s": timings["infer_s"], "cluster_s": timings["cluster_s"],
                                 "candidates_s": timings["score_s"]}

    def _begin_close(self, rows: np.ndarray) -> float:
        """Label ``rows`` and start the next round; returns the val top-1 before it."""
        before = self._result.val.top1
        self._labeled[rows] = True
        self._n_labeled += int(np.asarray(rows).size)
        self._round += 1
        self._clear_picks()
        return before

    def _close_round(self, rows: np.ndarray):
        before = self._begin_close(rows)
        self._train_and_score()
        return self._finish_close(before, rows)

    def _finish_close(self, before: float, rows: np.ndarray):
        """Reward, termination, observation and info of the round just scored."""
        r = self._result
        if self.reward_type == "gain":
            terms = {"top1_gain": r.val.top1 - before, "balance": r.balance,
                     "balance_weight": self.balance_weight}
            reward = terms["top1_gain"] + self.balance_weight * r.balance
        elif self.reward_type == "relative":
            reference = float(self._reference[self._round])
            terms = {"top1": r.val.top1, "reference_top1": reference}
            reward = r.val.top1 - reference
        else:
            terms = {"top1": r.val.top1}
            reward = r.val.top1
        terminated = self._round >= self.protocol.rounds
        info = self._get_info(terms, rows)
        for callback in self.round_callbacks:
            callback(info)
        return self._get_obs(), float(reward), terminated, False, info

    def _require_running(self) -> None:
        if self._result is None:
            raise RuntimeError("call reset() before step() or label()")
        if self._round >= self.protocol.rounds:
            raise RuntimeError(
                f"the episode ended after round {self.protocol.rounds} "
                f"({int(self._labeled.sum())} labels); call reset() to start another"
            )

    def _check_action(self, action) -> int:
        a = np.asarray(action)
        if a.size != 1 or not (np.issubdtype(a.dtype, np.integer) or
                               (np.issubdtype(a.dtype, np.floating) and float(a) == int(a))):
            raise ValueError(f"action must be one integer candidate position, got {action!r}")
        pos = int(a.reshape(()))
        if not 0 <= pos < self.n_candidates:
            raise ValueError(f"action {pos} is out of range: candidates are 0..{self.n_candidates - 1}")
        if self._picked[pos]:
            raise ValueError(
                f"candidate {pos} was already picked this round (mask it: obs['action_mask'][{pos}] == 0)"
            )
        if pos >= self._result.candidates.shape[0]:
            raise ValueError(
                f"candidate {pos} is a padding slot: only {self._result.candidates.shape[0]} "
                f"unlabeled rows are left (obs['action_mask'][{pos}] == 0)"
            )
        return pos

    # -- observation and info -----------------------------------------------------------------
    def _action_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_candidates, dtype=np.int8)
        mask[: self._host.rows.shape[0]] = 1
        mask[self._picked] = 0
        return mask

    def _start_round_obs(self) -> None:
        """The ``candidates`` observation at round start, on the host; picks update it in place."""
        h = self._host
        cols = self.candidate_columns
        self._coverage_col, self._picked_col = cols.index("coverage"), cols.index("picked")
        self._obs_candidates = np.zeros((self.n_candidates, len(cols)), dtype=np.float32)
        self._obs_candidates[: h.rows.shape[0]] = h.features
        self._picked_per_cluster = np.zeros_like(h.cluster_size)
        self._obs_candidates[: h.rows.shape[0], self._coverage_col] = self._coverage(h.cluster)

    def _coverage(self, clusters: np.ndarray) -> np.ndarray:
        """Share of each of ``clusters`` labeled before or picked in this round."""
        h = self._host
        covered = h.cluster_labeled[clusters] + self._picked_per_cluster[clusters]
        return np.clip(covered / np.maximum(h.cluster_labeled[clusters] + h.cluster_size[clusters], 1), 0, 1)

    def _pick_into_obs(self, pos: int) -> None:
        """A pick changes only its picked flag and the coverage of its cluster's candidates."""
        h = self._host
        self._picked_per_cluster[h.cluster[pos]] += 1.0
        self._obs_candidates[pos, self._picked_col] = 1.0
        same = np.flatnonzero(h.cluster == h.cluster[pos])
        self._obs_candidates[same, self._coverage_col] = self._coverage(h.cluster[same])

    def _get_obs(self) -> dict[str, np.ndarray]:
        # From the round's host copy, updated per pick: no device work or transfer per step.
        state = self._host.state.copy()
        state[0] = self._round / self.protocol.rounds
        state[1] = (self.budget - len(self._picks)) / self.budget
        return {"candidates": self._obs_candidates.copy(), "state": state, "action_mask": self._action_mask()}

    def _get_info(self, reward_terms: dict[str, float], labeled_rows: np.ndarray | None = None) -> dict[str, Any]:
        r = self._result
        info = {
            "round": self._round,
            "labeled": self._n_labeled,
            "action_mask": self._action_mask(),
            "candidate_rows": self._host.rows.copy(),
            "top1": r.val.top1,
            "nll": r.val.nll,
            "ece": r.val.ece,
            "balance": r.balance,
            "test_top1": r.test.top1,
            "reward_terms": dict(reward_terms),
        }
        for m in self.modalities:
            info[f"top1_{m}"] = r.val.top1_modality[m]
            info[f"test_top1_{m}"] = r.test.top1_modality[m]
            info[f"contribution_{m}"] = r.contributions[m]
        for m, w in zip(self.modalities, r.weights_list):
            info[f"weight_{m}"] = w
            info[f"fused_{m}"] = float(w > 0)
        info["fusion_subset"] = tuple(m for m, w in zip(self.modalities, r.weights_list) if w > 0)
        if labeled_rows is not None:
            info["labeled_rows"] = np.array(labeled_rows)
        return info

    def pool_state(self) -> PoolState:
        """What this round measured, for a strategy that chooses rows for :meth:`label`."""
        if self._result is None:
            raise RuntimeError("call reset() before pool_state()")
        r = self._result
        labeled = self._labeled_rows()
        return PoolState(
            unlabeled=r.pool_rows,
            labeled=labeled,
            labeled_labels=self._labels[labeled],
            features=self._features,
            learner=self.learner,
            alphas=r.pool_alphas,
            fused_alpha=r.pool_fused_alpha,
            weights=r.weights,
            contributions=r.contribution_tensor,
            score=r.pool_score,
            fusion=self.learner_config.fusion,
        )

    @property
    def labeled_rows(self) -> np.ndarray:
        """Dataset rows labeled so far in this episode."""
        return np.flatnonzero(self._labeled)

    def describe(self) -> dict[str, Any]:
        """The env's configuration, for logging as hyperparameters."""
        return {
            "dataset": self.dataset.name,
            "protocol": asdict(self.protocol),
            "learner": asdict(self.learner_config),
            "reward": self.reward_type,
            "reference_strategies": list(self.reference_strategies),
            "balance_weight": self.balance_weight,
            "kappa": self.kappa,
            "beta": self.beta,
            "tau": self.tau,
            "epsilon": self.epsilon,
            "device": str(self.device),
            "precision": self.precision,
            "initial": self.initial,
            "fusion_subset": self.fusion_subset,
        }


@dataclass
class _HostRound:
    """The round's candidate set on the host, copied once per round."""

    rows: np.ndarray
    features: np.ndarray
    cluster: np.ndarray
    cluster_labeled: np.ndarray
    cluster_size: np.ndarray
    state: np.ndarray

    @classmethod
    def from_result(cls, r: RoundResult) -> "_HostRound":
        return cls(
            rows=r.candidates.cpu().numpy(),
            features=r.candidate_features.cpu().numpy(),
            cluster=r.candidate_cluster.cpu().numpy(),
            cluster_labeled=r.cluster_labeled.cpu().numpy(),
            cluster_size=r.cluster_size.cpu().numpy(),
            state=r.state.cpu().numpy(),
        )
