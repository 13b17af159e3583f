"""Many RL-MBA environments on one device, their classifiers trained as one batched model.

:class:`BatchedMultimodalALVectorEnv` runs ``n_envs`` copies of
:class:`~rlmba_env.env.MultimodalALEnv` (arXiv 2603.25107) on one dataset and device. Each
sub-env keeps its own labeled set, episode RNG, modality weights and learner, exactly as a
single env; what is shared is the work. When sub-envs close a round (or reset) on the same
step, their evidential classifiers are trained together as one batched model and the whole
dataset is inferred for all of them with one matrix product per chunk
(:func:`~rlmba_env.learner.trainer.fit_learners` and
:func:`~rlmba_env.learner.trainer.predict_learners`, whose one-learner case is the single
env's fit). Each learner follows exactly its own gradient and draws its initialisation,
dropout masks and minibatch order from its own seed, so a sub-env replays the single env with
the same seed (tests/test_vector.py checks labeled sets and accuracies against
``MultimodalALEnv``; batched products round differently from unbatched ones, so equal up to
float rounding).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from rlmba_env.config import EnvConfig
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.env import MultimodalALEnv
from rlmba_env.learner.trainer import FitRequest, fit_learners, predict_learners
from rlmba_env.protocols import Protocol


class BatchedMultimodalALVectorEnv(VectorEnv):
    """
    ## Description

    ``n_envs`` independent RL-MBA campaigns (:class:`~rlmba_env.env.MultimodalALEnv`) on one
    dataset and one device, as a Gymnasium 1.x vector env. The sub-envs' classifiers are
    trained as one batched model whenever several of them close a round (or reset) on the same
    step, which is every step in lockstep play; everything else (AMCB, EFDA, k-means, the
    candidate set, rewards) runs per env on the shared device data. Built for many envs on
    one GPU; on a CPU it still saves the per-operation overhead of small fits.

    ## Action Space

    ``MultiDiscrete([K] * n_envs)``: one candidate position per sub-env (``batch_space`` of
    the single env's ``Discrete(K)``).

    ## Observation Space

    The single env's ``Dict`` batched: ``candidates`` ``(n_envs, K, 32)``, ``state``
    ``(n_envs, 22)``, ``action_mask`` ``(n_envs, K)``; see ``MultimodalALEnv``.
    :meth:`action_masks` returns the ``(n_envs, K)`` boolean masks (sb3-contrib).

    ## Rewards

    Per sub-env, as the single env.

    ## Starting State

    ``reset(seed=s)`` seeds sub-env i with ``s + i`` (a list gives one seed per env; None draws
    fresh seeds), exactly as :class:`gymnasium.vector.SyncVectorEnv`; sub-env i then replays
    ``MultimodalALEnv.reset(seed=s + i)``. ``options={"reset_mask": mask}`` resets only the
    masked envs.

    ## Episode End

    Next-step autoreset (``metadata["autoreset_mode"] = AutoresetMode.NEXT_STEP``, the
    Gymnasium 1.x default): the step that ends a sub-env's episode returns its last
    observation with ``terminated`` True; on the following step that sub-env's action is
    ignored, it is reset, and it returns its first observation with reward 0 and
    ``terminated`` and ``truncated`` False.

    ## Arguments

    - ``dataset``, ``protocol``: as ``MultimodalALEnv``.
    - ``n_envs``: number of sub-envs.
    - ``config`` and every other keyword: ``MultimodalALEnv``'s (an
      :class:`~rlmba_env.config.EnvConfig` and its fields), the same for all sub-envs.
      ``render_mode`` is not supported.

    :meth:`from_env_id` builds one from a registered id (``"RLMBA-AVDigits-v0"``).
    Infos are batched with Gymnasium's ``_key`` masks. The sub-envs are in :attr:`envs`
    (``envs[i].pool_state()``, ``envs[i].label(...)`` are theirs); call ``label`` only through
    a sub-env that is mid-episode, as on the single env.

    ## Version History

    - v0: initial release.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, dataset: MultimodalDataset, protocol: Protocol | dict, n_envs: int,
                 config: EnvConfig | None = None, **settings):
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        config = EnvConfig.with_settings(config, settings)
        if config.render_mode is not None:
            raise ValueError("BatchedMultimodalALVectorEnv does not render; leave render_mode None")
        # The sub-envs share the dataset's device arrays (rlmba_env.env.device_data).
        super().__init__()
        self.envs = [MultimodalALEnv(dataset, protocol, config) for _ in range(n_envs)]
        self.num_envs = n_envs
        self.metadata = dict(self.metadata)
        self.render_mode = None
        first = self.envs[0]
        self.device = first.device
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, n_envs)
        self.action_space = batch_space(spaces.Discrete(first.n_candidates), n_envs)
        self._autoreset = np.zeros(n_envs, dtype=bool)
        self._started = False
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_env_id(cls, env_id: str, n_envs: int | None = None, *, num_envs: int | None = None,
                    **kwargs) -> "BatchedMultimodalALVectorEnv":
        """The registered env ``env_id`` built with ``kwargs`` (once, for its dataset and
        configuration), as ``n_envs`` batched sub-envs; each id's ``vector_entry_point``
        (``num_envs`` is Gymnasium's name for ``n_envs``)."""
        if (n_envs is None) == (num_envs is None):
            raise ValueError(f"pass the number of sub-envs once, as n_envs or num_envs (got {n_envs!r}, {num_envs!r})")
        template = gym.make(env_id, **kwargs).unwrapped
        return cls(template.dataset, template.protocol, n_envs if num_envs is None else num_envs,
                   config=template.config)

    # -- Gymnasium vector API ---------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for num_envs={self.num_envs}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a ({self.num_envs},) bool array with a True, got {mask!r}")
        members = [i for i in range(self.num_envs) if mask[i]]
        requests = {i: self.envs[i].begin_reset(seed=seeds[i], options=options) for i in members}
        results = self._fit_and_finish(requests)
        self._autoreset[members] = False
        self._started = True
        return self._batch_obs(), self._batch_infos({i: results[i][1] for i in members})

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            if not self._autoreset[i]:  # every action checked before any sub-env records a pick
                try:
                    env.check_action(action)
                except ValueError as error:
                    raise ValueError(f"sub-env {i}: {error}") from None
        requests, env_infos = {}, {}
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            if self._autoreset[i]:
                requests[i] = env.begin_reset()
                continue
            out = env.begin_step(action)
            if isinstance(out, FitRequest):
                requests[i] = out
            else:
                env_infos[i] = out[4]
        # one batched fit for every env that closed a round or resets, in env order
        for i, out in self._fit_and_finish(requests).items():
            if self._autoreset[i]:
                env_infos[i] = out[1]
            else:
                _, rewards[i], terminated[i], truncated[i], env_infos[i] = out
        self._autoreset = terminated | truncated
        return self._batch_obs(), rewards, terminated, truncated, self._batch_infos(env_infos)

    def action_masks(self) -> np.ndarray:
        """``(n_envs, K)`` boolean masks of the allowed picks (sb3-contrib's ``MaskablePPO``)."""
        return np.stack([env.action_masks() for env in self.envs])

    def call(self, name: str, *args, **kwargs) -> tuple:
        """``getattr(env, name)(*args, **kwargs)`` (or the attribute) of every sub-env."""
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple:
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        for env, value in zip(self.envs, values):
            setattr(env, name, value)

    def close_extras(self, **kwargs) -> None:
        for env in self.envs:
            env.close()

    # -- internals ------------------------------------------------------------------------------
    def _fit_and_finish(self, requests: dict[int, FitRequest]) -> dict[int, tuple]:
        """The fits of the sub-envs in ``requests`` as one batched fit and one batched
        inference, then each env's ``finish`` (scoring draws each env's seeds in the single
        env's order); returns what each ``finish`` returned."""
        if not requests:
            self.last_timings = {}
            return {}
        t0 = time.perf_counter()
        order = sorted(requests)
        reqs = [requests[i] for i in order]
        learners = [r.learner for r in reqs]
        fits = fit_learners(learners, reqs[0].features, reqs[0].labels, [r.rows for r in reqs],
                            [r.weights for r in reqs], [r.seed for r in reqs])
        alphas = predict_learners(learners, reqs[0].features)
        if self.device.type == "cuda" and self.envs[0].profile:
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        out = {i: self.envs[i].finish(fit, alphas=alphas[j]) for j, (i, fit) in enumerate(zip(order, fits))}
        self.last_timings = {"train_s": t1 - t0, "score_s": time.perf_counter() - t1}
        return out

    def _batch_obs(self) -> dict[str, np.ndarray]:
        out = create_empty_array(self.single_observation_space, n=self.num_envs, fn=np.zeros)
        return concatenate(self.single_observation_space, [env.observation() for env in self.envs], out)

    def _batch_infos(self, env_infos: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """The sub-envs' infos batched as ``VectorEnv._add_info`` does (an array per key and a
        ``_key`` mask of the envs that have it), built once per key instead of once per env."""
        return _batch_dicts(env_infos, self.num_envs)


def _batch_dicts(dicts: dict[int, dict[str, Any]], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for d in dicts.values() for key in d))
    for key in keys:
        present = {i: d[key] for i, d in dicts.items() if key in d}
        first = next(iter(present.values()))
        if isinstance(first, dict):
            out[key] = _batch_dicts(present, n)
        else:
            if type(first) in (int, float, bool) or isinstance(first, np.number):
                array = np.zeros(n, dtype=type(first))
            elif isinstance(first, np.ndarray):
                array = np.zeros((n, *first.shape), dtype=first.dtype)
            else:
                array = np.full(n, None, dtype=object)
            for i, value in present.items():
                array[i] = value
            out[key] = array
        mask = np.zeros(n, dtype=bool)
        mask[list(present)] = True
        out[f"_{key}"] = mask
    return out
