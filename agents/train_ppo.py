"""Train a MaskablePPO or PPO agent on an rlmba environment and log the run to TensorBoard.

    python agents/train_ppo.py                                   # AV-Digits, MaskablePPO, set policy
    python agents/train_ppo.py --total-timesteps 20000 --n-envs 2
    python agents/train_ppo.py --algo ppo                        # plain SB3 PPO, no sb3-contrib masking
    python agents/train_ppo.py --policy mlp                      # SB3's MultiInputPolicy
    python agents/train_ppo.py --env-id RLMBA-Synthetic-v0 --env-kwargs '{"rounds": 5}'
    python agents/train_ppo.py --suite RLMBA-AVDigits-v0 RLMBA-DevSuite-v0:webkb RLMBA-DevSuite-v0:mnist4
    python agents/train_ppo.py --resume runs/<run>/checkpoints/model_5000_steps.zip --total-timesteps 5000
    tensorboard --logdir runs

Algorithms. ``maskable_ppo`` (sb3-contrib) picks among allowed candidates with
``env.action_masks()``. ``ppo`` (plain SB3) plays the env through
:class:`agents.envs.TopBPickWrapper`: the action is a score per candidate and the wrapper picks
the highest-scoring allowed one, so masked candidates are never picked without sb3-contrib.
Policies: ``set`` (default, :mod:`agents.policies`: a permutation-equivariant candidate scorer
that also runs on envs with other candidate counts) or ``mlp`` (SB3's ``MultiInputPolicy``).

Hyperparameters come from ``agents/hyperparams/{algo}.yml`` (entry of the env id, else
``default``); a flag given on the command line wins (see :mod:`agents.hyperparams`).

Threads and parallel envs. ``--n-envs N > 1`` runs the envs in ``SubprocVecEnv`` workers
(``spawn``), each limited to one torch thread (``--torch-threads`` sets another number): several
workers with torch's default thread pool fight over a small machine's cores and slow the small
classifier fits 10-50x. ``--torch-threads`` also sets this process's threads; on a busy 2-core
machine ``--torch-threads 1`` speeds up even a single env several times.

Evaluation. Every ``--eval-freq`` steps and at the end, the policy (deterministic) plays
``--eval-episodes`` episodes with held-out reset seeds ``--eval-seed``, ``--eval-seed + 1``, ...
(training episodes use seeds from ``--seed``), logged as ``eval/top1`` (final test top-1),
``eval/balance``, ``eval/aulc`` and ``eval/return``.

Resuming. ``--resume CHECKPOINT.zip`` loads a checkpoint (or a final ``model.zip``) with its own
algorithm hyperparameters and trains ``--total-timesteps`` *more* steps; the step count goes on
from the checkpoint's. The resumed run writes a new run folder (the original is never touched),
so its TensorBoard curves continue where the checkpoint's stopped; ``resume`` is in its
hyperparameter table. Every checkpoint stores where each training env's sequence of episodes
stood (:class:`agents.envs.ResumableEpisodes`): the resumed run restarts the episode that was in
progress and goes on with the episodes the uninterrupted run would have played, instead of
replaying the run's first episodes; the policy's sampling is reseeded with ``seed + step``.

Steps. SB3 trains in whole rollouts of ``n_steps x n_envs`` steps: ``--total-timesteps`` is
rounded up to a multiple of that, and the script says so when it rounds.

Each run writes ``{log_dir}/{env_id}__{algo}__{seed}__{timestamp}/``: TensorBoard events (SB3's
``rollout/`` and ``train/`` scalars; per episode ``test/top1``, ``test/top1_<modality>``,
``contribution/<modality>``, ``charts/balance``, ``charts/episodic_return`` and
``reward/<term>``; ``eval/``; the hyperparameters as text), ``checkpoints/model_<steps>_steps.zip``
every ``--checkpoint-freq`` steps and the final ``model.zip`` (``MaskablePPO.load`` / ``PPO.load``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import tyro
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import TensorBoardOutputFormat, configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from agents.envs import TopBPickWrapper, make_env, parse_env_kwargs, resolve_device, set_torch_threads
from agents.hyperparams import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT,
                                YamlFile, check_args, from_yaml, hyperparams_file, optional_path, resolve)
from agents.suite import make_suite_training_env
from agents.policies import MaskableSetPolicy, SetActorCriticPolicy
from agents.rollout import EVAL_SEED, SB3Agent, play_episodes, summarize
from agents.tracking import EpisodeMetricsCallback, hyperparameter_table, run_name

ALGOS = {"maskable_ppo": MaskablePPO, "ppo": PPO}
RULES = {
    "total_timesteps": POSITIVE_INT, "n_envs": POSITIVE_INT, "n_steps": POSITIVE_INT, "batch_size": POSITIVE_INT,
    "n_epochs": POSITIVE_INT, "picks_per_step": POSITIVE_INT, "torch_threads": NON_NEGATIVE_INT,
    "eval_freq": NON_NEGATIVE_INT, "eval_episodes": NON_NEGATIVE_INT, "checkpoint_freq": NON_NEGATIVE_INT,
    "learning_rate": POSITIVE, "gamma": UNIT, "gae_lambda": UNIT, "clip_range": POSITIVE, "ent_coef": NON_NEGATIVE,
    "vf_coef": NON_NEGATIVE, "max_grad_norm": POSITIVE,
}
SET_POLICIES = {"maskable_ppo": MaskableSetPolicy, "ppo": SetActorCriticPolicy}

# Built-in values of the hyperparameters left unset on the command line and in the YAML file.
DEFAULTS = {
    "total_timesteps": 10_000, "policy": "set", "n_envs": 1, "n_steps": 200, "batch_size": 100,
    "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2,
    "ent_coef": 0.01, "vf_coef": 0.5, "max_grad_norm": 0.5,
}


@dataclass
class Args:
    """Hyperparameters left None take the env id's entry in the YAML file, else ``DEFAULTS``."""

    env_id: str = "RLMBA-AVDigits-v0"
    """Gymnasium id of the environment"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON, merged over the YAML's (e.g. '{"image_noise": 1.0, "rounds": 5}')"""
    algo: Literal["maskable_ppo", "ppo"] = "maskable_ppo"
    """maskable_ppo (sb3-contrib, action masks) or ppo (plain SB3, score action through TopBPickWrapper)"""
    policy: from_yaml(Literal["set", "mlp"], DEFAULTS["policy"]) = None
    """set: permutation-equivariant candidate scorer (agents/policies.py); mlp: SB3 MultiInputPolicy"""
    policy_kwargs: str = "{}"
    """policy keyword arguments as JSON, merged over the YAML's (set: hidden, state_hidden, attention, heads, pooling)"""
    hyperparams: YamlFile = None
    """YAML file of hyperparameters per env id (default: agents/hyperparams/{algo}.yml)"""
    total_timesteps: from_yaml(int, DEFAULTS["total_timesteps"]) = None
    """environment steps (picks) to train for, or to add when resuming"""
    seed: int = 1
    """seed of the policy, the environments and every random draw in them"""
    device: str = "auto"
    """torch device of the policy and of the env's classifier: auto, cpu or cuda"""
    n_envs: from_yaml(int, DEFAULTS["n_envs"]) = None
    """parallel environments; more than one run in spawned subprocesses"""
    torch_threads: int = 1
    """torch threads of this process and of each subprocess env (0: torch's default here, 1 there);
    the classifier fits are small, so one thread is fastest on a small busy machine"""
    picks_per_step: int = 1
    """ppo only: candidates picked per step, best scores first (per_round = a whole round per step)"""
    n_steps: from_yaml(int, DEFAULTS["n_steps"]) = None
    """rollout length per environment between updates"""
    batch_size: from_yaml(int, DEFAULTS["batch_size"]) = None
    """minibatch size of the update"""
    n_epochs: from_yaml(int, DEFAULTS["n_epochs"]) = None
    """passes over each rollout"""
    learning_rate: from_yaml(float, DEFAULTS["learning_rate"]) = None
    """Adam learning rate of the policy"""
    gamma: from_yaml(float, DEFAULTS["gamma"]) = None
    """discount factor; rewards arrive at the end of each round"""
    gae_lambda: from_yaml(float, DEFAULTS["gae_lambda"]) = None
    """GAE lambda"""
    clip_range: from_yaml(float, DEFAULTS["clip_range"]) = None
    """PPO clipping range"""
    ent_coef: from_yaml(float, DEFAULTS["ent_coef"]) = None
    """entropy bonus"""
    vf_coef: from_yaml(float, DEFAULTS["vf_coef"]) = None
    """value loss weight"""
    max_grad_norm: from_yaml(float, DEFAULTS["max_grad_norm"]) = None
    """gradient clipping norm"""
    eval_freq: int = 2500
    """evaluate every this many steps (and at the end); 0 = only at the end"""
    eval_episodes: int = 3
    """evaluation episodes (held-out seeds); 0 disables evaluation"""
    eval_seed: int = EVAL_SEED
    """reset seed of the first evaluation episode"""
    checkpoint_freq: int = 5000
    """save checkpoints/model_<steps>_steps.zip every this many steps; 0 disables"""
    resume: optional_path("CHECKPOINT.zip", "(default: a fresh run)") = None
    """checkpoint .zip to continue training from (trains total_timesteps more steps, new run folder)"""
    log_dir: str = "runs"
    """folder that receives one sub-folder per run"""
    progress_bar: bool = True
    """show a progress bar over timesteps"""
    suite: tuple[str, ...] = ()
    """env specs ENV_ID or RLMBA-DevSuite-v0:NAME; each training episode plays one (``--env-id``
    is then only the evaluation env); candidates are padded to the suite's largest K"""


def check_minibatches(args: Args) -> None:
    """MaskablePPO normalises each minibatch's advantages by their std, which is NaN for a
    minibatch of one sample (SB3's PPO skips it; sb3-contrib does not): NaN policy weights."""
    rollout = args.n_steps * args.n_envs
    if args.algo == "maskable_ppo" and (args.batch_size == 1 or rollout % args.batch_size == 1):
        raise ValueError(
            f"--batch-size {args.batch_size} with --n-steps {args.n_steps} x --n-envs {args.n_envs} = {rollout} "
            f"rollout steps leaves a minibatch of 1 sample, whose advantage normalisation in "
            f"MaskablePPO divides by a NaN std (NaN policy); make n_steps x n_envs a multiple of a --batch-size >= 2"
        )


class EpisodePositionCheckpoint(CheckpointCallback):
    """SB3's checkpoints, each also holding where every training env's sequence of episodes
    stands (``model.episode_positions``, see :class:`agents.envs.ResumableEpisodes`)."""

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            record_episode_positions(self.model)
        return super()._on_step()


def record_episode_positions(model) -> None:
    model.episode_positions = model.get_env().get_attr("episode_position")


class EvalCallback(BaseCallback):
    """Plays the current policy on held-out seeds every ``eval_freq`` steps and at the end of
    training; logs ``eval/top1``, ``eval/balance``, ``eval/aulc`` and ``eval/return``."""

    def __init__(self, env_fn, seeds: list[int], eval_freq: int):
        super().__init__()
        self.env_fn, self.seeds, self.eval_freq = env_fn, seeds, eval_freq
        self.env = None
        self.writer = None
        self._last = 0
        self.history: list[tuple[int, dict[str, float]]] = []

    def _on_training_start(self) -> None:
        self.env = self.env_fn()
        self._last = self.num_timesteps
        for fmt in self.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                self.writer = fmt.writer

    def _evaluate(self) -> None:
        self._last = self.num_timesteps
        summary = summarize(play_episodes(self.env, SB3Agent(self.model), self.seeds))
        self.model.policy.set_training_mode(True)
        self.history.append((self.num_timesteps, summary))
        if self.writer is not None:
            for key in ("top1", "balance", "aulc", "return"):
                self.writer.add_scalar(f"eval/{key}", summary[key], self.num_timesteps)
            self.writer.flush()
        print(f"eval at {self.num_timesteps} steps: test top-1 {summary['top1']:.3f} +- {summary['top1_std']:.3f}, "
              f"AULC {summary['aulc']:.3f}, balance {summary['balance']:.3f} ({len(self.seeds)} seeds)")

    def _on_step(self) -> bool:
        # The last rollout's steps come before its update: that policy is evaluated at the end.
        final = self.num_timesteps >= self.model._total_timesteps
        if self.eval_freq > 0 and not final and self.num_timesteps - self._last >= self.eval_freq:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        self._evaluate()
        self.env.close()


def main(args: Args) -> Path:
    args, _ = resolve(args, args.hyperparams or hyperparams_file(args.algo), DEFAULTS)
    check_args(args, RULES)
    if args.resume and not Path(args.resume).is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no such checkpoint file (a model_<steps>_steps.zip "
                                f"under a run's checkpoints/, or its model.zip)")
    if not args.resume:
        check_minibatches(args)
    device = resolve_device(args.device)
    env_kwargs = parse_env_kwargs(args.env_kwargs, device)
    algo = ALGOS[args.algo]

    name = run_name(args.env_id, args.algo, args.seed)
    run_dir = Path(args.log_dir) / name
    set_torch_threads(args.torch_threads)
    parallel = args.n_envs > 1
    threads = (args.torch_threads or 1) if parallel else None
    vec_env = make_vec_env(
        partial(make_suite_training_env, list(args.suite), threads) if args.suite
        else partial(make_env, args.env_id, torch_threads=threads, resumable=True),
        n_envs=args.n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs,
        wrapper_class=partial(TopBPickWrapper, picks_per_step=args.picks_per_step) if args.algo == "ppo" else None,
        vec_env_cls=SubprocVecEnv if parallel else DummyVecEnv,
        vec_env_kwargs={"start_method": "spawn"} if parallel else None,
    )
    # episodes of a suite differ in their modalities: logged as each episode's info has them
    modalities = None if args.suite else tuple(vec_env.get_attr("modalities")[0])
    if args.resume:
        model = algo.load(args.resume, env=vec_env, device=device)
        # The checkpoint's hyperparameters are the ones in effect: log those.
        kept = {k: getattr(model, k) for k in ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda",
                                               "ent_coef", "vf_coef", "max_grad_norm", "learning_rate")}
        kept["policy"] = "set" if isinstance(model.policy, tuple(SET_POLICIES.values())) else "mlp"
        args = replace(args, **{k: v for k, v in kept.items() if isinstance(v, (int, float, str))})
        check_minibatches(args)
        positions = getattr(model, "episode_positions", None) or []
        for i, position in enumerate(positions[: args.n_envs]):
            if position is not None:  # None: a suite env, which starts a new seeded sequence
                vec_env.env_method("resume_at", position, indices=[i])
        # a fresh draw of the policy's sampling (and of any env the checkpoint has no position for)
        model.set_random_seed(args.seed + model.num_timesteps)
    else:
        policy_kwargs = json.loads(args.policy_kwargs)
        model = algo(
            SET_POLICIES[args.algo] if args.policy == "set" else "MultiInputPolicy",
            vec_env,
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            n_epochs=args.n_epochs,
            learning_rate=args.learning_rate,
            gamma=args.gamma,
            gae_lambda=args.gae_lambda,
            clip_range=args.clip_range,
            ent_coef=args.ent_coef,
            vf_coef=args.vf_coef,
            max_grad_norm=args.max_grad_norm,
            policy_kwargs=policy_kwargs or None,
            seed=args.seed,
            device=device,
            verbose=0,
        )
    rollout = model.n_steps * args.n_envs
    steps = math.ceil(args.total_timesteps / rollout) * rollout
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    callbacks = [EpisodeMetricsCallback(hyperparameter_table(args), modalities)]
    if args.checkpoint_freq > 0:
        callbacks.append(EpisodePositionCheckpoint(max(args.checkpoint_freq // args.n_envs, 1),
                                                   str(run_dir / "checkpoints"), name_prefix="model"))
    if args.eval_episodes > 0:
        seeds = list(range(args.eval_seed, args.eval_seed + args.eval_episodes))
        callbacks.append(EvalCallback(partial(make_env, args.env_id, **env_kwargs), seeds, args.eval_freq))
    start = model.num_timesteps
    rounded = (f" (--total-timesteps {args.total_timesteps} rounded up to whole rollouts of "
               f"n_steps {model.n_steps} x n_envs {args.n_envs})" if steps != args.total_timesteps else "")
    print(f"training {args.algo} ({args.policy} policy) on {args.env_id} for {steps} steps{rounded}"
          + (f" from step {start} of {args.resume}" if args.resume else "") + f"; TensorBoard logs: {run_dir}")
    model.learn(total_timesteps=steps, callback=CallbackList(callbacks),
                progress_bar=args.progress_bar, reset_num_timesteps=not args.resume)
    record_episode_positions(model)
    model.save(run_dir / "model.zip")
    model.logger.close()
    vec_env.close()
    print(f"saved model: {run_dir / 'model.zip'} ({model.num_timesteps} steps)")
    print(f"TensorBoard logs: {run_dir}  (view with: tensorboard --logdir {args.log_dir})")
    return run_dir


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(tyro.cli(Args))
