"""The RL-MBA online selection agent: REINFORCE over a candidate-set scorer (arXiv 2603.25107,
section "method", step 6 and its policy-gradient update).

Each round the policy (:class:`agents.policies.SetScorer`) samples the round's b picks one
after another from the softmax of its masked logits; the env masks each pick once made, so the
round's batch is a sample without replacement (Plackett-Luce) with log-probability
``sum_t log pi(a_t | s_t)``. The round-end reward r is smoothed, ``r~ <- s r~ + (1 - s) r``
(EMA, ``reward_smoothing = s``; 0 uses raw rewards), the advantage is ``A = r~ - b`` against a
moving-average baseline ``b <- d b + (1 - d) r~`` (``baseline_decay = d``; A = 0 on the first
round, which initialises b), optionally divided by a running RMS of A and clipped to
``[-advantage_clip, advantage_clip]``, and one gradient step descends
``-A sum_t log pi(a_t | s_t) - entropy_coef * H``.

As in the paper the agent learns online, during a labeling run (:meth:`ReinforceAgent.run_episode`
with ``learn=True``; one policy per dataset), and can also be pre-trained over many episodes
(``agents/train_pg.py``). Given its seed it is deterministic: initialisation and sampling draw
from its own generators, never from torch's global RNG.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.networks import SCORER_DEFAULTS, BilinearScorer, SetScorer, masked_logits, set_dims
from agents.rollout import EpisodeResult, play_episode

CHECKPOINT_FORMAT = 1


@dataclass
class ReinforceConfig:
    """Hyperparameters of :class:`ReinforceAgent` (the fields of ``agents/hyperparams/reinforce.yml``)."""

    learning_rate: float = 3e-3
    """Adam learning rate"""
    baseline_decay: float = 0.8
    """moving-average baseline b <- d b + (1 - d) r~"""
    reward_smoothing: float = 0.3
    """EMA of round rewards before the advantage, r~ <- s r~ + (1 - s) r (0 = raw rewards)"""
    normalize_advantage: bool = True
    """divide the advantage by its running RMS (same decay as the baseline)"""
    advantage_clip: float | None = 3.0
    """clip the (normalised) advantage to [-c, c]; None or 0 disables"""
    entropy_coef: float = 0.0
    """entropy bonus per pick"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    temperature: float = 1.0
    """softmax temperature of the pick distribution"""
    hidden: int = SCORER_DEFAULTS["hidden"]
    """width of the per-candidate MLP"""
    state_hidden: int = SCORER_DEFAULTS["state_hidden"]
    """width of the round-state embedding"""
    attention: bool = SCORER_DEFAULTS["attention"]
    """one self-attention layer across candidates"""
    heads: int = SCORER_DEFAULTS["heads"]
    """attention heads"""
    scorer: str = "set"
    """``set``: the :class:`~agents.networks.SetScorer` MLP; ``bilinear``: the
    :class:`~agents.networks.BilinearScorer` (candidate columns times ``[1, state_terms]``)"""
    state_terms: tuple[int, ...] = ()
    """state positions of the bilinear scorer's coefficients (ignored by ``set``)"""

    def __post_init__(self):
        if self.scorer not in ("set", "bilinear"):
            raise ValueError(f"ReinforceConfig.scorer {self.scorer!r} is not allowed; choose set or bilinear")
        self.state_terms = tuple(int(j) for j in self.state_terms)


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax with masked entries at (numerically) -inf: their probability is exactly 0."""
    return torch.log_softmax(masked_logits(logits, mask.float()), dim=-1)


def sample_without_replacement(
    logits: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[list[int], float]:
    """Draw ``n`` distinct allowed positions one after another from the masked softmax of
    ``logits`` (K,) (Plackett-Luce); returns them and the log-probability of the sequence."""
    logits = logits.detach().double().cpu().clone()
    allowed = mask.detach().bool().cpu().clone()
    if n > int(allowed.sum()):
        raise ValueError(f"cannot pick {n} candidates: only {int(allowed.sum())} are allowed")
    picks, logp = [], 0.0
    for _ in range(n):
        lp = masked_log_softmax(logits, allowed)
        pos = int(torch.multinomial(lp.exp(), 1, generator=generator))
        picks.append(pos)
        logp += float(lp[pos])
        allowed[pos] = False
    return picks, logp


def _to_tensors(observations: list[dict[str, np.ndarray]], device) -> dict[str, torch.Tensor]:
    if len(observations) == 1:
        # one observation (a pick): a view of its arrays with a batch axis, no stacked copy
        return {k: torch.as_tensor(np.asarray(observations[0][k]), device=device).float().unsqueeze(0)
                for k in ("candidates", "state", "action_mask")}
    return {
        k: torch.as_tensor(np.stack([np.asarray(o[k]) for o in observations]), device=device).float()
        for k in ("candidates", "state", "action_mask")
    }


def best_allowed(scores: np.ndarray, allowed: np.ndarray) -> int:
    """The allowed position of highest score, the first of equal ones (0 when none is allowed)."""
    return int(np.argmax(np.where(allowed, scores, -np.inf)))


@dataclass
class _RoundRanking:
    """A greedy agent's ranking of a round's candidates and everything it was computed from."""

    temperature: float
    shape: tuple[int, ...]
    weights: list[torch.Tensor]
    entries: list[int]
    state: np.ndarray
    columns: list[int]
    values: np.ndarray
    scores: np.ndarray
    """unmasked logits (K,)"""
    order: np.ndarray | None = None
    """candidate positions by descending logit, equal logits by position (as ``argmax`` ranks
    them); sorted at the second pick on the same logits, so a rule whose inputs change with
    every pick never pays for it"""
    start: int = 0
    """``order[:start]`` were all masked at the last pick"""

    def best(self, allowed: np.ndarray) -> int:
        """The allowed position of highest logit, the first of equal ones (position 0 when none
        is allowed, as ``argmax`` over masked logits)."""
        if self.order is None:
            return best_allowed(self.scores, allowed)
        if self.start and allowed[self.order[: self.start]].any():  # a new campaign on the same candidates
            self.start = 0
        while self.start < self.order.shape[0] and not allowed[self.order[self.start]]:
            self.start += 1
        return int(self.order[self.start]) if self.start < self.order.shape[0] else 0


class ReinforceAgent:
    """RL-MBA's online REINFORCE agent (see the module docstring).

    Args:
        n_features: F, candidate features (32, layout v2); see :meth:`from_env`.
        state_dim: G, round-state entries (22).
        config: a :class:`ReinforceConfig` (or a dict of its fields).
        seed: seeds the initial weights and the pick sampler.
        device: torch device of the network.
    """

    def __init__(self, n_features: int, state_dim: int, config: ReinforceConfig | dict | None = None,
                 seed: int = 0, device: str | torch.device = "cpu"):
        self.config = ReinforceConfig(**config) if isinstance(config, dict) else (config or ReinforceConfig())
        c = self.config
        self.seed = int(seed)
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if c.scorer == "bilinear":
                self.scorer = BilinearScorer(n_features, state_dim, tuple(c.state_terms))
            else:
                self.scorer = SetScorer(n_features, state_dim, hidden=c.hidden, state_hidden=c.state_hidden,
                                        attention=c.attention, heads=c.heads, pooling="mean")
        self.scorer.to(self.device)
        self.optimizer = torch.optim.Adam(self.scorer.parameters(), lr=c.learning_rate)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._ranking: _RoundRanking | None = None  # see _round_ranking
        self.baseline: float | None = None
        self.smoothed_reward: float | None = None
        self.advantage_ms: float | None = None
        self.updates = 0
        self.episodes = 0
        self.steps = 0

    @classmethod
    def from_env(cls, env: gym.Env, config=None, seed: int = 0, device="cpu") -> ReinforceAgent:
        """An agent sized for ``env``'s observation space."""
        f, g = set_dims(env.observation_space)
        return cls(f, g, config, seed, device)

    def reseed(self, seed: int) -> None:
        """Restart the pick sampler from ``seed`` (weights unchanged)."""
        self.generator = torch.Generator().manual_seed(int(seed))

    # -- acting -------------------------------------------------------------------------------
    def logits(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        """Masked logits (K,) of one observation, divided by the temperature."""
        t = _to_tensors([obs], self.device)
        with torch.no_grad():
            return self.scorer.logits(t)[0] / self.config.temperature

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> int:
        """One pick: sampled from the masked softmax, or the highest logit if ``deterministic``
        (the first of equal ones)."""
        if deterministic:
            allowed = np.asarray(obs["action_mask"]) != 0
            ranking = self._round_ranking(obs)
            if ranking is not None:
                return ranking.best(allowed)
            return best_allowed(self.logits(obs).cpu().numpy(), allowed)
        mask = torch.as_tensor(np.asarray(obs["action_mask"]), dtype=torch.bool)
        return sample_without_replacement(self.logits(obs), mask, 1, self.generator)[0][0]

    def _round_ranking(self, obs: dict[str, np.ndarray]) -> _RoundRanking | None:
        """The candidates of one observation ranked by logit, for greedy picks, or ``None`` for a
        scorer that reads every column. A scorer that reads only some candidate columns and state
        entries (:meth:`~agents.networks.BilinearScorer.inputs`) is not run again while they, its
        weights and the temperature are unchanged: within a round a pick changes only the
        ``coverage`` and ``picked`` columns and ``picks_left`` (:mod:`rlmba_env.observation`), so
        a linear rule over other columns is scored once per round instead of once per pick, with
        the same picks."""
        candidates, state = np.asarray(obs["candidates"]), np.asarray(obs["state"])
        weights = [p.detach() for p in self.scorer.parameters()]
        seen = self._ranking
        if (seen is not None and seen.temperature == self.config.temperature
                and seen.shape == candidates.shape and all(map(torch.equal, seen.weights, weights))
                and (state[seen.entries] == seen.state).all() and (candidates[:, seen.columns] == seen.values).all()):
            if seen.order is None:
                seen.order = np.argsort(-seen.scores, kind="stable")
            return seen
        inputs = self.scorer.inputs()
        if inputs is None:
            return None
        t = _to_tensors([obs], self.device)
        with torch.no_grad():  # unmasked: the mask changes with every pick
            scores = (self.scorer.scores(t["candidates"], t["state"])[0] / self.config.temperature).cpu().numpy()
        columns, entries = inputs
        ranking = _RoundRanking(self.config.temperature, candidates.shape, [w.clone() for w in weights], entries,
                                state[entries], columns, candidates[:, columns], scores)
        self._ranking = ranking if np.isfinite(scores).all() else None  # NaN has no rank
        return ranking

    def pick_batch(self, obs: dict[str, np.ndarray], n: int) -> list[int]:
        """``n`` distinct candidate positions sampled from one observation (for ``env.label``
        or annotators; inside the env loop, :meth:`act` picks one at a time)."""
        mask = torch.as_tensor(np.asarray(obs["action_mask"]), dtype=torch.bool)
        return sample_without_replacement(self.logits(obs), mask, n, self.generator)[0]

    # -- learning -----------------------------------------------------------------------------
    def advantage(self, reward: float) -> float:
        """Advance the reward EMA, baseline and RMS with a round reward; return the advantage."""
        c = self.config
        r = float(reward)
        s = r if self.smoothed_reward is None else c.reward_smoothing * self.smoothed_reward + (1 - c.reward_smoothing) * r
        self.smoothed_reward = s
        adv = 0.0 if self.baseline is None else s - self.baseline
        self.baseline = s if self.baseline is None else c.baseline_decay * self.baseline + (1 - c.baseline_decay) * s
        if c.normalize_advantage and adv != 0.0:
            sq = adv * adv
            self.advantage_ms = sq if self.advantage_ms is None else c.baseline_decay * self.advantage_ms + (1 - c.baseline_decay) * sq
            adv /= np.sqrt(self.advantage_ms) + 1e-8
        if c.advantage_clip:
            adv = float(np.clip(adv, -c.advantage_clip, c.advantage_clip))
        return float(adv)

    def update(self, observations: list[dict[str, np.ndarray]], actions: list[int], reward: float | None = None,
               advantage: float | None = None) -> dict[str, float]:
        """One policy-gradient step on a round: its observations, picks, and either its
        ``reward`` (advantage from the smoothed reward and baseline) or an explicit ``advantage``."""
        if (reward is None) == (advantage is None):
            raise ValueError("pass exactly one of reward= and advantage=")
        adv = self.advantage(reward) if advantage is None else float(advantage)
        t = _to_tensors(observations, self.device)
        a = torch.as_tensor(actions, device=self.device, dtype=torch.long)
        self.scorer.train()
        logp = masked_log_softmax(self.scorer.logits(t) / self.config.temperature, t["action_mask"])
        chosen = logp.gather(1, a[:, None]).squeeze(1)
        if not torch.all(t["action_mask"].gather(1, a[:, None]) > 0.5):
            raise ValueError("update() got a pick of a masked candidate")
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = -adv * chosen.sum() - self.config.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.scorer.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        return {"policy_loss": float(loss.detach()), "entropy": float(entropy.detach()), "advantage": adv,
                "baseline": float(self.baseline if self.baseline is not None else 0.0),
                "grad_norm": float(grad_norm), "log_prob": float(chosen.detach().sum())}

    def run_episode(self, env: gym.Env, learn: bool = True, seed: int | None = None,
                    deterministic: bool = False) -> tuple[EpisodeResult, list[dict[str, float]]]:
        """Play one labeling campaign, updating after every round when ``learn`` (online).
        Returns the episode's :class:`~agents.rollout.EpisodeResult` and the per-round update stats."""
        if learn and deterministic:
            raise ValueError("learning needs sampled picks; pass deterministic=False")
        stats: list[dict[str, float]] = []

        def learn_round(observations, picks, reward) -> None:
            stats.append(self.update(observations, picks, reward=reward))

        result = play_episode(env, lambda obs: self.act(obs, deterministic), seed,
                              on_round_end=learn_round if learn else None)
        self.steps += result.steps
        self.episodes += 1
        return result, stats

    def play_copies(self, env: gym.Env, seeds, online: bool) -> list[EpisodeResult]:
        """Per seed, a fresh copy of this agent (sampler reseeded) plays one campaign: learning
        online with sampled picks if ``online`` (the paper's setting), else greedy and frozen."""
        results = []
        for seed in seeds:
            player = self.copy()
            player.reseed(int(seed))
            results.append(player.run_episode(env, learn=online, seed=int(seed), deterministic=not online)[0])
        return results

    def copy(self) -> ReinforceAgent:
        """An independent copy (weights, optimizer, baseline and sampler state)."""
        return copy.deepcopy(self)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Everything needed to continue: config, weights, optimizer, baseline, sampler state."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": CHECKPOINT_FORMAT,
            "agent": "reinforce",
            "config": asdict(self.config),
            "dims": (self.scorer.n_features, self.scorer.state_dim),
            "seed": self.seed,
            "scorer": self.scorer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "smoothed_reward": self.smoothed_reward,
            "advantage_ms": self.advantage_ms,
            "counters": {"updates": self.updates, "episodes": self.episodes, "steps": self.steps},
        }, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ReinforceAgent:
        """Load a checkpoint written by :meth:`save` onto ``device``."""
        data = torch.load(Path(path), map_location="cpu", weights_only=False)
        if not isinstance(data, dict) or data.get("agent") != "reinforce":
            raise ValueError(f"{path} is not a REINFORCE checkpoint (written by ReinforceAgent.save)")
        known = {f.name for f in fields(ReinforceConfig)}
        agent = cls(*data["dims"], {k: v for k, v in data["config"].items() if k in known}, data["seed"], device)
        agent.scorer.load_state_dict(data["scorer"])
        agent.optimizer.load_state_dict(data["optimizer"])
        agent.generator.set_state(data["generator"])
        agent.baseline, agent.smoothed_reward = data["baseline"], data["smoothed_reward"]
        agent.advantage_ms = data["advantage_ms"]
        for k, v in data["counters"].items():
            setattr(agent, k, v)
        return agent

    def describe(self) -> dict[str, Any]:
        return {"agent": "reinforce", "seed": self.seed, **asdict(self.config)}
