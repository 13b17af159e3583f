"""Stable-Baselines3 policies on RL-MBA's candidate-set scorer (:class:`agents.networks.SetScorer`,
arXiv 2603.25107, section "method", step 6):

- :class:`MaskableSetPolicy` for sb3-contrib's ``MaskablePPO`` (``Discrete(K)`` action): the
  action logits are the candidate scores.
- :class:`SetActorCriticPolicy` for plain SB3 ``PPO`` on an env wrapped in
  :class:`agents.envs.TopBPickWrapper` (``Box(K)`` action = a score per candidate; the wrapper
  picks the highest-scoring allowed candidate). The Gaussian's mean is the candidate scores
  (0 on masked candidates, which the wrapper ignores) with one shared standard deviation.

Both take ``policy_kwargs`` ``hidden``, ``state_hidden``, ``attention``, ``heads`` and
``pooling``; both save and load with the algorithm (``MaskablePPO.load``, ``PPO.load``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.networks import MASKED_LOGIT, SCORER_DEFAULTS, SetActorCriticHead, SetScorer, set_dims  # noqa: F401  (SetScorer re-exported)

class SetObservationExtractor(BaseFeaturesExtractor):
    """Flattens the observation dict to ``[candidates (K*F), state (G), action_mask (K)]``;
    the set structure is restored by :class:`SetActorCriticHead`, which infers K from the width,
    so one policy runs on any candidate-set size."""

    def __init__(self, observation_space: spaces.Dict):
        k, f = observation_space["candidates"].shape
        g = observation_space["state"].shape[0]
        super().__init__(observation_space, features_dim=k * f + g + k)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        c = obs["candidates"]
        return torch.cat([c.reshape(c.shape[0], -1), obs["state"], obs["action_mask"].float()], dim=1)


class _SetPolicyMixin:
    """The parts shared by the maskable and the plain set policy."""

    _masked_value: float

    def _init_set_kwargs(self, observation_space, kwargs: dict) -> dict:
        set_dims(observation_space)
        self._set_kwargs = {k: kwargs.pop(k, v) for k, v in SCORER_DEFAULTS.items()}
        kwargs.setdefault("features_extractor_class", SetObservationExtractor)
        return kwargs

    def _build_mlp_extractor(self) -> None:
        f, g = set_dims(self.observation_space)
        self.mlp_extractor = SetActorCriticHead(
            f, g, self._masked_value, value_hidden=self._set_kwargs["hidden"], **self._set_kwargs
        )

    def _set_build(self, lr_schedule) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            # One standard deviation shared by all candidates keeps the policy equivariant.
            self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))
        if self.ortho_init:
            self.mlp_extractor.apply(lambda m: self.init_weights(m, gain=np.sqrt(2)))
            self.init_weights(self.mlp_extractor.scorer.score_head, gain=0.01)
            self.init_weights(self.value_net, gain=1.0)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def candidate_scores(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores (B, K) of a batched observation dict for any candidate count K: the masked
        logits (maskable) or the Gaussian's mean (plain PPO). SB3's distributions fix K to the
        action space's; this is what runs a trained policy on an env with another K."""
        return self.mlp_extractor.forward_actor(self.extract_features(obs, self.pi_features_extractor))

    def _add_set_kwargs(self, data: dict[str, Any]) -> dict[str, Any]:
        data.update(self._set_kwargs)
        data.pop("net_arch", None)
        return data


class MaskableSetPolicy(_SetPolicyMixin, MaskableActorCriticPolicy):
    """``MaskablePPO`` policy whose action logits are :class:`SetScorer` candidate scores.

    ``policy_kwargs``: ``hidden`` (64), ``state_hidden`` (32), ``attention`` (False),
    ``heads`` (4), ``pooling`` (``"meanmax"``), plus SB3's ``ortho_init``, ``optimizer_*``.
    """

    _masked_value = MASKED_LOGIT

    def __init__(self, observation_space, action_space, lr_schedule, **kwargs):
        kwargs = self._init_set_kwargs(observation_space, kwargs)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        self._set_build(lr_schedule)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return self._add_set_kwargs(super()._get_constructor_parameters())


class SetActorCriticPolicy(_SetPolicyMixin, ActorCriticPolicy):
    """Plain SB3 ``PPO`` policy for a ``Box(K)`` score action (see
    :class:`agents.envs.TopBPickWrapper`): Gaussian scores whose mean is the :class:`SetScorer`
    output on allowed candidates and 0 on masked ones, with one shared log-std.
    Same ``policy_kwargs`` as :class:`MaskableSetPolicy`."""

    _masked_value = 0.0

    def __init__(self, observation_space, action_space, lr_schedule, **kwargs):
        if not isinstance(action_space, spaces.Box):
            raise ValueError(
                "SetActorCriticPolicy scores candidates with a Box(K) action; wrap the env in "
                "agents.envs.TopBPickWrapper, or use MaskablePPO with MaskableSetPolicy for Discrete(K)"
            )
        kwargs = self._init_set_kwargs(observation_space, kwargs)
        if kwargs.get("use_sde"):
            raise ValueError("SetActorCriticPolicy does not support use_sde")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        self._set_build(lr_schedule)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return self._add_set_kwargs(super()._get_constructor_parameters())
