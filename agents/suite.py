"""Training over a suite of environments: one env spec sampled per episode.

A policy meant for datasets it has never seen is trained across several (the RL-MBA paper,
arXiv 2603.25107, learns one policy per dataset; layout v2 of the observation makes one
policy fit any dataset). An env spec is ``ENV_ID`` or ``ENV_ID:NAME`` for the development
suite (``RLMBA-DevSuite-v0:webkb``), e.g.::

    --suite RLMBA-AVDigits-v0 RLMBA-Synthetic-v0 RLMBA-DevSuite-v0:webkb RLMBA-DevSuite-v0:mnist4

:class:`Suite` builds each env once, on first use; :class:`SuiteEnv` is one Gymnasium env over
it that draws each episode's env at ``reset`` from its ``np_random``, so ``reset(seed=s)``
fixes the sequence of datasets as well as the episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.envs import make_env


@dataclass(frozen=True)
class EnvSpec:
    """One environment of a suite."""

    env_id: str
    """Gymnasium id"""
    name: str | None = None
    """development-suite dataset name (``RLMBA-DevSuite-v0`` only)"""

    @property
    def label(self) -> str:
        return self.env_id if self.name is None else f"{self.env_id}:{self.name}"


def parse_spec(text: str) -> EnvSpec:
    """``ENV_ID`` or ``ENV_ID:NAME`` -> :class:`EnvSpec` (the id must be registered)."""
    env_id, _, name = text.partition(":")
    if env_id not in gym.registry:
        raise ValueError(f"env spec {text!r}: {env_id!r} is not a registered id; "
                         f"rlmba ids: {sorted(k for k in gym.registry if k.startswith('RLMBA-'))}")
    if name and env_id != "RLMBA-DevSuite-v0":
        raise ValueError(f"env spec {text!r}: only RLMBA-DevSuite-v0 takes a dataset name (ENV_ID:NAME)")
    if env_id == "RLMBA-DevSuite-v0" and not name:
        raise ValueError(f"env spec {text!r}: RLMBA-DevSuite-v0 needs a dataset, e.g. RLMBA-DevSuite-v0:webkb")
    return EnvSpec(env_id, name or None)


def make_suite_training_env(specs: list[str], torch_threads: int | None = None, **env_kwargs: Any) -> "SuiteEnv":
    """A :class:`SuiteEnv` over ``specs`` (importable at module level for ``SubprocVecEnv``)."""
    return SuiteEnv(Suite(specs, torch_threads=torch_threads, **env_kwargs))


def make_suite_env(spec: EnvSpec, torch_threads: int | None = None, **env_kwargs: Any) -> gym.Env:
    """The env of one spec, with ``env_kwargs`` (JSON ``--env-kwargs``) applied to it."""
    if spec.name is not None:
        env_kwargs = {**env_kwargs, "name": spec.name}
    return make_env(spec.env_id, torch_threads=torch_threads, **env_kwargs)


class Suite:
    """Envs of several specs, each built once, on first use."""

    def __init__(self, specs: list[str] | list[EnvSpec], torch_threads: int | None = None, **env_kwargs: Any):
        if not specs:
            raise ValueError("a suite needs at least one env spec")
        self.specs = [s if isinstance(s, EnvSpec) else parse_spec(s) for s in specs]
        self.env_kwargs, self.torch_threads = env_kwargs, torch_threads
        self._envs: dict[EnvSpec, gym.Env] = {}

    def env(self, spec: EnvSpec) -> gym.Env:
        if spec not in self._envs:
            self._envs[spec] = make_suite_env(spec, self.torch_threads, **self.env_kwargs)
        return self._envs[spec]

    def sample(self, rng: np.random.Generator) -> tuple[EnvSpec, gym.Env]:
        """A spec drawn uniformly with ``rng``, and its env."""
        spec = self.specs[int(rng.integers(len(self.specs)))]
        return spec, self.env(spec)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class SuiteEnv(gym.Env):
    """One Gymnasium env over a :class:`Suite`: every ``reset`` draws the episode's env
    uniformly from ``np_random`` (seeded by ``reset(seed=...)``), then resets it with the same
    arguments.

    The observation layout (v2) is the same for every dataset except the candidate count
    ``K`` (``kappa * b`` or one batch per portfolio proposer, b = per_round), so candidates and
    the action mask are padded to the suite's largest ``K`` with masked, all-zero rows: the
    spaces are fixed, as SB3 needs. ``unwrapped``-style attributes of the current env
    (``modalities``, ``candidate_columns``, ``budget``, ...) are forwarded.
    """

    metadata = {"render_modes": []}

    def __init__(self, suite: Suite):
        self.suite = suite
        envs = [suite.env(spec) for spec in suite.specs]
        spaces_ = [e.observation_space for e in envs]
        widths = {s["candidates"].shape[1] for s in spaces_}
        states = {s["state"].shape for s in spaces_}
        if len(widths) != 1 or len(states) != 1:
            raise ValueError(f"the suite's envs disagree on the observation layout: candidate columns "
                             f"{sorted(widths)}, state shapes {sorted(states)}")
        self.max_candidates = max(s["candidates"].shape[0] for s in spaces_)
        first = spaces_[0]
        self.observation_space = gym.spaces.Dict({
            "candidates": gym.spaces.Box(0.0, 1.0, (self.max_candidates, widths.pop()), np.float32),
            "state": first["state"],
            "action_mask": gym.spaces.MultiBinary(self.max_candidates),
        })
        self.action_space = gym.spaces.Discrete(self.max_candidates)
        self.spec_label: str | None = None
        # no position to resume from: a resumed suite run draws a new, still seeded, sequence
        self.episode_position: dict | None = None
        self.current: gym.Env = envs[0]  # until the first reset, for its attributes

    def __getattr__(self, name):
        if name.startswith("_") or "current" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.current.unwrapped, name)

    def _pad(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        k = obs["candidates"].shape[0]
        cand = np.zeros(self.observation_space["candidates"].shape, dtype=np.float32)
        cand[:k] = obs["candidates"]
        mask = np.zeros(self.max_candidates, dtype=np.int8)
        mask[:k] = obs["action_mask"]
        return {"candidates": cand, "state": obs["state"], "action_mask": mask}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        spec, self.current = self.suite.sample(self.np_random)
        self.spec_label = spec.label
        obs, info = self.current.reset(seed=seed, options=options)
        return self._pad(obs), {**info, "env_spec": spec.label}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.current.step(action)
        return self._pad(obs), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        mask = np.zeros(self.max_candidates, dtype=bool)
        inner = self.current.unwrapped.action_masks()
        mask[: inner.size] = inner
        return mask

    def close(self) -> None:
        self.suite.close()
