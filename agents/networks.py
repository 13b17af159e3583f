"""The candidate-set scorer of RL-MBA's policies, in plain torch (arXiv 2603.25107, section
"method", step 6).

The agent sees a *set* of K candidates, each described by the same F features, plus a
round-level state vector. :class:`SetScorer` scores every candidate with one shared MLP over
``[candidate features, embedded state]`` (optionally after one self-attention layer across the
candidates), so permuting the candidates permutes the scores (permutation equivariance), and
masked candidates get a logit of :data:`MASKED_LOGIT`, i.e. probability exactly 0 under a
softmax. The value head pools the candidate embeddings (mean, max or both, over present
candidates) together with the state embedding, so the value is permutation invariant. Neither
depends on K, and the rlmba observation (layout v2) depends on neither the number of
modalities, the feature dimensions nor the class count: a scorer trained on one dataset runs on
any other. The actor-critic head
:class:`SetActorCriticHead` and the Stable-Baselines3 policies built on them
(:mod:`agents.policies`); the REINFORCE agent uses it directly.
"""

from __future__ import annotations

import inspect

import torch
from gymnasium import spaces
from torch import nn

MASKED_LOGIT = -1e8
"""Logit of a masked candidate: finite (no NaN in entropies or gradients), and exp() of it
relative to any real logit is exactly 0 in float32."""

POOLINGS = ("mean", "max", "meanmax")


def _masked_mean_max(h: torch.Tensor, present: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (B, K, H) over the present candidates (B, K) -> (B, H) or (B, 2H)."""
    p = present.unsqueeze(-1).to(h.dtype)
    count = p.sum(1).clamp_min(1.0)
    parts = []
    if pooling in ("mean", "meanmax"):
        parts.append((h * p).sum(1) / count)
    if pooling in ("max", "meanmax"):
        filled = h.masked_fill(p == 0, float("-inf")).amax(1)
        parts.append(torch.where(torch.isfinite(filled), filled, torch.zeros_like(filled)))
    return torch.cat(parts, dim=-1)


def _mask_logits(logits: torch.Tensor, candidates: torch.Tensor,
                 mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K) set to :data:`MASKED_LOGIT` where ``mask`` is 0, and the candidates (B, K)
    that describe the round: every allowed one and the picked ones (masked, but still part of
    the round; the last candidate column is ``picked``), never padding rows."""
    if mask is None:
        return logits, torch.ones_like(logits, dtype=torch.bool)
    return masked_logits(logits, mask), (mask > 0.5) | (candidates[..., -1] > 0.5)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (B, K) set to :data:`MASKED_LOGIT` where ``mask`` is 0."""
    return logits.masked_fill(mask <= 0.5, MASKED_LOGIT)


class _CandidateScorer(nn.Module):
    """What every candidate scorer offers: ``forward(candidates, state, mask) -> (logits,
    pooled set features)``, the unmasked :meth:`scores` and :meth:`logits` of an observation
    dict (without the pooled features, which only a value head reads)."""

    def scores(self, candidates: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Unmasked scores (B, K) of the candidates (B, K, F) under the state (B, G)."""
        raise NotImplementedError

    def logits(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked logits of a (batched) observation dict with ``candidates``, ``state``, ``action_mask``."""
        scores, mask = self.scores(obs["candidates"], obs["state"]), obs.get("action_mask")
        return scores if mask is None else masked_logits(scores, mask)

    def inputs(self) -> tuple[list[int], list[int]] | None:
        """The candidate columns and state entries the scores read, or ``None``: all of them."""
        return None


class SetScorer(_CandidateScorer):
    """Permutation-equivariant scorer of a candidate set (plain torch).

    Args:
        n_features: F, features per candidate (32 in the rlmba envs' layout v2).
        state_dim: G, length of the round state (22).
        hidden: width of the per-candidate MLP.
        state_hidden: width of the state embedding.
        attention: add one residual self-attention layer across candidates.
        heads: attention heads (``hidden`` must be divisible by it).
        pooling: ``mean``, ``max`` or ``meanmax`` pooling of candidate embeddings for the value.
    """

    def __init__(
        self,
        n_features: int,
        state_dim: int,
        hidden: int = 64,
        state_hidden: int = 32,
        attention: bool = False,
        heads: int = 4,
        pooling: str = "meanmax",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if attention and hidden % heads:
            raise ValueError(f"hidden={hidden} must be divisible by heads={heads} for attention")
        self.n_features, self.state_dim = n_features, state_dim
        self.hidden, self.state_hidden, self.pooling = hidden, state_hidden, pooling
        self.state_net = nn.Sequential(nn.Linear(state_dim, state_hidden), nn.ReLU())
        self.candidate_net = nn.Sequential(
            nn.Linear(n_features + state_hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        if attention:
            self.attention_norm = nn.LayerNorm(hidden)
            self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        else:
            self.attention_norm = self.attention = None
        self.score_head = nn.Linear(hidden, 1)
        self.pooled_dim = hidden * (2 if pooling == "meanmax" else 1) + state_hidden

    def encode(self, candidates: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate embeddings (B, K, hidden) and state embedding (B, state_hidden)."""
        s = self.state_net(state)
        k = candidates.shape[1]
        h = self.candidate_net(torch.cat([candidates, s.unsqueeze(1).expand(-1, k, -1)], dim=-1))
        if self.attention is not None:
            # No positional encoding and no key masking of picked candidates: what was already
            # picked this round is useful context, and the layer stays permutation equivariant.
            x = self.attention_norm(h)
            h = h + self.attention(x, x, x, need_weights=False)[0]
        return h, s

    def scores(self, candidates: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Unmasked scores (B, K)."""
        return self.score_head(self.encode(candidates, state)[0]).squeeze(-1)

    def forward(
        self, candidates: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K), masked to :data:`MASKED_LOGIT` where ``mask`` is 0, and the pooled,
        permutation-invariant value features (B, ``pooled_dim``)."""
        h, s = self.encode(candidates, state)
        logits, present = _mask_logits(self.score_head(h).squeeze(-1), candidates, mask)
        return logits, torch.cat([_masked_mean_max(h, present, self.pooling), s], dim=-1)


class BilinearScorer(_CandidateScorer):
    """Per-candidate score linear in the candidate columns, with coefficients linear in a few
    round-state entries: ``logit = x' W [1, s_j1, ..., s_jn]`` (plain torch, no hidden layer).

    Which selection rule is best depends on the labeling regime (cold start favours coverage,
    later rounds uncertainty; Hacohen et al., ICML 2022, "Active learning on a budget"): the
    products with the state let one scorer switch its rule with the round, which a linear score
    of the candidate columns alone cannot. Permutation equivariant and masked like
    :class:`SetScorer`; :mod:`agents.lookahead` fits ``W`` in closed form.

    Args:
        n_features: F, features per candidate.
        state_dim: G, length of the round state.
        state_terms: positions of the state entries the coefficients depend on.
    """

    def __init__(self, n_features: int, state_dim: int, state_terms: tuple[int, ...] = ()):
        super().__init__()
        bad = [j for j in state_terms if not 0 <= j < state_dim]
        if bad:
            raise ValueError(f"state_terms {list(state_terms)} hold positions outside the state of length "
                             f"{state_dim}: {bad}")
        self.n_features, self.state_dim = n_features, state_dim
        self.state_terms = tuple(int(j) for j in state_terms)
        self.weight = nn.Parameter(torch.zeros(n_features, 1 + len(self.state_terms)))
        self.pooled_dim = n_features + state_dim

    def scores(self, candidates: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Unmasked scores (B, K): each observation's coefficients ``W [1, s_j1, ...]`` (B, F)
        first, then one matrix-vector product per observation (at a pick among thousands of
        candidates, a fraction of the cost of the three-way contraction)."""
        if self.state_terms:
            terms = torch.cat([torch.ones_like(state[:, :1]), state[:, list(self.state_terms)]], dim=-1)
            coefficients = terms @ self.weight.T  # (B, F)
        else:
            coefficients = self.weight.T.expand(candidates.shape[0], -1)  # the same for every state
        return torch.bmm(candidates, coefficients.unsqueeze(-1)).squeeze(-1)

    def inputs(self) -> tuple[list[int], list[int]]:
        """The candidate columns with a nonzero weight and the state terms: a candidate's score
        depends on nothing else."""
        return torch.nonzero(self.weight.detach().ne(0).any(dim=1)).flatten().tolist(), list(self.state_terms)

    def forward(
        self, candidates: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K), masked to :data:`MASKED_LOGIT` where ``mask`` is 0, and the mean
        candidate row with the state (B, ``pooled_dim``) as permutation-invariant set features."""
        logits, present = _mask_logits(self.scores(candidates, state), candidates, mask)
        return logits, torch.cat([_masked_mean_max(candidates, present, "mean"), state], dim=-1)


SCORER_DEFAULTS: dict[str, object] = {
    name: p.default for name, p in inspect.signature(SetScorer.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}
"""the architecture keyword arguments of :class:`SetScorer` and their defaults (``hidden``,
``state_hidden``, ``attention``, ``heads``, ``pooling``): the one home of these defaults"""


def set_dims(observation_space: spaces.Dict) -> tuple[int, int]:
    """(F, G) of an rlmba observation space, with a clear error for anything else."""
    if not isinstance(observation_space, spaces.Dict) or not {"candidates", "state", "action_mask"} <= set(
        observation_space.spaces
    ):
        raise ValueError(
            "the set policy needs a Dict observation with 'candidates', 'state' and 'action_mask' "
            f"(an rlmba env), got {observation_space}"
        )
    return observation_space["candidates"].shape[1], observation_space["state"].shape[0]


class SetActorCriticHead(nn.Module):
    """SB3's ``mlp_extractor`` slot: actor latent = candidate logits (B, K), critic latent =
    an MLP of the pooled set features."""

    def __init__(self, n_features: int, state_dim: int, masked_value: float, value_hidden: int = 64, **scorer_kwargs):
        super().__init__()
        self.scorer = SetScorer(n_features, state_dim, **scorer_kwargs)
        self.masked_value = masked_value
        self.critic = nn.Sequential(nn.Linear(self.scorer.pooled_dim, value_hidden), nn.ReLU())
        self.latent_dim_pi = 0  # K is only known from the observation; the action net is Identity
        self.latent_dim_vf = value_hidden

    def _split(self, features: torch.Tensor):
        f, g = self.scorer.n_features, self.scorer.state_dim
        k = (features.shape[1] - g) // (f + 1)
        b = features.shape[0]
        candidates = features[:, : k * f].reshape(b, k, f)
        return candidates, features[:, k * f : k * f + g], features[:, k * f + g :]

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        candidates, state, mask = self._split(features)
        logits, pooled = self.scorer(candidates, state, mask)
        if self.masked_value != MASKED_LOGIT:
            logits = torch.where(mask > 0.5, logits, torch.full_like(logits, self.masked_value))
        return logits, self.critic(pooled)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self(features)[0]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self(features)[1]
