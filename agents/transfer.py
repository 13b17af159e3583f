"""Run a trained selection policy on another dataset than the one it was trained on.

    python agents/transfer.py runs/RLMBA-AVDigits-v0__maskable_ppo__1__<t>/model.zip --env-id RLMBA-Synthetic-v0
    python agents/transfer.py runs/RLMBA-Synthetic-v0__reinforce__1__<t>/agent.pt --online --baselines

The observation (layout v2, :mod:`rlmba_env.observation`) describes candidates and the round by
uncertainties, margins, beliefs and ranks pooled over the modalities, never by raw features,
class scores or per-modality columns, so its width is the same on every dataset. A set policy
(``train_ppo.py --policy set``, REINFORCE) therefore runs on any env, whatever its number of
modalities, feature dimensions, class count or candidate count; an ``mlp`` policy also needs
the same candidate count.

:func:`load_policy` reads an SB3 ``.zip`` (MaskablePPO or PPO) or a REINFORCE ``.pt`` checkpoint;
:func:`transfer` plays it on held-out seeds of an env id and returns the episodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import tyro
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.save_util import load_from_zip_file

from agents.envs import make_env, parse_env_kwargs, resolve_device
from agents.reinforce import ReinforceAgent
from agents.rollout import EVAL_SEED, EpisodeResult, FirstAgent, RandomAgent, SB3Agent, play_episodes, summarize


def load_policy(path: str | Path, device: str = "cpu", deterministic: bool = True):
    """An agent (``act(obs) -> int``) from an SB3 ``.zip`` or a REINFORCE checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trained policy at {path}")
    if path.suffix == ".zip":
        data, _, _ = load_from_zip_file(path, device="cpu", print_system_info=False)
        policy_class = data.get("policy_class") if data else None
        algo = MaskablePPO if isinstance(policy_class, type) and issubclass(policy_class, MaskableActorCriticPolicy) else PPO
        return SB3Agent(algo.load(path, device=device), deterministic=deterministic)
    return ReinforceAgent.load(path, device)


def transfer(agent, env: gym.Env, seeds, online: bool = False) -> list[EpisodeResult]:
    """Play ``agent`` on ``env`` once per seed. A REINFORCE agent plays greedy and frozen, or,
    with ``online``, a fresh copy per seed keeps learning during the campaign (the paper's
    setting, adapting to the new dataset)."""
    if isinstance(agent, SB3Agent):
        agent.check_env(env.observation_space)
        return play_episodes(env, agent, seeds)
    if isinstance(agent, ReinforceAgent):
        from agents.networks import set_dims

        if set_dims(env.observation_space) != (agent.scorer.n_features, agent.scorer.state_dim):
            raise ValueError(
                f"the agent was trained on candidates with {agent.scorer.n_features} features and a state of "
                f"{agent.scorer.state_dim}; this env has {set_dims(env.observation_space)}: the agent was "
                f"trained on another observation layout (the current one, v2, does not depend on the dataset)"
            )
        return agent.play_copies(env, seeds, online)
    return play_episodes(env, agent, seeds)


@dataclass
class Args:
    model: tyro.conf.Positional[str]
    """trained policy: an SB3 model .zip (train_ppo.py) or a REINFORCE agent .pt (train_pg.py)"""
    env_id: str = "RLMBA-Synthetic-v0"
    """Gymnasium id of the env to run it on"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON"""
    episodes: int = 3
    """episodes, on reset seeds eval_seed, eval_seed + 1, ..."""
    eval_seed: int = EVAL_SEED
    """reset seed of the first episode"""
    online: bool = False
    """REINFORCE only: keep learning during each campaign (sampled picks) instead of greedy and frozen"""
    baselines: bool = False
    """also run random picks and always-first-candidate (top-b by q) on the same seeds"""
    device: str = "auto"
    """torch device of the policy and the env's classifier"""
    torch_threads: int = 1
    """torch threads of this process (0: torch's default); the classifier fits are small, so one
    thread is fastest on a small busy machine (README, Speed)"""


def main(args: Args) -> dict[str, dict[str, float]]:
    device = resolve_device(args.device)
    env = make_env(args.env_id, torch_threads=args.torch_threads, **parse_env_kwargs(args.env_kwargs, device))
    seeds = list(range(args.eval_seed, args.eval_seed + args.episodes))
    rows = {Path(args.model).name: summarize(transfer(load_policy(args.model, device), env, seeds, args.online))}
    if args.baselines:
        rows["random"] = summarize(play_episodes(env, RandomAgent(args.eval_seed), seeds))
        rows["first (top-b by q)"] = summarize(play_episodes(env, FirstAgent(), seeds))
    print(f"{args.env_id}, seeds {seeds[0]}..{seeds[-1]}")
    print(f"{'agent':<24} {'test top-1':>15} {'AULC':>15} {'balance':>8}")
    for name, s in rows.items():
        top1, area = f"{s['top1']:.3f} +- {s['top1_std']:.3f}", f"{s['aulc']:.3f} +- {s['aulc_std']:.3f}"
        print(f"{name:<24} {top1:>15} {area:>15} {s['balance']:>8.3f}")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(tyro.cli(Args))
