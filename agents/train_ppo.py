"""Train a MaskablePPO agent on an rlmba environment and log the run to TensorBoard.

    python agents/train_ppo.py                                   # AV-Digits, defaults
    python agents/train_ppo.py --total-timesteps 20000 --n-envs 2
    python agents/train_ppo.py --env-id RLMBA-Synthetic-v0 --env-kwargs '{"rounds": 5}'
    tensorboard --logdir runs

Each run writes ``{log_dir}/{env_id}__maskable_ppo__{seed}__{timestamp}/``: TensorBoard events
(SB3's ``rollout/`` and ``train/`` scalars, plus per-episode ``test/top1``,
``test/top1_<modality>``, ``contribution/<modality>``, ``charts/balance`` and
``charts/episodic_return``), the hyperparameters as text, and the trained ``model.zip``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch
import tyro
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import rlmba_env  # noqa: F401  (registers the env ids)
from agents.tracking import EpisodeMetricsCallback, hyperparameter_table, run_name

ALGO = "maskable_ppo"


@dataclass
class Args:
    env_id: str = "RLMBA-AVDigits-v0"
    """Gymnasium id of the environment"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON (e.g. '{"image_noise": 1.0, "rounds": 5}')"""
    total_timesteps: int = 10000
    """environment steps (picks) to train for; one default AV-Digits episode is 100 picks"""
    seed: int = 1
    """seed of the policy, the environments and every random draw in them"""
    device: str = "auto"
    """torch device of the policy and of the env's classifier: auto, cpu or cuda"""
    n_envs: int = 1
    """parallel environments (more than one run in subprocesses)"""
    n_steps: int = 200
    """rollout length per environment between PPO updates (two AV-Digits episodes)"""
    batch_size: int = 100
    """minibatch size of the PPO update"""
    n_epochs: int = 10
    """passes over each rollout"""
    learning_rate: float = 3e-4
    """Adam learning rate of the policy"""
    gamma: float = 0.99
    """discount factor (rewards arrive at the end of each round)"""
    ent_coef: float = 0.01
    """entropy bonus, keeps the candidate choice exploratory early on"""
    log_dir: str = "runs"
    """folder that receives one sub-folder per run"""
    progress_bar: bool = True
    """show a progress bar over timesteps"""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def main(args: Args) -> Path:
    device = resolve_device(args.device)
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    env_kwargs.setdefault("device", device)
    env_kwargs.setdefault("render_mode", None)  # make_vec_env would ask for rgb_array otherwise

    name = run_name(args.env_id, ALGO, args.seed)
    run_dir = Path(args.log_dir) / name
    vec_env = make_vec_env(
        args.env_id,
        n_envs=args.n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs,
        vec_env_cls=SubprocVecEnv if args.n_envs > 1 else DummyVecEnv,
        vec_env_kwargs={"start_method": "spawn"} if args.n_envs > 1 else None,
    )
    modalities = tuple(vec_env.get_attr("modalities")[0])
    model = MaskablePPO(
        "MultiInputPolicy",
        vec_env,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        ent_coef=args.ent_coef,
        seed=args.seed,
        device=device,
        verbose=0,
    )
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    callback = EpisodeMetricsCallback(hyperparameter_table(args), modalities)
    print(f"training {ALGO} on {args.env_id} for {args.total_timesteps} steps; "
          f"TensorBoard logs: {run_dir}")
    model.learn(total_timesteps=args.total_timesteps, callback=callback, progress_bar=args.progress_bar)
    model.save(run_dir / "model.zip")
    vec_env.close()
    print(f"saved model: {run_dir / 'model.zip'}")
    print(f"TensorBoard logs: {run_dir}  (view with: tensorboard --logdir {args.log_dir})")
    return run_dir


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(tyro.cli(Args))
