"""Building the environments that the agents train and evaluate on.

- :func:`make_env`: ``gym.make`` for an rlmba id, importable at module level so that
  ``SubprocVecEnv`` workers started with ``spawn`` can unpickle it, and optionally limiting the
  worker's torch to ``torch_threads`` threads (:func:`set_torch_threads`).
- :func:`set_torch_threads`: every script's ``--torch-threads``, 1 by default. The classifier
  fits are small: an AV-Digits episode took 2.6-5.9x longer with 2 threads than with 1 on two
  busy cores, and with several envs or workers each default thread pool competes with the
  others for the same cores (10-50x slower fits).
- :class:`ResumableEpisodes`: remembers where an env's sequence of episodes stands, so that a
  resumed training run (``train_ppo.py --resume``) continues the sequence instead of replaying
  it from its first episode.
- :class:`TopBPickWrapper`: lets algorithms without action masking (plain SB3 ``PPO``, SAC, ...)
  play the env. The action becomes ``Box(-1e6, 1e6, (K,))``, one score per candidate; the
  wrapper picks the highest-scoring *allowed* candidate (or the ``picks_per_step`` best ones,
  stopping at the end of a round), so a masked candidate is never picked. Pair it with
  :class:`agents.policies.SetActorCriticPolicy`.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding

import rlmba_env  # noqa: F401  (registers the env ids)
from rlmba_env.checks import check_int

SCORE_BOUND = 1e6


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def parse_env_kwargs(text: str | dict, device: str | None = None) -> dict[str, Any]:
    """``--env-kwargs`` JSON -> dict, with the classifier's ``device`` filled in when absent."""
    kwargs = json.loads(text) if isinstance(text, str) else dict(text)
    if not isinstance(kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {text!r}")
    if device is not None:
        kwargs.setdefault("device", device)
    kwargs.setdefault("render_mode", None)  # make_vec_env would ask for rgb_array otherwise
    return kwargs


def set_torch_threads(threads: int) -> None:
    """This process's torch threads: ``threads`` if positive, torch's default if 0."""
    if check_int("--torch-threads", threads, 0) > 0:
        torch.set_num_threads(threads)


def make_env(env_id: str, torch_threads: int | None = None, resumable: bool = False, **env_kwargs) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``; first sets this process's torch threads if given;
    wrapped in :class:`ResumableEpisodes` if ``resumable``."""
    if torch_threads is not None:
        set_torch_threads(torch_threads)
    env = gym.make(env_id, **env_kwargs)
    return ResumableEpisodes(env) if resumable else env


class ResumableEpisodes(gym.Wrapper):
    """Keeps where the env's sequence of episodes stands, so that training can resume it.

    The env draws each episode's seed from its ``np_random`` at ``reset``.
    ``episode_position`` is that generator's state just before the current episode's draw (a
    JSON-able dict); :meth:`resume_at` makes the next ``reset``, whatever seed it is given,
    draw from such a position: the episode in progress when a checkpoint was written starts
    again and the sequence goes on exactly as in the uninterrupted run. A seeded ``reset``
    seeds ``np_random`` as ``gym.Env.reset`` does.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.episode_position: dict | None = None
        self._resume: dict | None = None

    def resume_at(self, position: dict) -> None:
        self._resume = position

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        base = self.env.unwrapped
        if self._resume is not None:
            generator = np.random.Generator(getattr(np.random, self._resume["bit_generator"])())
            generator.bit_generator.state = self._resume
            base.np_random, self._resume = generator, None
        elif seed is not None:
            base.np_random, _ = seeding.np_random(seed)
        self.episode_position = base.np_random.bit_generator.state
        return self.env.reset(options=options)


class TopBPickWrapper(gym.Wrapper):
    """Score-vector actions for algorithms without action masking.

    ## Action Space
    ``Box(-1e6, 1e6, (K,), float32)``: a score per candidate position. The wrapper picks the
    allowed candidate with the highest score (ties: the lower position, i.e. the better q),
    then, if ``picks_per_step > 1``, the next best, up to ``picks_per_step`` picks or the end
    of the round, whichever comes first.

    ## Observation Space, Rewards, Episode End
    Those of the wrapped env; the reward of a step is the sum over its picks, ``info`` is the
    last pick's, with ``info["picks"]`` listing the candidate positions picked.
    """

    def __init__(self, env: gym.Env, picks_per_step: int = 1):
        super().__init__(env)
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"TopBPickWrapper needs a Discrete(K) action space, got {env.action_space}")
        if picks_per_step < 1:
            raise ValueError(f"picks_per_step must be >= 1, got {picks_per_step}")
        self.picks_per_step = int(picks_per_step)
        k = int(env.action_space.n)
        # Finite bounds because SB3 asks for them; scores are compared, never scaled.
        self.action_space = spaces.Box(-SCORE_BOUND, SCORE_BOUND, (k,), np.float32)
        self._mask: np.ndarray | None = None
        self._round = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._mask = np.asarray(obs["action_mask"], dtype=bool)
        self._round = info.get("round")
        return obs, info

    def step(self, action):
        if self._mask is None:
            raise RuntimeError("call reset() before step()")
        scores = np.asarray(action, dtype=np.float64).reshape(-1)
        if scores.shape != (self.action_space.shape[0],):
            raise ValueError(f"action must hold {self.action_space.shape[0]} scores, got shape {np.shape(action)}")
        total, picks = 0.0, []
        for _ in range(self.picks_per_step):
            pos = best_allowed(scores, self._mask)
            obs, reward, terminated, truncated, info = self.env.step(pos)
            total += float(reward)
            picks.append(pos)
            self._mask = np.asarray(obs["action_mask"], dtype=bool)
            round_ended = info.get("round") != self._round
            self._round = info.get("round")
            if terminated or truncated or round_ended:
                break
        info = dict(info, picks=picks)
        return obs, total, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()


def best_allowed(scores: np.ndarray, mask: np.ndarray) -> int:
    """Position of the highest score among allowed candidates (first one on ties)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("no candidate is allowed (action_mask is all 0)")
    s = np.where(mask, np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf), -np.inf)
    best = np.flatnonzero(mask & (s == s[mask].max()))
    return int(best[0])
