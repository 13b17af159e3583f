"""Train RL-MBA's online REINFORCE agent on an rlmba environment and log the run to TensorBoard.

    python agents/train_pg.py                                    # AV-Digits, 2000 picks of pre-training
    python agents/train_pg.py --total-timesteps 0                # no pre-training: online agent only
    python agents/train_pg.py --env-id RLMBA-Synthetic-v0 --attention True
    python agents/train_pg.py --resume runs/<run>/agent.pt --total-timesteps 1000
    python agents/train_pg.py --suite RLMBA-AVDigits-v0 RLMBA-DevSuite-v0:webkb --bc-teacher margin_rank
    tensorboard --logdir runs

The agent (:class:`agents.reinforce.ReinforceAgent`) samples each round's picks from its masked
softmax and takes one REINFORCE step after every round, with a moving-average baseline and
EMA-smoothed rewards. Pre-training plays whole episodes until ``--total-timesteps`` picks.
Evaluation follows the paper: on every held-out seed a copy of the agent labels a fresh
campaign and keeps learning online during it (``--no-eval-online``: greedy, frozen); logged
as ``eval/top1`` (final test top-1), ``eval/balance``, ``eval/aulc``, ``eval/return``.

With ``--suite`` every training episode plays an env drawn from a list of env specs
(:mod:`agents.suite`; ``--env-id`` is then only the evaluation env), so one policy learns
across datasets; the observation (layout v2) is the same on all of them. ``--bc-teacher COLUMN``
first clones a rule into the policy (:mod:`agents.imitation`): ``--bc-episodes`` teacher
episodes per env, each pick the allowed candidate with the largest value in that candidate
column (``margin_rank`` = margin sampling, ``score_rank`` = the score q, ``proposed_kcenter``,
...); policy-gradient training (``--total-timesteps``) then starts from it.

Hyperparameters come from ``agents/hyperparams/reinforce.yml`` (entry of the env id, else
``default``); a flag given on the command line wins. ``--resume AGENT.pt`` continues a
checkpoint (its own hyperparameters, its step count) for ``--total-timesteps`` more picks into a
new run folder.

Each run writes ``{log_dir}/{env_id}__reinforce__{seed}__{timestamp}/``: TensorBoard events
(per episode ``charts/episodic_return``, ``test/top1``, ``test/top1_<modality>``, ``test/aulc``,
``contribution/<modality>``, ``charts/balance``, ``reward/<term>``, ``charts/baseline``,
``charts/advantage``, ``losses/policy_loss``, ``losses/entropy``; ``eval/``; the hyperparameters
as text), ``checkpoints/agent_<steps>_steps.pt`` and the final ``agent.pt``
(``ReinforceAgent.load``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import tyro
from torch.utils.tensorboard import SummaryWriter

from agents.envs import make_env, parse_env_kwargs, resolve_device
from agents.hyperparams import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_OPEN,
                                YamlFile, check_args, from_yaml, hyperparams_file, optional_path, resolve)
from agents.imitation import clone, collect
from agents.reinforce import ReinforceAgent, ReinforceConfig
from agents.rollout import EVAL_SEED, summarize
from agents.suite import make_suite_training_env
from agents.tracking import hyperparameter_table, run_name

AGENT = "reinforce"
DEFAULTS = {"total_timesteps": 2000, **{f.name: f.default for f in fields(ReinforceConfig)}}
RULES = {
    "total_timesteps": NON_NEGATIVE_INT, "learning_rate": POSITIVE, "baseline_decay": UNIT_OPEN,
    "reward_smoothing": UNIT_OPEN, "advantage_clip": NON_NEGATIVE, "entropy_coef": NON_NEGATIVE,
    "max_grad_norm": POSITIVE, "temperature": POSITIVE, "hidden": POSITIVE_INT, "state_hidden": POSITIVE_INT,
    "heads": POSITIVE_INT, "torch_threads": NON_NEGATIVE_INT, "eval_freq": NON_NEGATIVE_INT,
    "eval_episodes": NON_NEGATIVE_INT, "checkpoint_freq": NON_NEGATIVE_INT,
    "bc_episodes": POSITIVE_INT, "bc_epochs": POSITIVE_INT,
}


@dataclass
class Args:
    """Hyperparameters left None take the env id's entry in the YAML file, else ``DEFAULTS``
    (``ReinforceConfig``'s defaults and ``total_timesteps``)."""

    env_id: str = "RLMBA-AVDigits-v0"
    """Gymnasium id of the environment"""
    env_kwargs: str = "{}"
    """keyword arguments for gym.make, as JSON, merged over the YAML's (e.g. '{"rounds": 5}')"""
    hyperparams: YamlFile = None
    """YAML file of hyperparameters per env id (default: agents/hyperparams/reinforce.yml)"""
    total_timesteps: from_yaml(int, DEFAULTS["total_timesteps"]) = None
    """picks of pre-training, in whole episodes; 0 = evaluate the untrained online agent"""
    seed: int = 1
    """seed of the agent's weights and sampler and of the training episodes"""
    device: str = "auto"
    """torch device of the policy and of the env's classifier: auto, cpu or cuda"""
    learning_rate: from_yaml(float, DEFAULTS["learning_rate"]) = None
    """Adam learning rate"""
    baseline_decay: from_yaml(float, DEFAULTS["baseline_decay"]) = None
    """moving-average baseline b <- d b + (1 - d) r~"""
    reward_smoothing: from_yaml(float, DEFAULTS["reward_smoothing"]) = None
    """EMA of round rewards r~ <- s r~ + (1 - s) r; 0 = raw"""
    normalize_advantage: from_yaml(bool, DEFAULTS["normalize_advantage"]) = None
    """divide the advantage by its running RMS"""
    advantage_clip: from_yaml(float, DEFAULTS["advantage_clip"]) = None
    """clip the advantage to [-c, c]; 0 disables"""
    entropy_coef: from_yaml(float, DEFAULTS["entropy_coef"]) = None
    """entropy bonus per pick"""
    max_grad_norm: from_yaml(float, DEFAULTS["max_grad_norm"]) = None
    """gradient clipping norm"""
    temperature: from_yaml(float, DEFAULTS["temperature"]) = None
    """softmax temperature of the picks"""
    hidden: from_yaml(int, DEFAULTS["hidden"]) = None
    """width of the per-candidate MLP"""
    state_hidden: from_yaml(int, DEFAULTS["state_hidden"]) = None
    """width of the round-state embedding"""
    attention: from_yaml(bool, DEFAULTS["attention"]) = None
    """one self-attention layer across candidates"""
    heads: from_yaml(int, DEFAULTS["heads"]) = None
    """attention heads"""
    scorer: from_yaml(str, DEFAULTS["scorer"]) = None
    """``set`` (the MLP) or ``bilinear`` (candidate columns times ``[1, state_terms]``)"""
    state_terms: from_yaml(tuple[int, ...], DEFAULTS["state_terms"]) = None
    """state positions of the bilinear scorer's coefficients"""
    torch_threads: int = 1
    """torch threads of this process (0: torch's default); the classifier fits are small, so one
    thread is fastest on a small busy machine (README, Speed)"""
    eval_freq: int = 1000
    """evaluate every this many picks (and at the end); 0 = only at the end"""
    eval_episodes: int = 3
    """evaluation episodes (held-out seeds); 0 disables evaluation"""
    eval_seed: int = EVAL_SEED
    """reset seed of the first evaluation episode"""
    eval_online: bool = True
    """evaluation copies keep learning during their campaign (the paper's online agent)"""
    checkpoint_freq: int = 1000
    """save checkpoints/agent_<steps>_steps.pt every this many picks; 0 disables"""
    resume: optional_path("CHECKPOINT.pt", "(default: a fresh run)") = None
    """agent checkpoint .pt to continue from (trains total_timesteps more picks, new run folder)"""
    log_dir: str = "runs"
    """folder that receives one sub-folder per run"""
    suite: tuple[str, ...] = ()
    """env specs ENV_ID or RLMBA-DevSuite-v0:NAME; each training episode plays one, drawn with --seed"""
    bc_teacher: optional_path("COLUMN", "(default: no cloning)") = None
    """candidate column whose argmax the policy clones before training (e.g. margin_rank)"""
    bc_episodes: int = 1
    """teacher episodes per training env (reset seeds 1000, 1001, ...)"""
    bc_epochs: int = 40
    """behaviour-cloning epochs"""


def main(args: Args) -> Path:
    args, _ = resolve(args, args.hyperparams or hyperparams_file(AGENT), DEFAULTS)
    check_args(args, {k: rule for k, rule in RULES.items() if not (k == "advantage_clip" and args.advantage_clip is None)})
    if args.resume and not Path(args.resume).is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no such checkpoint file (an agent_<steps>_steps.pt "
                                f"under a run's checkpoints/, or its agent.pt)")
    device = resolve_device(args.device)
    env_kwargs = parse_env_kwargs(args.env_kwargs, device)
    if args.suite:
        # the envs follow the episodes' seeds: a resumed run draws a new, still seeded, sequence
        env = make_suite_training_env(list(args.suite), torch_threads=args.torch_threads, **env_kwargs)
    else:
        env = make_env(args.env_id, torch_threads=args.torch_threads, **env_kwargs)
    if args.resume:
        agent = ReinforceAgent.load(args.resume, device)
        args = replace(args, **asdict(agent.config))  # the checkpoint's hyperparameters are in effect
    else:
        config = ReinforceConfig(**{f.name: getattr(args, f.name) for f in fields(ReinforceConfig)})
        agent = ReinforceAgent.from_env(env, config, seed=args.seed, device=device)
    if args.bc_teacher:
        envs = [env.suite.env(spec) for spec in env.suite.specs] if args.suite else [env]
        seeds = range(1000, 1000 + args.bc_episodes)
        samples = [s for e in envs for s in collect(e, args.bc_teacher, seeds)]
        losses = clone(agent, samples, epochs=args.bc_epochs, seed=args.seed)
        print(f"cloned {args.bc_teacher} from {len(samples)} picks: loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    name = run_name(args.env_id, AGENT, args.seed)
    run_dir = Path(args.log_dir) / name
    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", hyperparameter_table(args))
    eval_env = make_env(args.env_id, **env_kwargs) if args.eval_episodes > 0 else None
    eval_seeds = list(range(args.eval_seed, args.eval_seed + args.eval_episodes))

    def run_eval() -> None:
        summary = summarize(agent.play_copies(eval_env, eval_seeds, args.eval_online))
        for key in ("top1", "balance", "aulc", "return"):
            writer.add_scalar(f"eval/{key}", summary[key], agent.steps)
        print(f"eval at {agent.steps} picks: test top-1 {summary['top1']:.3f} +- {summary['top1_std']:.3f}, "
              f"AULC {summary['aulc']:.3f}, balance {summary['balance']:.3f} ({len(eval_seeds)} seeds, "
              f"{'online' if args.eval_online else 'frozen'})")

    start, t0 = agent.steps, time.time()
    last_eval = last_ckpt = start
    trained_on = f"the suite {', '.join(args.suite)}" if args.suite else args.env_id
    print(f"training {AGENT} on {trained_on} for {args.total_timesteps} picks"
          + (f" from pick {start} of {args.resume}" if args.resume else "") + f"; TensorBoard logs: {run_dir}")
    while agent.steps - start < args.total_timesteps:
        # The first episode of a run is seeded; the env's RNG carries on from there.
        seed = args.seed + agent.episodes if agent.steps == start else None
        result, stats = agent.run_episode(env, learn=True, seed=seed)
        scalars = result.scalars(tuple(env.unwrapped.modalities))
        if stats:
            scalars.update({
                "losses/policy_loss": float(np.mean([s["policy_loss"] for s in stats])),
                "losses/entropy": float(np.mean([s["entropy"] for s in stats])),
                "charts/advantage": float(np.mean([s["advantage"] for s in stats])),
                "charts/baseline": stats[-1]["baseline"],
            })
        scalars["charts/SPS"] = (agent.steps - start) / max(time.time() - t0, 1e-9)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, agent.steps)
        if eval_env is not None and args.eval_freq > 0 and agent.steps - last_eval >= args.eval_freq:
            last_eval = agent.steps
            run_eval()
        if args.checkpoint_freq > 0 and agent.steps - last_ckpt >= args.checkpoint_freq:
            last_ckpt = agent.steps
            agent.save(run_dir / "checkpoints" / f"agent_{agent.steps}_steps.pt")
    if eval_env is not None and (last_eval != agent.steps or agent.steps == start):
        run_eval()
    agent.save(run_dir / "agent.pt")
    writer.close()
    env.close()
    print(f"saved agent: {run_dir / 'agent.pt'} ({agent.steps} picks, {agent.episodes} episodes)")
    print(f"TensorBoard logs: {run_dir}  (view with: tensorboard --logdir {args.log_dir})")
    return run_dir


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(tyro.cli(Args))
