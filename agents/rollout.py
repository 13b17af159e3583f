"""Playing episodes with an agent and measuring them (final test top-1, balance, AULC).

An *agent* is anything with ``act(obs) -> int`` returning an allowed candidate position:
:class:`RandomAgent`, :class:`FirstAgent` (always the best-scored candidate: RL-MBA's top-b by
q without a policy), :class:`SB3Agent` (a trained SB3 model) and
:class:`agents.reinforce.ReinforceAgent`.

The area under the learning curve (AULC) is the trapezoid area under test top-1 against the
number of labels, from the initial labels to the last round, divided by that label span: the
mean test top-1 over the campaign, in [0, 1].
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

from agents.envs import best_allowed
from agents.summary import aulc
from agents.tracking import episode_scalars
from rlmba_env.strategies.runner import round_record


class Agent(Protocol):
    def act(self, obs: dict[str, np.ndarray]) -> int: ...


class RandomAgent:
    """Picks a uniformly random allowed candidate."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def act(self, obs) -> int:
        return int(self.rng.choice(np.flatnonzero(obs["action_mask"])))


class FirstAgent:
    """Always picks the first allowed candidate: candidates come sorted by q, so a round labels
    the top-b by q (RL-MBA's score without a policy)."""

    def act(self, obs) -> int:
        return int(np.flatnonzero(obs["action_mask"])[0])


class SB3Agent:
    """A trained SB3 model as an agent. Calls the policy's distribution directly rather than
    ``model.predict``, so a set policy also runs on envs with another candidate count K.
    Score-vector (``Box``) policies pick the best allowed candidate, as
    :class:`agents.envs.TopBPickWrapper` does with ``picks_per_step=1``."""

    def __init__(self, model, deterministic: bool = True):
        from agents.policies import SetActorCriticHead, set_dims

        self.model = model
        self.policy = model.policy
        self.deterministic = deterministic
        self.policy.set_training_mode(False)
        self.is_set = isinstance(self.policy.mlp_extractor, SetActorCriticHead)
        self.maskable = isinstance(self.policy, MaskableActorCriticPolicy)
        self._dims = set_dims(self.policy.observation_space) if self.is_set else None

    def check_env(self, observation_space: spaces.Dict) -> None:
        """Raises ``ValueError`` if this policy cannot read ``observation_space``."""
        trained = self.policy.observation_space
        if self.is_set:
            from agents.policies import set_dims

            if set_dims(observation_space) != self._dims:
                raise ValueError(
                    f"the policy was trained on candidates with {self._dims[0]} features and a state of "
                    f"{self._dims[1]}; this env has {set_dims(observation_space)}: the policy was trained "
                    f"on another observation layout (the current one, v2, does not depend on the dataset)"
                )
        elif any(observation_space[k].shape != trained[k].shape for k in ("candidates", "state", "action_mask")):
            raise ValueError(
                f"the 'mlp' policy was trained on observations {trained}; this env's are {observation_space}. "
                f"Only the set policy ('--policy set') transfers across candidate counts; use the same "
                f"candidate count (env.n_candidates), or train a set policy"
            )

    def act(self, obs) -> int:
        device = self.policy.device
        obs_t = {k: torch.as_tensor(np.asarray(obs[k])[None], device=device)
                 for k in ("candidates", "state", "action_mask")}
        mask = np.asarray(obs["action_mask"], dtype=bool)
        with torch.no_grad():
            if self.is_set:
                scores = self.policy.candidate_scores(obs_t)[0]
                if not self.deterministic:
                    if self.maskable:
                        return int(torch.distributions.Categorical(logits=scores).sample())
                    scores = scores + torch.randn_like(scores) * self.policy.log_std.exp()
                return best_allowed(scores.cpu().numpy(), mask)
            if self.maskable:
                dist = self.policy.get_distribution(obs_t, action_masks=mask[None])
            else:
                dist = self.policy.get_distribution(obs_t)
            action = dist.get_actions(deterministic=self.deterministic).cpu().numpy()[0]
        if np.ndim(action) == 0:
            return int(action)
        return best_allowed(action, mask)


@dataclass
class EpisodeResult:
    """One played episode: the learning curve and the final round's ``info``."""

    seed: int | None
    episodic_return: float = 0.0
    labeled: list[int] = field(default_factory=list)
    test_top1: list[float] = field(default_factory=list)
    reward_terms: dict[str, list[float]] = field(default_factory=dict)
    final_info: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    """one :func:`~rlmba_env.strategies.runner.round_record` per round (round 0 first), as the
    evaluation harness writes them; ``select_s`` is the agent's thinking time in that round"""

    @property
    def final_top1(self) -> float:
        return float(self.test_top1[-1])

    @property
    def balance(self) -> float:
        return float(self.final_info["balance"])

    @property
    def aulc(self) -> float:
        return float(aulc(self.labeled, self.test_top1))

    def scalars(self, modalities: tuple[str, ...]) -> dict[str, float]:
        """End-of-episode scalars under agents/tracking.py's tags, plus ``test/aulc``."""
        out = episode_scalars(self.final_info, modalities)
        out["charts/episodic_return"] = self.episodic_return
        out["test/aulc"] = self.aulc
        for key, values in self.reward_terms.items():
            out[f"reward/{key}"] = float(np.mean(values))
        return out


class EpisodeRecorder:
    """Accumulates an :class:`EpisodeResult` from ``reset`` and ``step`` returns."""

    def __init__(self, seed: int | None, info: dict[str, Any], modalities: tuple[str, ...]):
        self.modalities = tuple(modalities)
        self.result = EpisodeResult(seed=seed, labeled=[info["labeled"]], test_top1=[info["test_top1"]],
                                    rows=[round_record(info, self.modalities, 0.0)], final_info=info)
        self._select_s = 0.0

    def step(self, reward: float, info: dict[str, Any], select_s: float = 0.0) -> None:
        """Record one step; ``select_s`` is the time the agent took to choose its pick."""
        r = self.result
        r.steps += 1
        r.episodic_return += float(reward)
        self._select_s += select_s
        if info.get("reward_terms"):
            r.labeled.append(info["labeled"])
            r.test_top1.append(info["test_top1"])
            r.rows.append(round_record(info, self.modalities, self._select_s))
            self._select_s = 0.0
            for key, value in info["reward_terms"].items():
                if key != "balance_weight":  # a constant, already in the hyperparameters
                    r.reward_terms.setdefault(key, []).append(float(value))
        r.final_info = info


RoundHook = Callable[[list[dict[str, np.ndarray]], list[int], float], None]
"""called at the end of each round with its observations, its picks and its reward"""


def play_episode(env: gym.Env, act: Callable[[dict[str, np.ndarray]], int], seed: int | None = None,
                 on_round_end: RoundHook | None = None) -> EpisodeResult:
    """Play one episode from ``env.reset(seed=seed)``, picking with ``act(obs)``; after every
    round, ``on_round_end(observations, picks, reward)`` of that round (an online learner's update)."""
    obs, info = env.reset(seed=seed)
    recorder = EpisodeRecorder(seed, info, env.unwrapped.modalities)
    round_obs, round_picks = [], []
    done = False
    while not done:
        start = time.perf_counter()
        pick = act(obs)
        select_s = time.perf_counter() - start
        round_obs.append(obs)
        round_picks.append(pick)
        obs, reward, terminated, truncated, info = env.step(pick)
        recorder.step(reward, info, select_s)
        if info.get("reward_terms"):  # the round ended and paid its reward
            if on_round_end is not None:
                on_round_end(round_obs, round_picks, reward)
            round_obs, round_picks = [], []
        done = terminated or truncated
    return recorder.result


def play_episodes(env: gym.Env, agent: Agent, seeds) -> list[EpisodeResult]:
    """One episode of ``agent.act`` per seed."""
    return [play_episode(env, agent.act, int(s)) for s in seeds]


def summarize(results: list[EpisodeResult]) -> dict[str, float]:
    """Mean and std over episodes of final test top-1, balance, AULC and return."""
    out = {}
    for name, values in (
        ("top1", [r.final_top1 for r in results]),
        ("balance", [r.balance for r in results]),
        ("aulc", [r.aulc for r in results]),
        ("return", [r.episodic_return for r in results]),
    ):
        out[name] = float(np.mean(values))
        out[f"{name}_std"] = float(np.std(values))
    return out


EVAL_SEED = 10_000
"""First held-out seed of evaluation episodes; training uses seeds far below it."""
